#!/usr/bin/env python
"""The web demo: describe a person, see who in the gallery matches and which words counted.

    python examples/app.py                                   # make demo's model, the SynthPEDES test gallery
    python examples/app.py --model_name_or_path out --gallery photos/ --port 7860
    python examples/app.py --gallery cuhk-pedes:test --data_dir /data/CUHK-PEDES

Then open http://127.0.0.1:7860. A folder gallery is indexed once (`examples/search.py`'s crash-safe
index in `<folder>/.gadms_index/`) and re-indexed incrementally on later starts. If the model or the
gallery cannot be loaded the page starts anyway and says what to fix.
"""

from __future__ import annotations

import argparse
import logging

from gadms_hf.demo.app import build_demo, launch_demo
from gadms_hf.demo.loading import DEFAULT_GALLERY, DEFAULT_MODEL


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path", default=None,
                        help=f"GA-DMS model folder or Hub id (default: {DEFAULT_MODEL}, made by `make demo`)")
    parser.add_argument("--gallery", default=None,
                        help=f"a folder of photos, or a corpus split such as synth-pedes:test (default: {DEFAULT_GALLERY})")
    parser.add_argument("--data_dir", default=None, help="the corpus folder, for --gallery cuhk-pedes:test and the like")
    parser.add_argument("--top_k", type=int, default=8, help="images shown per query")
    parser.add_argument("--batch_size", type=int, default=64, help="images embedded at once while indexing")
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve other machines")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args(argv)
    if args.top_k < 1 or args.batch_size < 1:
        parser.error(f"--top_k and --batch_size must be >= 1, got {args.top_k} and {args.batch_size}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests to itself
    demo = build_demo(args.model_name_or_path, args.gallery, data_dir=args.data_dir, top_k=args.top_k,
                      batch_size=args.batch_size)
    launch_demo(demo, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
