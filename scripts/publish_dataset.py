#!/usr/bin/env python
"""Export a corpus as self-contained Parquet shards plus a dataset card, and optionally push it to the Hub.

The corpus builders store images as paths into the raw corpus folder; `Dataset.to_parquet` would write those
paths, not the images. Here every shard first goes through `datasets.table.embed_table_storage` (what
`Dataset.push_to_hub` does), so the Parquet files hold the image bytes and the folder loads anywhere with
`datasets.load_dataset(<folder>)`, `Image` feature included, without the raw files.

    python scripts/publish_dataset.py --corpus cuhk-pedes --data_dir /data/CUHK-PEDES --output_dir cuhk-pedes-parquet
    python scripts/publish_dataset.py --dataset_path my_saved_dataset --output_dir out --push_to_hub user/name

Output: ``<output_dir>/data/<split>-XXXXX-of-YYYYY.parquet`` and ``<output_dir>/README.md`` whose YAML
``configs`` map each split to its shards (the layout `push_to_hub` writes). Previous shards of the exported
splits in ``<output_dir>/data`` are replaced.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import yaml
from datasets.table import embed_table_storage
from huggingface_hub import HfApi
from transformers import HfArgumentParser

from gadms_hf.data.corpus import CORPORA, load_corpus

logger = logging.getLogger("publish_dataset")

_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
# Rows per Parquet row group: small groups keep random access cheap when every row carries an image.
_ROWS_PER_GROUP = 100


@dataclass
class PublishArguments:
    output_dir: str = field(metadata={"help": "Folder to write data/*.parquet and README.md into."})
    corpus: str | None = field(
        default=None,
        metadata={"help": "Corpus to build and export.", "choices": sorted(CORPORA)},
    )
    data_dir: str | None = field(
        default=None,
        metadata={"help": "The corpus's raw folder (or, for webperson, a Hub id), as load_corpus takes."},
    )
    dataset_path: str | None = field(
        default=None,
        metadata={
            "help": "Instead of --corpus: a folder from Dataset(Dict).save_to_disk or any load_dataset folder."
        },
    )
    splits: list[str] | None = field(
        default=None,
        metadata={"help": "Splits to export (default: all the corpus or folder has).", "nargs": "+"},
    )
    max_shard_size: str = field(default="500MB", metadata={"help": "Largest Parquet shard, e.g. 500MB, 1GB."})
    strict: bool = field(
        default=False, metadata={"help": "Fail on an unreadable image instead of skipping it."}
    )
    cache_dir: str | None = field(default=None, metadata={"help": "datasets cache folder for the build."})
    push_to_hub: str | None = field(
        default=None, metadata={"help": "Hub dataset repo id (user/name) to upload the exported folder to."}
    )
    public: bool = field(
        default=False,
        metadata={
            "help": "Create the Hub repo public (default private: benchmark licences rarely allow sharing)."
        },
    )


def parse_size(size: str) -> int:
    """``"500MB"`` -> 500_000_000 (decimal units; KiB/MiB/GiB binary)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?i?B)?\s*", size, flags=re.IGNORECASE)
    if match is None or (match.group(2) or "").upper() not in _SIZE_UNITS:
        raise ValueError(f"Cannot read size {size!r}; expected a number with B, KB, MB, GB, KiB, MiB or GiB.")
    return max(1, int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").upper()]))


def load_source(args: PublishArguments) -> datasets.DatasetDict:
    """The splits to export, from a corpus build or from a dataset folder."""
    if (args.corpus is None) == (args.dataset_path is None):
        raise ValueError("Pass exactly one of --corpus (with --data_dir) and --dataset_path.")
    if args.corpus is not None:
        built = load_corpus(args.corpus, data_dir=args.data_dir, split=None, strict=args.strict,
                            cache_dir=args.cache_dir)
        return _select_splits(built, args.splits, f"{args.corpus} in {args.data_dir}")
    if args.data_dir is not None or args.strict:
        raise ValueError("--data_dir and --strict apply to --corpus builds, not to --dataset_path.")
    path = Path(args.dataset_path)
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        loaded = datasets.load_from_disk(str(path))
    else:
        loaded = datasets.load_dataset(str(path), cache_dir=args.cache_dir)
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({str(loaded.split or "train"): loaded})
    return _select_splits(loaded, args.splits, str(path))


def _select_splits(available: datasets.DatasetDict, wanted: list[str] | None, source: str) -> datasets.DatasetDict:
    """`wanted` (default: every split there is), or an error naming the splits `source` has."""
    unknown = sorted(set(wanted or ()) - set(available))
    if unknown:
        raise ValueError(f"{source} has no split(s) {unknown}; it has {sorted(available)}.")
    return datasets.DatasetDict({split: available[split] for split in wanted or available})


def estimate_nbytes(dataset: datasets.Dataset) -> int:
    """Bytes the split will take once images are embedded: the Arrow table plus the referenced image files.

    Image file sizes are averaged over the first 1,000 rows, as `push_to_hub` does to pick its shard count.
    """
    table_nbytes = dataset.data.nbytes * len(dataset) // max(1, len(dataset.data))
    image_columns = [
        name for name, feature in dataset.features.items() if isinstance(feature, datasets.Image)
    ]
    if not image_columns or len(dataset) == 0:
        return table_nbytes
    sample = dataset.select_columns(image_columns).with_format("arrow")[:1000]
    external = sum(
        os.path.getsize(value["path"])
        for column in image_columns
        for value in sample[column].to_pylist()
        if value and value["bytes"] is None and value["path"] and os.path.isfile(value["path"])
    )
    return table_nbytes + external * len(dataset) // sample.num_rows


def write_parquet_shards(
    dataset: datasets.Dataset, data_dir: Path, split: str, max_shard_size: int
) -> list[Path]:
    """Write one split as ``<split>-XXXXX-of-YYYYY.parquet`` shards with every referenced file embedded."""
    data_dir.mkdir(parents=True, exist_ok=True)
    for stale in sorted(data_dir.glob(f"{split}-*.parquet")):
        logger.info("Removing previous shard %s", stale)
        stale.unlink()
    num_shards = max(1, math.ceil(estimate_nbytes(dataset) / max_shard_size))
    paths = []
    for index in range(num_shards):
        shard = dataset.shard(num_shards=num_shards, index=index, contiguous=True)
        embedded = shard.with_format("arrow").map(
            embed_table_storage,
            batched=True,
            batch_size=_ROWS_PER_GROUP,
            keep_in_memory=True,
            desc="Embedding",
        )
        path = data_dir / f"{split}-{index:05d}-of-{num_shards:05d}.parquet"
        embedded.to_parquet(str(path), batch_size=_ROWS_PER_GROUP)
        paths.append(path)
    return paths


def _split_table(dataset_dict: datasets.DatasetDict) -> str:
    lines = ["| split | rows | images | identities |", "|---|---|---|---|"]
    for split, dataset in dataset_dict.items():
        counts = [
            f"{len(np.unique(dataset.select_columns([c]).with_format('numpy')[c][:])):,}"
            if c in dataset.column_names
            else "-"
            for c in ("image_id", "person_id")
        ]
        lines.append(f"| {split} | {len(dataset):,} | {counts[0]} | {counts[1]} |")
    return "\n".join(lines)


def write_dataset_card(
    output_dir: Path, dataset_dict: datasets.DatasetDict, name: str, repo_id: str | None, source: str
) -> Path:
    """README.md whose YAML ``configs`` make `load_dataset(folder or repo)` find each split's shards."""
    first = next(iter(dataset_dict.values()))
    metadata = {
        "pretty_name": name,
        "license": "other",
        "tags": ["text-based-person-retrieval", "person-reid", "image-text"],
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": split, "path": f"data/{split}-*"} for split in dataset_dict],
            }
        ],
    }
    info = first.info
    columns = "\n".join(f"- `{column}`: {feature!r}" for column, feature in first.features.items())
    body = f"""# {name}

{info.description or "Text-based person retrieval data: pedestrian images with natural-language captions."}

Exported by `gadms-hf` (`scripts/publish_dataset.py`) from {source}: one row per caption, image bytes
embedded in the Parquet shards.

```python
from datasets import load_dataset
dataset = load_dataset("{repo_id or output_dir}")
```

## Columns

{columns}

`person_id`, `image_id` and `caption_id` are contiguous per split for the benchmarks (WebPerson: the image's
index in the source, `caption_id = 2 * index + k`). The retrieval gallery is one row per `image_id`.

## Splits

{_split_table(dataset_dict)}

## Licence

The images and captions keep the licence and terms of use of the original corpus
{f"({info.homepage})" if info.homepage else ""}; check them before sharing this export.
"""
    if info.citation:
        body += f"\n## Citation\n\n```bibtex\n{info.citation}\n```\n"
    card = output_dir / "README.md"
    card.write_text(f"---\n{yaml.safe_dump(metadata, sort_keys=False)}---\n\n{body}", encoding="utf-8")
    return card


def push_folder(output_dir: Path, repo_id: str, splits: list[str], private: bool) -> None:
    """Upload the exported folder as it is; shards of the same splits from an earlier push are deleted."""
    api = HfApi()
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    api.upload_folder(
        repo_id=repo_id,
        repo_type="dataset",
        folder_path=output_dir,
        delete_patterns=[f"data/{split}-*.parquet" for split in splits],
        commit_message=f"Upload {', '.join(splits)} with gadms-hf publish_dataset.py",
    )


def main(argv: list[str] | None = None) -> Path:
    parser = HfArgumentParser(PublishArguments, description=__doc__.split("\n\n")[0])
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)
    max_shard_size = parse_size(args.max_shard_size)
    dataset_dict = load_source(args)
    output_dir = Path(args.output_dir)
    for split, dataset in dataset_dict.items():
        paths = write_parquet_shards(dataset, output_dir / "data", split, max_shard_size)
        logger.info("%s: %d rows in %d shard(s), %.2f MB", split, len(dataset), len(paths), _megabytes(paths))
    name = args.corpus or Path(args.dataset_path).name
    source = f"the raw `{args.corpus}` files" if args.corpus else f"`{Path(args.dataset_path).name}`"
    card = write_dataset_card(output_dir, dataset_dict, name, args.push_to_hub, source)
    logger.info("Wrote %s", card)
    if args.push_to_hub:
        push_folder(output_dir, args.push_to_hub, list(dataset_dict), private=not args.public)
        logger.info("Pushed %s to https://huggingface.co/datasets/%s", output_dir, args.push_to_hub)
    return output_dir


def _megabytes(paths: list[Path]) -> float:
    return sum(path.stat().st_size for path in paths) / 1e6


if __name__ == "__main__":
    main(sys.argv[1:])
