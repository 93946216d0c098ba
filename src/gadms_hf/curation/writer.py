"""The output folder: WebPerson Hub-form Parquet shards, written atomically, plus run bookkeeping.

Layout (loads with `load_dataset(folder)` or `load_dataset("parquet", data_dir=folder)`):

    README.md                              dataset card with the `configs` YAML
    curation_report.json                   counts over every finished shard
    data/train-00000-of-00042.parquet      one per finished work unit
    .curation/manifest.json                what the shards were made from (checked on resume)
    .curation/units/train-00000-of-00042.json   the unit's counts

A shard appears under its final name only once complete (written to a hidden temporary file,
then `os.replace`d), so its presence marks the unit as done: a rerun after a crash skips it,
and a half-written file is never read as data. Hidden files and folders are ignored by
`datasets`, so the bookkeeping never leaks into the dataset.
"""

from __future__ import annotations

import glob
import json
import os
import socket
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Features, List, Value

from ..data.builders.webperson import HUB_FEATURES
from .errors import CurationSetupError
from .report import CurationStats

# WebPerson's Hub-form columns (so the output loads as WebPerson does), then where each crop came from.
FEATURES = Features(
    {
        **HUB_FEATURES,
        "source": Value("string"),
        "person_box": List(Value("float32"), length=4),
        "detection_confidence": Value("float32"),
        "template1": Value("string"),
        "template2": Value("string"),
    }
)
STATE_DIR = ".curation"
REPORT_FILE = "curation_report.json"
ROWS_PER_ROW_GROUP = 100  # small row groups keep image Parquet streamable (as `datasets` does)


def shard_name(index: int, total: int) -> str:
    return f"train-{index:05d}-of-{total:05d}"


def shard_path(output_dir: str, index: int, total: int) -> str:
    return os.path.join(output_dir, "data", f"{shard_name(index, total)}.parquet")


def unit_stats_path(output_dir: str, index: int, total: int) -> str:
    return os.path.join(output_dir, STATE_DIR, "units", f"{shard_name(index, total)}.json")


def _tmp_path(path: str) -> str:
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.tmp-{socket.gethostname()}-{os.getpid()}")


def atomic_write_text(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = _tmp_path(path)
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def remove_stale_tmp(output_dir: str, index: int, total: int) -> int:
    """Delete temporary files a crashed run left for this unit; returns how many."""
    removed = 0
    for path in (shard_path(output_dir, index, total), unit_stats_path(output_dir, index, total)):
        folder, name = os.path.split(path)
        for stale in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(name)}.tmp-*")):
            os.remove(stale)
            removed += 1
    return removed


def write_shard(
    output_dir: str, index: int, total: int, columns: dict[str, list], stats: CurationStats
) -> str:
    """Write one unit's rows (columns of `FEATURES`) and its counts; returns the shard path."""
    if set(columns) != set(FEATURES):
        raise ValueError(f"shard columns {sorted(columns)} differ from the output schema {sorted(FEATURES)}")
    table = pa.Table.from_pydict({name: columns[name] for name in FEATURES}, schema=FEATURES.arrow_schema)
    atomic_write_text(unit_stats_path(output_dir, index, total), json.dumps(stats.to_dict(), indent=1))
    path = shard_path(output_dir, index, total)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = _tmp_path(path)
    with pq.ParquetWriter(tmp, FEATURES.arrow_schema) as parquet:
        if table.num_rows:  # an empty row group would make `datasets` fail on the file ("BatchSize ... 0")
            parquet.write_table(table, row_group_size=ROWS_PER_ROW_GROUP)
    os.replace(tmp, path)
    return path


def manifest_path(output_dir: str) -> str:
    return os.path.join(output_dir, STATE_DIR, "manifest.json")


def check_manifest(output_dir: str, manifest: dict[str, Any]) -> None:
    """Record what this output is made from, or refuse to mix runs made differently."""
    path = manifest_path(output_dir)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            previous = json.load(handle)
        changed = sorted(k for k in set(previous) | set(manifest) if previous.get(k) != manifest.get(k))
        if changed:
            details = "; ".join(f"{k}: {previous.get(k)!r} -> {manifest.get(k)!r}" for k in changed)
            raise CurationSetupError(
                f"{output_dir!r} holds shards made from a different input or settings ({details}). "
                "Resume with the original arguments, or write to a new output_dir."
            )
        return
    atomic_write_text(path, json.dumps(manifest, indent=1, sort_keys=True))


def finished_stats(output_dir: str, total: int) -> tuple[CurationStats, int]:
    """Counts summed over every finished shard in the folder (any process's), and how many there are."""
    stats, finished = CurationStats(), 0
    for index in range(total):
        if os.path.exists(shard_path(output_dir, index, total)):
            with open(unit_stats_path(output_dir, index, total), encoding="utf-8") as handle:
                stats.merge(CurationStats.from_dict(json.load(handle)))
            finished += 1
    return stats, finished


_CARD = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
task_categories:
- text-to-image
- image-to-text
tags:
- text-based-person-retrieval
- person-reid
- webperson
pretty_name: {pretty_name}
---

# {pretty_name}

Pedestrian crops from web images with two template-guided captions each, made with
`gadms_hf.curation` (`scripts/curate_webperson.py`), which follows the recipe of the WebPerson
corpus of GA-DMS (EMNLP 2025): a YOLO person filter, then captions by a vision-language model.
Same columns as `Kaichengalex/WebPerson-5M`, plus provenance.

```python
from datasets import load_dataset
ds = load_dataset("path/to/this/folder", split="train")
```

| column | meaning |
|---|---|
| image | the person crop (JPEG bytes embedded) |
| image_path | stable name of the crop: `<shard>/<item>_<person>.jpg` |
| caption1, caption2 | two captions, each written following a random template |
| source | input path, URL or `shard.tar::member` the crop was cut from |
| person_box | person box (x1, y1, x2, y2) in source-image pixels |
| detection_confidence | detector confidence of that box |
| template1, template2 | the templates the captions followed |

## Counts

Shards finished: {units_finished} of {units_total}.

| images in | images kept | persons kept | captions written | captions cut to the word limit |
|---|---|---|---|---|
| {images_in} | {images_kept} | {persons_kept} | {captions_written} | {captions_truncated} |

Rejected images by reason: {rejected}

## How it was made

```json
{manifest}
```

The images keep the licences and terms of their sources.
"""


def write_dataset_card(output_dir: str, report: dict[str, Any], manifest: dict[str, Any]) -> None:
    totals = report["dataset"]
    rejected = ", ".join(f"{k} {v}" for k, v in totals["rejected"].items()) or "none"
    made_with = {
        **manifest,
        "templates": f"{len(manifest['templates'])} templates (see .curation/manifest.json)",
    }
    text = _CARD.format(
        pretty_name="WebPerson-style pedestrian image-text pairs",
        units_finished=report["units_finished"],
        units_total=report["units_total"],
        rejected=rejected,
        manifest=json.dumps(made_with, indent=1, sort_keys=True),
        **{k: totals[k] for k in ("images_in", "images_kept", "persons_kept", "captions_written")},
        captions_truncated=totals["captions_truncated"],
    )
    atomic_write_text(os.path.join(output_dir, "README.md"), text)


__all__ = [
    "FEATURES",
    "STATE_DIR",
    "REPORT_FILE",
    "shard_name",
    "shard_path",
    "unit_stats_path",
    "write_shard",
    "atomic_write_text",
    "remove_stale_tmp",
    "manifest_path",
    "check_manifest",
    "finished_stats",
    "write_dataset_card",
]
