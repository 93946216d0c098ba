"""The demo page in a real browser (Debian's Chromium, headless, driven by Playwright).

`examples/app.py` is started as a user would, on 127.0.0.1, with a tiny random model and a generated
gallery; what the page shows is checked against the model's own embeddings and GASS scores, computed
here independently. Skipped, with the reason, only where no browser is installed; `.ci/run` installs
one and sets GADMS_REQUIRE_BROWSER=1, which turns a missing browser into a failure.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gadms_hf.demo.browser import chromium, free_port, wait_until_served, why_no_browser
from gadms_hf.evaluation.embedding import embed_images, embed_texts

ROOT = Path(__file__).resolve().parents[1]
QUERY = "a man in a red coat, black trousers and white shoes"


@pytest.fixture(scope="module")
def browser():
    reason = why_no_browser()
    if reason is not None:
        if os.environ.get("GADMS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"GADMS_REQUIRE_BROWSER=1 but no browser: {reason}")
        pytest.skip(f"no browser to test the demo page: {reason}")
    with chromium() as instance:
        yield instance


@pytest.fixture
def model_dir(tmp_path, tiny_model, processor) -> Path:
    folder = tmp_path / "model"
    tiny_model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _page(browser, url: str):
    page = browser.new_page(viewport={"width": 1200, "height": 1000})
    hosts: list[str] = []
    page.on("request", lambda request: hosts.append(request.url.split("/")[2]))
    page.goto(url, wait_until="load", timeout=120_000)
    return page, hosts


def _search(page, text: str) -> None:
    page.fill("#gadms-query textarea", text)
    page.click("#gadms-search")


def test_the_page_answers_in_the_browser(browser, tmp_path, model_dir, tiny_model, processor):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (120, 50, 3), dtype=np.uint8)).save(photos / f"p{i}.png")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "app.py"), "--model_name_or_path", str(model_dir),
         "--gallery", str(photos), "--port", str(port), "--top_k", "5"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_until_served(f"http://127.0.0.1:{port}/", alive=lambda: server.poll() is None)
        # what the page must show, from the model's own embeddings
        names = sorted(p.name for p in photos.iterdir() if p.suffix == ".png")
        images = embed_images(tiny_model, [Image.open(photos / n) for n in names], processor, progress=False)
        cosines = images @ embed_texts(tiny_model, [QUERY], processor, progress=False)[0]
        order = torch.argsort(cosines, descending=True, stable=True)[:5].tolist()

        page, hosts = _page(browser, f"http://127.0.0.1:{port}/")
        _search(page, QUERY)
        page.wait_for_selector(".gadms-hit >> nth=4")
        cards = page.query_selector_all(".gadms-hit")
        assert [c.get_attribute("data-rank") for c in cards] == ["1", "2", "3", "4", "5"]
        assert [c.get_attribute("data-name") for c in cards] == [names[i] for i in order]
        shown = [float(c.query_selector(".gadms-score").inner_text()) for c in cards]
        assert shown == pytest.approx([float(cosines[i]) for i in order], abs=2e-4)
        assert all(c.query_selector("img").evaluate("img => img.naturalWidth") > 0 for c in cards)

        # one shaded element per word, each with the model's GASS score against the best hit
        words = page.query_selector_all("#gadms-words .gass-word")
        expected_words = re.findall(r"\w+", QUERY)
        assert [w.inner_text() for w in words] == expected_words
        batch = processor(text=[QUERY], return_tensors="pt")
        eos = tiny_model.eos_positions(batch["input_ids"])
        gass = tiny_model.gass(tiny_model.text_model, tiny_model.text_projection, batch["input_ids"],
                               batch["attention_mask"], images[order[0]][None], eos)[0]
        pieces = processor.tokenizer.convert_ids_to_tokens(batch["input_ids"][0, 1:int(eos[0])])
        word_scores = [float(s) for piece, s in zip(pieces, gass[1:int(eos[0])]) if piece != ",</w>"]
        assert [float(w.get_attribute("data-score")) for w in words] == pytest.approx(word_scores, abs=1e-3)
        assert all("background" in w.get_attribute("style") for w in words)
        assert "#1" in page.inner_text("#gadms-words")

        # choosing another hit re-scores the words against it
        page.click(".gadms-hit[data-rank='3']")
        page.wait_for_function("document.querySelector('#gadms-words').innerText.includes('#3')")
        assert names[order[2]] in page.inner_text("#gadms-words")
        assert len(page.query_selector_all("#gadms-words .gass-word")) == len(expected_words)

        # bad queries: a message on the page, no traceback
        _search(page, " ".join(["red"] * 80))
        page.wait_for_selector("#gadms-message .gadms-info")
        assert "82 tokens; the model reads 77" in page.inner_text("#gadms-message")
        assert len(page.query_selector_all("#gadms-words .gass-truncated")) == 5
        _search(page, "")
        page.wait_for_selector("#gadms-message .gadms-error")
        assert "Type a description of a person first" in page.inner_text("#gadms-message")
        assert page.query_selector_all(".gadms-hit") == []
        assert "Traceback" not in page.content()
        assert set(hosts) == {f"127.0.0.1:{port}"}, f"the page reached out to {sorted(set(hosts))}"
    finally:
        server.terminate()
        log = server.communicate(timeout=60)[0]
    assert "Traceback" not in log, log[-3000:]


def _serve(demo) -> str:
    from gadms_hf.demo.app import launch_demo

    port = free_port()
    launch_demo(demo, port=port, prevent_thread_lock=True, quiet=True)
    return f"http://127.0.0.1:{port}/"


def test_identities_captions_and_errors_in_the_browser(browser, tmp_path, model_dir, tiny_model, processor):
    from gadms_hf.demo.app import build_demo
    from gadms_hf.search.gallery import corpus_gallery

    gallery = corpus_gallery(tiny_model, processor, "synth-pedes", cache_dir=tmp_path / "cache", progress=False,
                             num_train_ids=2, num_test_ids=3, test_images_per_id=2)
    demo = build_demo(str(model_dir), gallery, top_k=6)
    try:
        page, _ = _page(browser, _serve(demo))
        # an example query (shown shortened): clicking it searches
        page.locator("button", has_text=gallery.captions[0][:25]).first.click()
        page.wait_for_selector(".gadms-hit >> nth=5")
        person = int(gallery.caption_person_ids[0])
        truth = [c.get_attribute("data-truth") for c in page.query_selector_all(".gadms-hit")]
        rows = [int(c.get_attribute("data-row")) for c in page.query_selector_all(".gadms-hit")]
        assert truth == [str(int(gallery.person_ids[r]) == person).lower() for r in rows] and truth.count("true") == 2
        captions = page.query_selector_all("#gadms-captions .gadms-caption")
        assert len(captions) == 5
        best = torch.argsort(gallery.caption_embeddings @ gallery.embeddings[rows[0]], descending=True, stable=True)
        assert [c.inner_text().split(" ", 2)[-1] for c in captions] == [gallery.captions[i] for i in best[:5].tolist()]
    finally:
        demo.close()

    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "config.json").write_text('{"model_type": "bert"}')
    broken = build_demo(str(wrong), str(tmp_path))
    try:
        page, _ = _page(browser, _serve(broken))
        page.wait_for_selector("#gadms-message .gadms-error")
        text = page.inner_text("#gadms-message")
        assert "Cannot load the model" in text and "model_type='bert'" in text and "Traceback" not in page.content()
    finally:
        broken.close()
