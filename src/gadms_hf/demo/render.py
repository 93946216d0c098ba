"""HTML fragments of the demo page: hit cards, the query's words shaded by GASS, an image's captions.

Plain HTML with inline styles and stable classes and `data-` attributes (rank, score, truth), so the
page looks the same in every Gradio theme and a browser test can read exactly what a user sees.
Every piece of user or gallery text is escaped. Word shades use the GASS heat-map's colour map (YlOrRd).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence

from matplotlib import colormaps
from matplotlib.colors import to_hex
from PIL import Image

from ..search.word_scores import DescriptionScores
from .engine import CaptionMatch, Hit

_CMAP = colormaps["YlOrRd"]
_TRUTH = {True: ("✓", "#16a34a", "same person as the query caption"),
          False: ("✗", "#dc2626", "another person"), None: ("", "#d4d4d4", "")}


def message_html(text: str, kind: str = "info") -> str:
    """A note above the results; `kind` "error" for what stopped the page or a query."""
    if not text:
        return ""
    colour = {"error": "#b91c1c", "info": "#92400e"}[kind]
    return (f'<div class="gadms-message gadms-{kind}" role="alert" style="padding:8px 12px;border-left:4px solid '
            f'{colour};color:{colour};background:#fafafa">{html.escape(text)}</div>')


def _data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def hits_html(hits: Sequence[Hit], images: Sequence[Image.Image], chosen: int | None = None) -> str:
    """A row of cards, best first: thumbnail, rank, cosine score, ground-truth mark, name. Click to choose;
    the chosen card (class `gadms-chosen`, initially `chosen`) is outlined by the page's CSS."""
    cards = []
    for hit, image in zip(hits, images):
        mark, colour, why = _TRUTH[hit.truth]
        truth = "" if hit.truth is None else str(hit.truth).lower()
        cards.append(
            f'<figure class="gadms-hit{" gadms-chosen" if hit.row == chosen else ""}" data-row="{hit.row}" '
            f'data-rank="{hit.rank}" data-name="{html.escape(hit.name)}" data-score="{hit.score:.4f}" '
            f'data-truth="{truth}" title="{html.escape(why)}" style="margin:0;cursor:pointer;width:112px;'
            f'border:3px solid {colour};border-radius:6px;padding:3px;text-align:center">'
            f'<img src="{_data_uri(image)}" alt="{html.escape(hit.name)}" style="height:200px;max-width:100%;'
            f'object-fit:contain">'
            f'<figcaption style="font-size:13px"><b>#{hit.rank}</b> <span class="gadms-score">{hit.score:.4f}</span>'
            f' <span class="gadms-truth" style="color:{colour}">{mark}</span><br>'
            f'<span style="font-size:11px;overflow-wrap:anywhere">{html.escape(hit.name)}</span></figcaption></figure>'
        )
    return ('<div class="gadms-results" style="display:flex;flex-wrap:wrap;gap:8px">' + "".join(cards) + "</div>"
            '<p style="font-size:12px;color:#666">Cosine similarity of description and image; click an image to '
            "see which words matched it" + ("" if not hits or hits[0].truth is None else
                                            "; ✓ same person as the caption, ✗ another") + ".</p>")


def words_html(text: str, scores: DescriptionScores, hit: Hit) -> str:
    """The description with each word on its GASS shade against `hit`; punctuation and spaces as typed."""
    parts, position = [], 0
    for word in scores.words:
        parts.append(html.escape(text[position:word.start]))
        position = word.end
        if word.score is None:
            parts.append(f'<span class="gass-word gass-truncated" data-score="" title="after the 77-token limit: '
                         f'not read" style="text-decoration:line-through;color:#999">{html.escape(word.text)}</span>')
            continue
        ink = "#fff" if word.score > 0.75 else "#000"
        parts.append(
            f'<span class="gass-word" data-score="{word.score:.3f}" title="GASS {word.score:.3f}" '
            f'style="background:{to_hex(_CMAP(word.score))};color:{ink};padding:1px 3px;border-radius:3px">'
            f"{html.escape(word.text)}</span>"
        )
    parts.append(html.escape(text[position:]))
    legend = "".join(f'<span style="background:{to_hex(_CMAP(v))};padding:0 9px" title="{v:.2f}"></span>'
                     for v in (0.0, 0.25, 0.5, 0.75, 1.0))
    return (f'<div class="gadms-words-view"><p style="margin:0 0 6px 0">Which words counted for '
            f"<b>#{hit.rank}</b> ({html.escape(hit.name)}), by the model's GASS token scores:</p>"
            f'<p class="gadms-words" style="font-size:17px;line-height:1.9">{"".join(parts)}</p>'
            f'<p style="font-size:12px;color:#666">low&nbsp;{legend}&nbsp;high (a word takes its highest word piece)</p></div>')


def captions_html(captions: Sequence[CaptionMatch], hit: Hit) -> str:
    """The gallery captions that best describe `hit`'s image (the reverse search); empty without captions."""
    if not captions:
        return ""
    items = []
    for caption in captions:
        mark, colour, _ = _TRUTH[caption.truth]
        truth = "" if caption.truth is None else str(caption.truth).lower()
        items.append(f'<li class="gadms-caption" data-score="{caption.score:.4f}" data-truth="{truth}">'
                     f'<span class="gadms-score">{caption.score:.4f}</span> <span style="color:{colour}">{mark}'
                     f"</span> {html.escape(caption.text)}</li>")
    return (f"<div><p style=\"margin:0 0 6px 0\">Captions that best describe <b>#{hit.rank}</b> "
            f"({html.escape(hit.name)}):</p><ol class=\"gadms-captions\">{''.join(items)}</ol></div>")


__all__ = ["captions_html", "hits_html", "message_html", "words_html"]
