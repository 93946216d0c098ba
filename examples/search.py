#!/usr/bin/env python
"""Search a folder of person images by description with a GA-DMS model.

    python examples/search.py index  --model_name_or_path outputs/pretrain-synth --images photos/
    python examples/search.py query  --model_name_or_path outputs/pretrain-synth --images photos/ \\
        --text "a woman in a red jacket and blue jeans" --top_k 5 [--grid result.png]

`index` embeds every image once, one photo decoded at a time, and saves each batch as it goes into
`<images>/.gadms_index/<model fingerprint>/` (a killed run resumes where it stopped); running it again
embeds only new or changed files (by size and modification time) and forgets deleted ones. Unreadable
images are skipped and listed with the reason. `query` indexes first if needed, then prints the top-k
paths and scores.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoProcessor

from gadms_hf import GADMSModel
from gadms_hf.evaluation.embedding import embed_texts
from gadms_hf.evaluation.ranking import retrieve_topk
from gadms_hf.model_source import loading_model_from
from gadms_hf.search.folder_index import FolderIndex, index_folder
from gadms_hf.training.script_args import exit_on_bad_input


def build_index(model, processor, folder: Path, batch_size: int = 64) -> FolderIndex:
    """Bring the folder's index up to date, printing what was skipped and a one-line summary."""
    index = index_folder(model, processor, folder, batch_size=batch_size)
    for problem in index.problems:
        print(problem)
    for name, reason in index.skipped:
        print(f"skipped unreadable image {folder / name}: {reason}")
    print(index.summary())
    return index


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
    if args.top_k < 1 or args.batch_size < 1:
        parser.error(f"--top_k and --batch_size must be >= 1, got {args.top_k} and {args.batch_size}")
    if not args.images.is_dir():
        parser.error(f"--images {args.images} is not a folder")
    with exit_on_bad_input("search.py"), loading_model_from(args.model_name_or_path):
        model = GADMSModel.from_pretrained(args.model_name_or_path).eval()
        processor = AutoProcessor.from_pretrained(args.model_name_or_path)
    with exit_on_bad_input("search.py"):
        index = build_index(model, processor, args.images, args.batch_size)
    if args.command == "index":
        return []
    if not index.names:
        raise SystemExit(f"no readable images in {args.images}")
    queries = embed_texts(model, args.text, processor, progress=False).cpu()
    k = min(args.top_k, len(index.names))
    top = retrieve_topk(queries, index.embeddings, k)
    scores = queries @ index.embeddings.T
    results = []
    for q, text in enumerate(args.text):
        print(f"\n{text}")
        for rank, row in enumerate(top[q].tolist(), start=1):
            score = float(scores[q, row])
            results.append((index.names[row], score))
            print(f"  {rank}. {score:.4f}  {args.images / index.names[row]}")
    if args.grid:
        from gadms_hf.evaluation.plots import plot_retrieval_grid

        hits = sorted(set(top.reshape(-1).tolist()))  # decode only the images shown, not the gallery
        shown = [Image.open(args.images / index.names[row]).convert("RGB") for row in hits]
        position = {row: i for i, row in enumerate(hits)}
        local = torch.tensor([[position[row] for row in rows] for rows in top.tolist()])
        # no identities here: frame every hit green
        plot_retrieval_grid(args.text, shown, local, torch.ones_like(local, dtype=torch.bool), args.grid, k=k)
        print(f"\nwrote {args.grid}")
    return results


if __name__ == "__main__":
    with torch.no_grad():
        main()
