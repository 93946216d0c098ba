#!/usr/bin/env python
"""Take the README's screenshot of the web demo with a query answered, in the same headless Chromium the
browser test uses.

    python scripts/screenshot_demo.py                       # make demo's model, SynthPEDES test gallery
    python scripts/screenshot_demo.py --model_name_or_path out --gallery photos/ --query "a man in a red coat"
    python scripts/screenshot_demo.py --random_tiny_model   # no trained model yet: an untrained placeholder

The query defaults to the gallery's first example (for a corpus split, one of its captions, so the hits
of that person are marked). Writes docs/demo.png unless --output says otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def _random_tiny_model(folder: Path) -> str:
    import torch

    from gadms_hf import GADMSConfig, GADMSModel, GADMSProcessor, build_clip_tokenizer, make_image_processor

    config = GADMSConfig.tiny()
    torch.manual_seed(0)
    path = folder / "untrained-tiny-placeholder"
    GADMSModel(config).save_pretrained(path)
    GADMSProcessor(make_image_processor(*config.image_size), build_clip_tokenizer()).save_pretrained(path)
    return str(path)


def main() -> None:
    from gadms_hf.demo.app import launch_demo, page_for
    from gadms_hf.demo.browser import chromium, free_port, why_no_browser
    from gadms_hf.demo.loading import DEFAULT_MODEL, load_engine

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path", default=None, help=f"default: {DEFAULT_MODEL} (make demo)")
    parser.add_argument("--random_tiny_model", action="store_true",
                        help="use an untrained tiny model (only to show the page before a model is trained)")
    parser.add_argument("--gallery", default=None, help="a folder of photos or a corpus split (default synth-pedes:test)")
    parser.add_argument("--query", default=None, help="the description typed (default: the first example query)")
    parser.add_argument("--top_k", type=int, default=8)
    parser.add_argument("--output", type=Path, default=Path("docs/demo.png"))
    args = parser.parse_args()
    problem = why_no_browser()
    if problem:
        parser.error(f"no browser: {problem}")
    if args.model_name_or_path is None and not args.random_tiny_model and not Path(DEFAULT_MODEL).is_dir():
        parser.error(f"{DEFAULT_MODEL} does not exist: run `make demo` first, or pass --model_name_or_path "
                     "(or --random_tiny_model for a placeholder picture)")

    with tempfile.TemporaryDirectory() as scratch:
        model = _random_tiny_model(Path(scratch)) if args.random_tiny_model else args.model_name_or_path
        engine = load_engine(model, args.gallery, top_k=args.top_k)
        query = args.query or engine.examples[0]
        demo = page_for(engine, model)
        port = free_port()
        launch_demo(demo, port=port, prevent_thread_lock=True, quiet=True)
        try:
            with chromium() as browser:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(f"http://127.0.0.1:{port}/", wait_until="load", timeout=120_000)
                page.fill("#gadms-query textarea", query)
                page.click("#gadms-search")
                page.wait_for_selector(".gadms-hit", timeout=120_000)
                page.wait_for_selector("#gadms-words .gass-word")
                args.output.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.output), full_page=True)
        finally:
            demo.close()
    print(f"wrote {args.output} (query: {query!r}, model: {model})")


if __name__ == "__main__":
    sys.exit(main())
