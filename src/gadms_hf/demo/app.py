"""The Gradio page: a description in, the best-matching gallery images out, and why.

`build_demo(...)` returns a `gr.Blocks` (run it with `launch_demo`, or `.launch()` on a Space). If the
model or gallery cannot be loaded the page still starts and shows what to fix. The page never reaches the
internet: analytics are off, no share link, system fonts instead of downloaded ones.
"""

import logging
import os
from dataclasses import asdict
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402  (after the analytics switch)

from ..search.gallery import Gallery  # noqa: E402
from .engine import Hit, QueryError, SearchEngine  # noqa: E402
from .loading import SetupError, load_engine  # noqa: E402
from .render import captions_html, hits_html, message_html, words_html  # noqa: E402

logger = logging.getLogger(__name__)

TITLE = "GA-DMS person search"
# A click on a hit card chooses it: outlined here, explained by Python through the HTML component's event.
_CHOOSE_JS = """
element.addEventListener('click', (event) => {
  const card = event.target.closest('.gadms-hit');
  if (!card) return;
  element.querySelectorAll('.gadms-hit').forEach((other) => other.classList.remove('gadms-chosen'));
  card.classList.add('gadms-chosen');
  trigger('click', {row: Number(card.dataset.row)});
});
"""
_CHOOSE_CSS = ".gadms-chosen { outline: 3px solid #2563eb; outline-offset: 2px; }"
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def _header(engine: SearchEngine | None, model_name: str | None) -> str:
    intro = (f"# {TITLE}\nDescribe a person in words; the model ranks every gallery image by cosine similarity "
             "and shows, for the image you choose, which words of your description counted (GASS token scores).")
    if engine is None:
        return intro
    return (f"{intro}\n\n**Model:** `{model_name or 'default'}` · **Gallery:** {engine.gallery.description}"
            + (f" · {len(engine.gallery.skipped)} unreadable file(s) skipped" if engine.gallery.skipped else ""))


def search_outputs(engine: SearchEngine, text: str) -> tuple[str, str, str, str, dict | None]:
    try:
        answer = engine.search(text)
    except QueryError as error:
        return message_html(str(error), "error"), "", "", "", None
    except Exception as error:  # the page must show a message, never a blank error
        logger.exception("search failed for %r", text)
        return message_html(f"The search failed: {type(error).__name__}: {error}", "error"), "", "", "", None
    top = answer.hits[0]
    images = [engine.gallery.load_image(hit.row) for hit in answer.hits]
    return (
        message_html(" ".join(answer.notes)),
        hits_html(answer.hits, images, chosen=top.row),
        words_html(answer.query, answer.words, top),
        captions_html(answer.captions, top),
        {"query": answer.query, "hits": [asdict(hit) for hit in answer.hits]},
    )


def choose_outputs(engine: SearchEngine, state: dict | None, row: Any) -> tuple[str, str, str]:
    hits = [Hit(**hit) for hit in (state or {}).get("hits", [])]
    hit = next((hit for hit in hits if str(hit.row) == str(row)), None)
    if hit is None:
        return message_html("Search first, then click one of the images found.", "error"), gr.skip(), gr.skip()
    try:
        words, captions = engine.explain(state["query"], hit.row)
    except Exception as error:  # as in search_outputs
        logger.exception("explaining row %s failed", row)
        return message_html(f"Could not score the words: {type(error).__name__}: {error}", "error"), "", ""
    return "", words_html(state["query"], words, hit), captions_html(captions, hit)


def page_for(engine: SearchEngine, model_name: str | None) -> gr.Blocks:
    """The search page for a ready engine (`build_demo` makes the engine from arguments)."""
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(_header(engine, model_name))
        message = gr.HTML(elem_id="gadms-message")
        with gr.Row(equal_height=True):
            query = gr.Textbox(label="Describe a person", placeholder="a woman in a red jacket and blue jeans",
                               elem_id="gadms-query", scale=5, max_lines=3)
            button = gr.Button("Search", variant="primary", elem_id="gadms-search", scale=1)
        # created here, placed below the examples: gr.Examples needs its outputs to exist
        results = gr.HTML(elem_id="gadms-results", js_on_load=_CHOOSE_JS, css_template=_CHOOSE_CSS, render=False)
        words = gr.HTML(elem_id="gadms-words", render=False)
        captions = gr.HTML(elem_id="gadms-captions", render=False)
        state = gr.State(None)
        outputs = [message, results, words, captions, state]

        def search(text: str) -> tuple:
            return search_outputs(engine, text)

        def choose(current: dict | None, event: gr.EventData) -> tuple:
            return choose_outputs(engine, current, getattr(event, "row", None))

        gr.Examples([[text] for text in engine.examples], inputs=[query], outputs=outputs, fn=search,
                    run_on_click=True, cache_examples=False, label="Example queries (click one to search)")
        results.render()
        with gr.Row():
            words.render()
            captions.render()
        button.click(search, [query], outputs)
        query.submit(search, [query], outputs)
        results.click(choose, [state], [message, words, captions])
    return demo


def _error_page(text: str) -> gr.Blocks:
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(_header(None, None))
        gr.HTML(message_html(text, "error"), elem_id="gadms-message")
    return demo


def build_demo(
    model_name_or_path: str | None = None,
    gallery: str | Gallery | None = None,
    data_dir: str | None = None,
    top_k: int = 8,
    batch_size: int = 64,
) -> gr.Blocks:
    """The demo page for a GA-DMS model (folder or Hub id; default: `make demo`'s) and a gallery (a folder
    of photos, `corpus[:split]` or a built `Gallery`; default: the SynthPEDES test split)."""
    try:
        engine = load_engine(model_name_or_path, gallery, data_dir, top_k, batch_size)
    except SetupError as error:
        logger.error("%s", error)
        return _error_page(str(error))
    return page_for(engine, model_name_or_path)


def launch_demo(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = None, **kwargs: Any) -> Any:
    """`demo.launch` without a share link and with the demo's theme (system fonts: nothing downloaded)."""
    kwargs.setdefault("run_history", False)  # each run would be stored in the browser, slowing every next one
    return demo.launch(server_name=host, server_port=port, share=False, theme=THEME, **kwargs)


__all__ = ["build_demo", "choose_outputs", "launch_demo", "page_for", "search_outputs"]
