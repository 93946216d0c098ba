"""`datasets` builder for SynthPEDES, the procedural pedestrian corpus of `gadms_hf.data.synth`.

Nothing is downloaded: the "source data" is the generator. Every `SynthPedesConfig` field is a
builder-config field, so `SynthPedes(num_train_ids=50)` caches separately from the default, and
the cache is also keyed on the generator's source code, so editing the drawing code never
serves stale images. The builder takes the keywords `load_corpus` gives every builder, so
SynthPEDES is registered in `CORPORA` like the corpora read from files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import os
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import datasets

from .. import synth
from ..synth import SynthPedesConfig, generate_examples, synth_config_fields
from ..synth.streams import split_stream
from ._common import FEATURES

# The schema every corpus shares, plus the planted noise as [start, end) character offsets.
SYNTH_PEDES_FEATURES = datasets.Features(
    {**FEATURES, "noise_spans": datasets.List(datasets.List(datasets.Value("int64"), length=2))}
)
_PERSONS_PER_SHARD = 50  # unit of work that `download_and_prepare(num_proc=...)` spreads over processes
# Keywords of `datasets.DatasetBuilder` itself; every other keyword of `SynthPedes` is a corpus option.
_BUILDER_KEYWORDS = frozenset(inspect.signature(datasets.DatasetBuilder.__init__).parameters) - {"self", "config_kwargs"}


@lru_cache(maxsize=1)
def _code_fingerprint() -> str:
    """A hash of every generator module and of this one: what the corpus bytes are a function of."""
    digest = hashlib.sha256()
    for path in (*sorted(Path(synth.__file__).parent.glob("*.py")), Path(__file__)):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _corpus_options(options: dict[str, Any]) -> dict[str, Any]:
    """`options` checked against `SynthPedesConfig` (with a clear message, before `datasets` wraps it), less
    those at their default: one corpus is then one cache entry however it is spelled."""
    unknown = sorted(set(options) - set(synth_config_fields()))
    if unknown:
        raise ValueError(
            f"unknown SynthPEDES option(s) {unknown}; expected some of {list(synth_config_fields())}"
        )
    SynthPedesConfig(**options)
    defaults = SynthPedesConfig()
    return {name: value for name, value in options.items() if value != getattr(defaults, name)}


@dataclasses.dataclass
class SynthPedesBuilderConfig(datasets.BuilderConfig, SynthPedesConfig):
    """A builder config that carries every `SynthPedesConfig` field (and validates them)."""

    def __post_init__(self) -> None:
        datasets.BuilderConfig.__post_init__(self)
        SynthPedesConfig.__post_init__(self)

    def synth_config(self) -> SynthPedesConfig:
        return SynthPedesConfig(
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(SynthPedesConfig)}
        )


class SynthPedes(datasets.GeneratorBasedBuilder):
    """SynthPEDES: `train` (captions with planted, span-annotated noise), `val` and `test` (clean
    captions), with disjoint identities.

    Keywords other than `datasets.DatasetBuilder`'s are `SynthPedesConfig` fields. `data_dir` must stay
    unset (nothing is read from files) and `strict` is accepted as every corpus takes it (drawn images
    are always readable). Streaming (`as_streaming_dataset`) draws the rows as they are read.

    Example: `builder = SynthPedes(cache_dir=..., num_train_ids=50); builder.download_and_prepare();
    builder.as_dataset("train")`.
    """

    BUILDER_CONFIG_CLASS = SynthPedesBuilderConfig
    VERSION = datasets.Version("1.0.0")

    def __init__(self, *, data_dir: str | None = None, strict: bool = False, **kwargs: Any) -> None:
        if data_dir is not None:
            raise ValueError(f"SynthPEDES is generated, not read from files: leave data_dir unset (got {data_dir!r}).")
        options = {name: kwargs.pop(name) for name in list(kwargs) if name not in _BUILDER_KEYWORDS}
        kwargs.setdefault("hash", _code_fingerprint())
        super().__init__(**kwargs, **_corpus_options(options))

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=(
                "Procedural pedestrians with attribute captions; train captions carry planted noise "
                "phrases whose character spans are in `noise_spans`."
            ),
            features=SYNTH_PEDES_FEATURES,
        )

    def _split_generators(self, dl_manager: datasets.DownloadManager) -> list[datasets.SplitGenerator]:
        config = self.config.synth_config()
        generators = []
        for name, split in (("train", datasets.Split.TRAIN), ("val", "val"), ("test", datasets.Split.TEST)):
            count = config.num_ids(name)
            ranges = [
                (start, min(start + _PERSONS_PER_SHARD, count))
                for start in range(0, count, _PERSONS_PER_SHARD)
            ]
            generators.append(
                datasets.SplitGenerator(name=split, gen_kwargs={"split": name, "person_ranges": ranges})
            )
        return generators

    def _generate_examples(
        self, split: str, person_ranges: list[tuple[int, int]]
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        yield from generate_examples(self.config.synth_config(), split, person_ranges)


def _prepared_builder(
    cache_dir: str | os.PathLike | None,
    options: dict[str, Any],
    num_proc: int | None,
    download_mode: str | None,
) -> SynthPedes:
    builder = SynthPedes(cache_dir=None if cache_dir is None else str(cache_dir), **options)
    builder.download_and_prepare(num_proc=num_proc, download_mode=download_mode)
    return builder


def generate_synth_pedes(
    config: SynthPedesConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
    num_proc: int | None = None,
    download_mode: str | None = None,
) -> datasets.DatasetDict:
    """Every split of a SynthPEDES corpus, built once and then read from the `datasets` cache.

    `download_mode="force_redownload"` rebuilds; `num_proc` spreads the drawing over processes.
    """
    options = dataclasses.asdict(config) if config is not None else {}
    return _prepared_builder(cache_dir, options, num_proc, download_mode).as_dataset()


def load_synth_pedes(
    split: str = "train",
    cache_dir: str | os.PathLike | None = None,
    num_proc: int | None = None,
    download_mode: str | None = None,
    **overrides: Any,
) -> datasets.Dataset:
    """One split ("train", "val" or "test") of SynthPEDES; `overrides` are `SynthPedesConfig` fields
    (e.g. `num_train_ids=50`), the rest as in `generate_synth_pedes`."""
    split_stream(split)
    return _prepared_builder(cache_dir, overrides, num_proc, download_mode).as_dataset(split=split)


__all__ = [
    "SYNTH_PEDES_FEATURES",
    "SynthPedes",
    "SynthPedesBuilderConfig",
    "generate_synth_pedes",
    "load_synth_pedes",
]
