#!/usr/bin/env python
"""Convert the GA-DMS authors' released `.pth` (or any OpenAI-format CLIP state dict) to a Hub directory.

    python scripts/convert_authors_checkpoint.py --checkpoint best0.pth --output_dir gadms-webperson-5m \
        [--image_size 384 128] [--source_mask_id auto] [--push_to_hub user/gadms-webperson-5m]

The file is read with torch.load(weights_only=True): no code in it runs. The output holds
model.safetensors + config, the processor (384x128 CLIP image processor, CLIP tokenizer with
`<|mask|>`) and a README naming the source file and its sha256. Nothing is written unless the
whole conversion succeeds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gadms_hf.conversion.export import check_output_dir, save_converted
from gadms_hf.conversion.loading import load_authors_checkpoint
from gadms_hf.conversion.openai_clip import MaskSource


def _mask_source(value: str) -> MaskSource:
    if value in ("auto", "mean"):
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto', 'mean' or a token id, got {value!r}") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkpoint", required=True, type=Path, help="authors' .pth, or a CLIP .pth/.safetensors"
    )
    parser.add_argument("--output_dir", required=True, type=Path, help="new (or empty) directory to write")
    parser.add_argument(
        "--image_size",
        nargs=2,
        type=int,
        default=(384, 128),
        metavar=("HEIGHT", "WIDTH"),
        help="input size; must match the grid of the authors' positional table (default 384 128)",
    )
    parser.add_argument(
        "--source_mask_id",
        type=_mask_source,
        default="auto",
        help="source row that becomes <|mask|>: 'auto' (49405 for the authors' layout, the mean "
        "row for a plain CLIP), 'mean', or an id",
    )
    parser.add_argument(
        "--push_to_hub", metavar="REPO", help="also upload the directory to this Hub repository"
    )
    parser.add_argument("--private", action="store_true", help="create the Hub repository as private")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    try:
        check_output_dir(args.output_dir)
        model, report = load_authors_checkpoint(args.checkpoint, tuple(args.image_size), args.source_mask_id)
        output_dir = save_converted(model, report, args.output_dir)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        sys.exit(f"convert_authors_checkpoint: {err}")
    print(report.summary())
    print(f"parameters: {sum(p.numel() for p in model.parameters()):,}")
    print(f"wrote {output_dir}")
    if args.push_to_hub:
        from huggingface_hub import create_repo, upload_folder

        create_repo(args.push_to_hub, private=args.private, exist_ok=True)
        upload_folder(
            repo_id=args.push_to_hub,
            folder_path=output_dir,
            commit_message=f"GA-DMS converted from {report.source}",
        )
        print(f"pushed to https://huggingface.co/{args.push_to_hub}")
    return output_dir


if __name__ == "__main__":
    main()
