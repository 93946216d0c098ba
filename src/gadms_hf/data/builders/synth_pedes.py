"""`datasets` builder for SynthPEDES, the procedural pedestrian corpus of `gadms_hf.data.synthetic`.

Nothing is downloaded: the "source data" is the generator. Every `SynthPedesConfig` field is a
builder-config field, so `SynthPedes(num_train_ids=50)` caches separately from the default, and
the cache is also keyed on the generator's source code, so editing the drawing code never
serves stale images.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import datasets

from .. import synthetic
from ..synthetic import SYNTH_PEDES_FEATURES, SynthPedesConfig, generate_examples

_PERSONS_PER_SHARD = 50  # unit of work that `download_and_prepare(num_proc=...)` spreads over processes


@lru_cache(maxsize=1)
def _code_fingerprint() -> str:
    digest = hashlib.sha256()
    source = Path(synthetic.__file__)
    for path in (source, source.with_name("synth_noise.py"), Path(__file__)):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


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
    """SynthPEDES: `train` (captions with planted, span-annotated noise), `test` and `val` (clean
    captions), with disjoint identities.

    Example: `builder = SynthPedes(cache_dir=..., num_train_ids=50); builder.download_and_prepare();
    builder.as_dataset("train")`.
    """

    BUILDER_CONFIG_CLASS = SynthPedesBuilderConfig
    VERSION = datasets.Version("1.0.0")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("hash", _code_fingerprint())
        super().__init__(*args, **kwargs)

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
        for name, split in (("train", datasets.Split.TRAIN), ("test", datasets.Split.TEST), ("val", "val")):
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


__all__ = ["SynthPedes", "SynthPedesBuilderConfig"]
