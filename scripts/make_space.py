#!/usr/bin/env python
"""Assemble a Hugging Face Space of the web demo in one folder, ready to upload.

    python scripts/make_space.py --output_dir space --model outputs/pretrain-synth [--gallery photos/]
    hf upload your-name/gadms-demo space --repo-type space

The folder holds `spaces/gadms-demo/` (app.py, requirements.txt, the Space card), a copy of the
`gadms_hf` package (so the Space needs no package index for it), the model in `model/` and, with
--gallery, the photos in `gallery/` (the Space indexes them on its first start). Without --model the
Space reads the GADMS_MODEL variable (a Hub id) instead.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "spaces" / "gadms-demo"
PACKAGE = ROOT / "src" / "gadms_hf"


def make_space(output_dir: Path, model: Path | None = None, gallery: Path | None = None) -> Path:
    if output_dir.exists() and any(output_dir.iterdir()):
        raise FileExistsError(f"--output_dir {output_dir} is not empty; choose a new folder")
    if model is not None and not (model / "config.json").is_file():
        raise FileNotFoundError(f"--model {model} has no config.json: pass a folder written by save_pretrained")
    if gallery is not None and not gallery.is_dir():
        raise FileNotFoundError(f"--gallery {gallery} is not a folder of photos")
    output_dir.mkdir(parents=True, exist_ok=True)
    for name in ("app.py", "requirements.txt", "README.md"):
        shutil.copy2(SPACE / name, output_dir / name)
    shutil.copytree(PACKAGE, output_dir / "gadms_hf", ignore=shutil.ignore_patterns("__pycache__"))
    if model is not None:
        shutil.copytree(model, output_dir / "model", ignore=shutil.ignore_patterns("checkpoint-*", "runs"))
    if gallery is not None:
        shutil.copytree(gallery, output_dir / "gallery", ignore=shutil.ignore_patterns(".gadms_index"))
    return output_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", type=Path, required=True)
    parser.add_argument("--model", type=Path, default=None, help="a GA-DMS model folder to ship as model/")
    parser.add_argument("--gallery", type=Path, default=None, help="a folder of photos to ship as gallery/")
    args = parser.parse_args(argv)
    try:
        folder = make_space(args.output_dir, args.model, args.gallery)
    except (FileExistsError, FileNotFoundError) as error:
        parser.error(str(error))
    print(f"wrote the Space to {folder}; upload it with: hf upload <user>/<space> {folder} --repo-type space")


if __name__ == "__main__":
    main()
