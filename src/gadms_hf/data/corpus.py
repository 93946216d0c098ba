"""One entry point to every corpus, and the gallery/query view the retrieval evaluator needs.

>>> train = load_corpus("cuhk-pedes", data_dir="/data/CUHK-PEDES", split="train")
>>> gallery, queries = gallery_and_queries(load_corpus("cuhk-pedes", data_dir="/data/CUHK-PEDES", split="test"))
>>> stream = load_corpus("webperson", streaming=True)  # Kaichengalex/WebPerson-5M, read as it is needed
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from .builders._common import PedesBenchmarkBuilder
from .builders.cuhk_pedes import CuhkPedes
from .builders.icfg_pedes import IcfgPedes
from .builders.rstpreid import RstpReid
from .builders.synth_pedes import SynthPedes
from .builders.webperson import HUB_DATASET, WebPerson


@dataclass(frozen=True)
class SplitSize:
    """Published size of one split; ``None`` where the source does not state it."""

    images: int | None
    identities: int | None
    captions: int | None = None


@dataclass(frozen=True)
class CorpusInfo:
    """What a corpus is, which files it is read from and how big its splits should come out.

    ``expected_files`` are relative to ``data_dir``; a trailing ``/`` marks a folder.
    """

    name: str
    builder: type[datasets.GeneratorBasedBuilder]
    expected_files: tuple[str, ...]
    splits: Mapping[str, SplitSize]
    description: str
    notes: str = field(default="")

    def missing_files(self, data_dir: str | os.PathLike) -> list[Path]:
        """The expected files or folders absent from ``data_dir`` (empty when the corpus looks complete);
        a benchmark's accepted variants (another annotation name, no ``imgs/`` level) count as present."""
        root = Path(data_dir)
        if issubclass(self.builder, PedesBenchmarkBuilder):
            return self.builder.missing_inputs(root)
        return [
            root / name
            for name in self.expected_files
            if not ((root / name).is_dir() if name.endswith("/") else (root / name).is_file())
        ]


CORPORA: dict[str, CorpusInfo] = {
    info.name: info
    for info in (
        CorpusInfo(
            name="cuhk-pedes",
            builder=CuhkPedes,
            expected_files=("reid_raw.json", "imgs/"),
            splits={
                "train": SplitSize(images=34_054, identities=11_003, captions=68_126),
                "val": SplitSize(images=3_078, identities=1_000, captions=6_158),
                "test": SplitSize(images=3_074, identities=1_000, captions=6_156),
            },
            description="CUHK-PEDES (Li et al., CVPR 2017), two captions per image.",
        ),
        CorpusInfo(
            name="icfg-pedes",
            builder=IcfgPedes,
            expected_files=("ICFG-PEDES.json", "imgs/"),
            splits={
                "train": SplitSize(images=34_674, identities=3_102, captions=34_674),
                "test": SplitSize(images=19_848, identities=1_000, captions=19_848),
            },
            description="ICFG-PEDES (Ding et al., 2021), one caption per image, no validation split.",
        ),
        CorpusInfo(
            name="rstpreid",
            builder=RstpReid,
            expected_files=("data_captions.json", "imgs/"),
            splits={
                "train": SplitSize(images=18_505, identities=3_701, captions=37_010),
                "val": SplitSize(images=1_000, identities=200, captions=2_000),
                "test": SplitSize(images=1_000, identities=200, captions=2_000),
            },
            description="RSTPReid (Zhu et al., ACM MM 2021), 20,505 images of 4,101 identities, two captions each.",
        ),
        CorpusInfo(
            name="webperson",
            builder=WebPerson,
            expected_files=(),
            splits={"train": SplitSize(images=5_002_723, identities=5_002_723, captions=10_005_446)},
            description="WebPerson (Zheng et al., EMNLP 2025), web person images with two MLLM captions each.",
            notes=(
                f"data_dir is a Hub id (default {HUB_DATASET}), a folder of its Parquet files, or the raw form "
                "(a JSON list of {image_path: {caption1, caption2}} plus imgs/)."
            ),
        ),
        CorpusInfo(
            name="synth-pedes",
            builder=SynthPedes,
            expected_files=(),
            splits={
                "train": SplitSize(images=None, identities=None),
                "val": SplitSize(images=None, identities=None),
                "test": SplitSize(images=None, identities=None),
            },
            description="Procedurally generated pedestrians with captions and known noise tokens (no files).",
            notes="Sizes are SynthPedesConfig fields (num_train_ids=..., ...), passed to load_corpus as keywords.",
        ),
    )
}


def corpus_splits(name: str) -> tuple[str, ...]:
    """The splits a corpus has."""
    if name not in CORPORA:
        raise ValueError(f"Unknown corpus {name!r}; expected one of {sorted(CORPORA)}.")
    return tuple(CORPORA[name].splits)


# load_corpus keyword arguments that go to `download_and_prepare` rather than to the builder's config.
_PREPARE_KWARGS = ("num_proc", "download_mode")


def load_corpus(
    name: str,
    data_dir: str | os.PathLike | None = None,
    split: str | None = "train",
    streaming: bool = False,
    strict: bool = False,
    cache_dir: str | os.PathLike | None = None,
    **kwargs: Any,
) -> datasets.Dataset | datasets.IterableDataset | datasets.DatasetDict | datasets.IterableDatasetDict:
    """Build (once, then from the ``datasets`` cache) and return one split of a corpus in the common schema.

    Args:
        name: one of ``CORPORA``: "cuhk-pedes", "icfg-pedes", "rstpreid", "webperson", "synth-pedes".
        data_dir: the corpus folder (see ``CORPORA[name].expected_files``); for WebPerson also a Hub id,
            by default ``Kaichengalex/WebPerson-5M``. Not used by "synth-pedes".
        split: "train", "val" or "test", as the corpus has them; ``None``: a ``DatasetDict`` of every split the
            source has (a benchmark folder may lack one, e.g. "val").
        streaming: return an ``IterableDataset`` read from the sources as it is iterated, without a build
            ("synth-pedes" draws its rows as they are read).
        strict: fail on an unreadable image instead of skipping and counting it (synthetic images are always
            readable, so "synth-pedes" has nothing to check).
        cache_dir: the ``datasets`` cache folder (default ``HF_DATASETS_CACHE``).
        **kwargs: ``num_proc`` and ``download_mode`` go to ``download_and_prepare`` (a change to the
            annotation file or the image folder rebuilds by itself); the rest go to the builder config (``verify_images``, and for
            WebPerson's raw form ``annotation_file``, ``image_dir``; for "synth-pedes" the ``SynthPedesConfig``
            fields, such as ``num_train_ids``).
    """
    if name not in CORPORA:
        raise ValueError(f"Unknown corpus {name!r}; expected one of {sorted(CORPORA)}.")
    info = CORPORA[name]
    prepare_kwargs = {key: kwargs.pop(key) for key in _PREPARE_KWARGS if key in kwargs}
    if data_dir is not None and (Path(data_dir).exists() or info.builder is not WebPerson):
        # one cache entry per folder, however it is spelled (a WebPerson Hub id stays as it is)
        data_dir = os.path.abspath(os.path.expanduser(data_dir))
    builder = info.builder(
        data_dir=None if data_dir is None else str(data_dir),
        cache_dir=None if cache_dir is None else str(cache_dir),
        strict=strict,
        **kwargs,
    )
    if streaming:
        return builder.as_streaming_dataset(split=split)
    try:
        builder.download_and_prepare(**prepare_kwargs)
    except datasets.exceptions.DatasetGenerationError as error:
        # datasets wraps whatever the generator raised in a generic message: surface the builder's own.
        if isinstance(error.__cause__, (ValueError, OSError)):
            raise error.__cause__ from None
        raise
    return builder.as_dataset(split=split)


_GALLERY_COLUMNS = ["image", "person_id", "image_id"]
_QUERY_COLUMNS = ["caption", "person_id", "caption_id"]


def gallery_and_queries(dataset: datasets.Dataset) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Split an evaluation split (one row per caption) into the retrieval gallery and the text queries.

    Returns:
        ``(gallery, queries)``: the gallery has one row per unique ``image_id`` (columns image, person_id,
        image_id; first occurrence, in dataset order), the queries one row per caption (columns caption,
        person_id, caption_id). Both are views of ``dataset`` (no image is copied).
    """
    if not isinstance(dataset, datasets.Dataset):
        raise TypeError(
            f"gallery_and_queries needs a map-style datasets.Dataset, got {type(dataset).__name__}; "
            "load the evaluation split with streaming=False."
        )
    missing = sorted(set(_GALLERY_COLUMNS + _QUERY_COLUMNS) - set(dataset.column_names))
    if missing:
        raise ValueError(f"Dataset lacks column(s) {missing}; it has {dataset.column_names}.")
    ids = dataset.select_columns(["image_id", "person_id"]).with_format("numpy")
    image_ids, person_ids = ids["image_id"][:], ids["person_id"][:]
    _, first, inverse = np.unique(image_ids, return_index=True, return_inverse=True)
    conflicting = np.flatnonzero(person_ids != person_ids[first][inverse])
    if conflicting.size:
        row = int(conflicting[0])
        raise ValueError(
            f"Row {row} gives image_id {int(image_ids[row])} person_id {int(person_ids[row])}, but an earlier row "
            f"of the same image says {int(person_ids[first[inverse[row]]])}: one image has one identity."
        )
    gallery = dataset.select(np.sort(first)).select_columns(_GALLERY_COLUMNS)
    return gallery, dataset.select_columns(_QUERY_COLUMNS)


__all__ = ["CORPORA", "CorpusInfo", "SplitSize", "corpus_splits", "gallery_and_queries", "load_corpus"]
