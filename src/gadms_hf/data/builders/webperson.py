"""WebPerson: 5M web person images, two MLLM-written captions each (Zheng et al., EMNLP 2025).

Two source forms, told apart by what ``data_dir`` holds:

- the Hub form (``Kaichengalex/WebPerson-5M``, or a local folder of such Parquet files): columns ``image``,
  ``image_path``, ``caption1``, ``caption2``; ``data_dir`` is a Hub dataset id or a folder;
- the authors' raw form: a JSON list of ``{relative_image_path: {"caption1": ..., "caption2": ...}}`` plus an
  image folder (``imgs/`` unless ``image_dir`` says otherwise).

Each image gives two rows sharing ``person_id`` = ``image_id`` = the image's index in the source (every web
image is its own identity), with ``caption_id = 2 * index + k``. The index is the row's position in the source
(JSON order, or Parquet files in order and rows within them), computed per shard from the shard's offset, so
it is the same whether the corpus is built or streamed, however the stream is split across data-loader
workers or nodes, and before any shuffle. (``IterableDataset.map(with_indices=True)`` restarts its count in
every worker, which would give two images the same ids.) Skipped images leave their ids unused.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import datasets
import fsspec
import pyarrow.parquet as pq

from ._common import (
    FEATURES,
    PedesConfig,
    UnreadableImages,
    data_root,
    files_fingerprint,
    image_problem,
    read_json_list,
    require_dir,
    require_text,
)

HUB_DATASET = "Kaichengalex/WebPerson-5M"
# The Hub form's columns, which `gadms_hf.curation` also writes (with provenance columns after them).
HUB_FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "image_path": datasets.Value("string"),
        "caption1": datasets.Value("string"),
        "caption2": datasets.Value("string"),
    }
)
HUB_COLUMNS = tuple(HUB_FEATURES)
CAPTION_FIELDS = ("caption1", "caption2")

LAYOUT = (
    f"  a Hub dataset id (default {HUB_DATASET}) or a folder of Parquet files with columns "
    f"{', '.join(HUB_COLUMNS)}; or\n"
    "  <data_dir>/<annotations>.json  JSON list of {relative_image_path: {'caption1': ..., 'caption2': ...}}\n"
    "  <data_dir>/imgs/  the images, at those relative paths (override with image_dir=...)"
)

# Images per shard of the raw form: the unit handed to one build process or data-loader worker.
_RAW_SHARD_SIZE = 10_000
_PARQUET_BATCH_ROWS = 256


@dataclass
class WebPersonConfig(PedesConfig):
    """``PedesConfig`` plus the raw form's file locations.

    Args:
        annotation_file: raw form, the JSON list (relative to ``data_dir`` or absolute); by default the only
            ``.json`` file in ``data_dir``.
        image_dir: raw form, the folder the JSON's image paths are relative to (relative to ``data_dir`` or
            absolute); by default ``<data_dir>/imgs``.
    """

    annotation_file: str | None = None
    image_dir: str | None = None


class _Image(NamedTuple):
    index: int  # position in the source: the image's person_id and image_id
    image: str | dict[str, Any]  # what the Image feature stores: a file path, or the embedded bytes
    image_path: str
    captions: tuple[str, str]
    label: str  # how a skip report names the image


@dataclass(frozen=True)
class _RawShard:
    """Images ``start, start + 1, ...`` of the raw form, as (relative path, caption1, caption2)."""

    start: int
    images: tuple[tuple[str, str, str], ...]
    image_dir: str

    def rows(self) -> Iterator[_Image]:
        for offset, (image_path, caption1, caption2) in enumerate(self.images):
            path = os.path.join(self.image_dir, image_path)
            yield _Image(self.start + offset, path, image_path, (caption1, caption2), path)


@dataclass(frozen=True)
class _ParquetShard:
    """One Parquet file of the Hub form; its first row is image ``start``."""

    start: int
    file: str

    def rows(self) -> Iterator[_Image]:
        with fsspec.open(self.file, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            missing = [c for c in HUB_COLUMNS if c not in parquet.schema_arrow.names]
            if missing:
                raise ValueError(
                    f"{self.file} has no column(s) {missing} (columns present: {parquet.schema_arrow.names}); "
                    f"the WebPerson Hub form has {list(HUB_COLUMNS)}. A folder exported by publish_dataset.py "
                    "is already in the corpus schema: load it with datasets.load_dataset(folder)."
                )
            row_number = 0
            for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=list(HUB_COLUMNS)):
                for row in batch.to_pylist():
                    where = f"Row {row_number} of {self.file}"
                    if not isinstance(row["image_path"], str):
                        raise ValueError(
                            f"{where}: column 'image_path' must be a string, got {row['image_path']!r}."
                        )
                    caption1, caption2 = (
                        require_text(row[f], f"column {f!r}", where) for f in CAPTION_FIELDS
                    )
                    encoded = (row["image"] or {}).get("bytes") or b""
                    image = {"bytes": encoded, "path": None}
                    yield _Image(
                        self.start + row_number, image, row["image_path"], (caption1, caption2), where
                    )
                    row_number += 1


def _looks_raw(folder: Path) -> bool:
    """A JSON file at the top of ``folder`` and no Parquet file at the top or under ``data/``.

    The Parquet test comes first because a Hub-form folder may carry JSON files of its own (the
    ``curation_report.json`` of ``scripts/curate_webperson.py``). Only those two places are looked at: a raw
    image folder can hold millions of files.
    """
    if any(folder.glob("*.parquet")) or any((folder / "data").rglob("*.parquet")):
        return False
    return any(folder.glob("*.json"))


class WebPerson(datasets.GeneratorBasedBuilder):
    """WebPerson in the corpus schema, from the Hub form or the authors' raw form (see the module docstring)."""

    BUILDER_CONFIG_CLASS = WebPersonConfig
    VERSION = datasets.Version("1.0.0")

    def __init__(self, *, data_dir: str | None = None, hash: str | None = None, **kwargs: Any) -> None:
        if hash is None and data_dir is not None and os.path.isdir(data_dir):
            # the raw form's annotation list, or every Parquet file of a local Hub-form folder
            folder = Path(data_dir).expanduser()
            raw = _looks_raw(folder) or any(kwargs.get(k) is not None for k in ("annotation_file", "image_dir"))
            sources = list(folder.rglob("*.parquet"))  # the Hub form's images are inside them
            if raw:
                sources = [*folder.glob("*.json"), folder / (kwargs.get("image_dir") or "imgs")]
                if kwargs.get("annotation_file") is not None:
                    sources.append(folder / kwargs["annotation_file"])  # an absolute one replaces folder
            hash = files_fingerprint(sources)
        super().__init__(data_dir=data_dir, hash=hash, **kwargs)

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=(
                "WebPerson: 5,002,723 person-centric web images (COYO-700M, filtered with YOLOv11 detection and "
                "pose), each with two captions written by Qwen2.5-VL from benchmark-derived templates."
            ),
            features=FEATURES,
            homepage=f"https://huggingface.co/datasets/{HUB_DATASET}",
            citation="""@inproceedings{zheng2025gadms,
  title={Gradient-Attention Guided Dual-Masking Synergetic Framework for Robust Text-based Person Retrieval},
  author={Zheng, Tianlu and Zhang, Yifan and An, Xiang and Feng, Ziyong and Yang, Kaicheng and Ding, Qichuan},
  booktitle={EMNLP},
  year={2025}
}""",
        )

    def _split_generators(self, dl_manager: datasets.DownloadManager) -> list[datasets.SplitGenerator]:
        source = self.config.data_dir or HUB_DATASET
        shards = self._raw_shards() if self._is_raw(source) else self._parquet_shards(source)
        return [datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={"shards": shards})]

    def num_images(self) -> int:
        """Images in the source, from the annotation list or the Parquet footers (no image is read).

        A streamed run sizes its score bank with it: caption ids run to ``2 * num_images() - 1``.
        """
        source = self.config.data_dir or HUB_DATASET
        if self._is_raw(source):
            last = self._raw_shards()[-1]
            return last.start + len(last.images)
        last = self._parquet_shards(source)[-1]
        with fsspec.open(last.file, "rb") as handle:
            return last.start + pq.ParquetFile(handle).metadata.num_rows

    def _is_raw(self, source: str) -> bool:
        """The raw form unless ``source`` is a Hub id or a folder of Parquet files (see ``_looks_raw``)."""
        config = self.config
        return config.annotation_file is not None or config.image_dir is not None or _looks_raw(Path(source))

    def _raw_shards(self) -> list[_RawShard]:
        root = data_root(self.config.data_dir, LAYOUT)
        annotation = self._annotation_file(root)
        image_dir = require_dir(
            root / (self.config.image_dir or "imgs"), LAYOUT
        )  # an absolute one replaces root
        images: list[tuple[str, str, str]] = []
        for index, entry in enumerate(read_json_list(annotation, LAYOUT)):
            where = f"Entry {index} of {annotation}"
            if not isinstance(entry, dict) or not entry:
                raise ValueError(
                    f"{where} must be a non-empty {{relative_image_path: captions}} object, got {entry!r}."
                )
            for image_path, captions in entry.items():
                here = f"{where} ({image_path!r})"
                if not isinstance(captions, dict):
                    raise ValueError(
                        f"{here} must map to an object with {list(CAPTION_FIELDS)}, got {captions!r}."
                    )
                missing = [field for field in CAPTION_FIELDS if field not in captions]
                if missing:
                    raise ValueError(
                        f"{here} has no field {missing[0]!r} (fields present: {sorted(captions)})."
                    )
                caption1, caption2 = (require_text(captions[f], f"field {f!r}", here) for f in CAPTION_FIELDS)
                images.append((image_path, caption1, caption2))
        if not images:
            raise ValueError(f"Annotation file {annotation} holds an empty list. Expected layout:\n{LAYOUT}")
        return [
            _RawShard(start, tuple(images[start : start + _RAW_SHARD_SIZE]), str(image_dir))
            for start in range(0, len(images), _RAW_SHARD_SIZE)
        ]

    def _annotation_file(self, root: Path) -> Path:
        if self.config.annotation_file is not None:
            return root / self.config.annotation_file  # an absolute annotation_file replaces root
        candidates = sorted(root.glob("*.json"))
        if len(candidates) != 1:
            raise FileNotFoundError(
                f"Found {len(candidates)} JSON files in {root} ({[c.name for c in candidates]}); "
                f"pass annotation_file=... to pick the annotation list. Expected layout:\n{LAYOUT}"
            )
        return candidates[0]

    def _parquet_shards(self, source: str) -> list[_ParquetShard]:
        """Resolve the Parquet files as ``load_dataset(source)`` would, and number their rows in that order."""
        folder = Path(source).expanduser()
        looks_local = folder.is_absolute() or source.startswith((".", "~"))
        if (looks_local or folder.exists()) and not (folder.is_dir() and any(folder.rglob("*.parquet"))):
            raise FileNotFoundError(
                f"{source} is not a folder holding Parquet files or a JSON annotation list. Expected:\n{LAYOUT}"
            )
        hub_builder = datasets.load_dataset_builder(source, cache_dir=self._cache_dir_root)
        data_files = hub_builder.config.data_files or {}
        if "train" not in data_files:
            raise ValueError(
                f"{source} has no 'train' split (splits: {sorted(data_files)}). Expected:\n{LAYOUT}"
            )
        shards, start = [], 0
        for file in data_files["train"]:
            with fsspec.open(file, "rb") as handle:
                num_rows = pq.ParquetFile(handle).metadata.num_rows
            shards.append(_ParquetShard(start, file))
            start += num_rows
        return shards

    def _generate_examples(
        self, shards: list[_RawShard | _ParquetShard]
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        unreadable = UnreadableImages(self.config.strict, "webperson")
        try:
            for shard in shards:
                for row in shard.rows():
                    source = row.image if isinstance(row.image, str) else row.image["bytes"]
                    if self.config.verify_images and (problem := image_problem(source)):
                        unreadable.add(row.label, problem)
                        continue
                    for k, caption in enumerate(row.captions):
                        yield (
                            2 * row.index + k,
                            {
                                "image": row.image,
                                "caption": caption,
                                "person_id": row.index,
                                "image_id": row.index,
                                "caption_id": 2 * row.index + k,
                                "image_path": row.image_path,
                            },
                        )
        finally:
            unreadable.report()


__all__ = ["HUB_COLUMNS", "HUB_DATASET", "HUB_FEATURES", "WebPerson", "WebPersonConfig"]
