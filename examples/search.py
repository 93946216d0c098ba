#!/usr/bin/env python
"""Search a folder of person images by description with a GA-DMS model.

    python examples/search.py index  --model_name_or_path outputs/pretrain-synth --images photos/
    python examples/search.py query  --model_name_or_path outputs/pretrain-synth --images photos/ \\
        --text "a woman in a red jacket and blue jeans" --top_k 5 [--grid result.png]

`index` embeds every image once and stores the embeddings next to the folder
(`<images>/.gadms_index/embeddings.safetensors` + `manifest.json`); running it again embeds only
new or changed files (by size and modification time) and drops deleted ones. Unreadable images
are skipped and listed. `query` indexes first if needed, then prints the top-k paths and scores.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoProcessor

import gadms_hf  # noqa: F401  (registers the Auto classes)
from gadms_hf.evaluation.retrieval import embed_images, embed_texts, retrieve_topk
from gadms_hf.training.pipeline import loading_model_from
from gadms_hf.training.script_args import exit_on_bad_input

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
INDEX_DIR = ".gadms_index"


def _signature(path: Path) -> list:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def build_index(model, processor, folder: Path, model_name: str, batch_size: int = 64) -> tuple[list[str], torch.Tensor]:
    """Bring the folder's index up to date; returns (relative paths, L2-normalised embeddings)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"--images {folder} is not a folder")
    index_dir = folder / INDEX_DIR
    manifest_file, tensor_file = index_dir / "manifest.json", index_dir / "embeddings.safetensors"
    old = {"model": None, "files": {}}
    if manifest_file.is_file() and tensor_file.is_file():
        old = json.loads(manifest_file.read_text())
    reuse = old["model"] == model_name
    old_embeddings = load_file(str(tensor_file))["embeddings"] if reuse and old["files"] else None

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and INDEX_DIR not in p.parts)
    keep, todo, skipped = {}, [], []
    for path in files:
        name = str(path.relative_to(folder))
        entry = old["files"].get(name)
        if reuse and entry is not None and entry["signature"] == _signature(path):
            keep[name] = old_embeddings[entry["row"]]
        else:
            todo.append(path)
    images, names = [], []
    for path in todo:
        try:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
            names.append(str(path.relative_to(folder)))
        except (OSError, UnidentifiedImageError) as error:
            skipped.append(f"{path}: {type(error).__name__}: {error}")
    if images:
        fresh = embed_images(model, images, processor, batch_size=batch_size, progress=False).cpu()
        keep.update(dict(zip(names, fresh)))
    for problem in skipped:
        print(f"skipped unreadable image {problem}")
    print(f"index: {len(keep)} images ({len(names)} embedded now, {len(keep) - len(names)} reused, "
          f"{len(skipped)} unreadable)")

    ordered = sorted(keep)
    embeddings = torch.stack([keep[n] for n in ordered]) if ordered else torch.empty(0, model.config.projection_dim)
    index_dir.mkdir(exist_ok=True)
    save_file({"embeddings": embeddings.contiguous()}, str(tensor_file))
    manifest = {"model": model_name, "files": {n: {"row": i, "signature": _signature(folder / n)}
                                               for i, n in enumerate(ordered)}}
    manifest_file.write_text(json.dumps(manifest, indent=1))
    return ordered, embeddings


def main(argv: list[str] | None = None) -> list[tuple[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("index", "query"))
    parser.add_argument("--model_name_or_path", required=True, help="GA-DMS model directory or Hub id")
    parser.add_argument("--images", required=True, type=Path, help="folder of person images (searched recursively)")
    parser.add_argument("--text", action="append", default=[], help="a description (repeat for several queries)")
    parser.add_argument("--top_k", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--grid", default=None, help="also write the top-k images per query as a PNG")
    args = parser.parse_args(argv)
    if args.command == "query" and not args.text:
        parser.error("query needs at least one --text")

    with exit_on_bad_input("search.py"), loading_model_from(args.model_name_or_path):
        model = AutoModel.from_pretrained(args.model_name_or_path).eval()
        processor = AutoProcessor.from_pretrained(args.model_name_or_path)
    model_name = os.path.abspath(args.model_name_or_path) if os.path.isdir(args.model_name_or_path) \
        else args.model_name_or_path
    with exit_on_bad_input("search.py"):
        names, embeddings = build_index(model, processor, args.images, model_name, args.batch_size)
    if args.command == "index":
        return []
    if not names:
        raise SystemExit(f"no readable images in {args.images}")
    queries = embed_texts(model, args.text, processor, progress=False).cpu()
    k = min(args.top_k, len(names))
    top = retrieve_topk(queries, embeddings, k)
    scores = queries @ embeddings.T
    results = []
    for q, text in enumerate(args.text):
        print(f"\n{text}")
        for rank, row in enumerate(top[q].tolist(), start=1):
            score = float(scores[q, row])
            results.append((names[row], score))
            print(f"  {rank}. {score:.4f}  {args.images / names[row]}")
    if args.grid:
        from gadms_hf.evaluation.plots import plot_retrieval_grid

        gallery = [Image.open(args.images / name).convert("RGB") for name in names]
        # no identities here: frame every hit green
        plot_retrieval_grid(args.text, gallery, top, torch.ones_like(top, dtype=torch.bool), args.grid, k=k)
        print(f"\nwrote {args.grid}")
    return results


if __name__ == "__main__":
    with torch.no_grad():
        main()
