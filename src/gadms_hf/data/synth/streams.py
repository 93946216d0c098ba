"""Random streams of SynthPEDES: every draw is a function of (seed, key), never of generation order.

Each image and each caption of each split, and the identities, have a stream of their own, so that
results do not depend on sharding or on the order of generation, and changing one part of the
corpus (its planted noise, the size of val) leaves every other part's draws as they were.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

SPLITS = ("train", "test", "val")
# Random-stream key of each split's images and captions. Key 2 is the identity stream, and the val split
# came later: these keys keep every train and test image and caption what it was before val existed.
_SPLIT_STREAMS = {"train": 0, "test": 1, "val": 3}
IDENTITY_STREAM = 2


def split_stream(split: str) -> int:
    """The stream key of `split`'s images and captions (a ValueError for a split SynthPEDES lacks)."""
    if split not in SPLITS:
        raise ValueError(f"unknown SynthPEDES split {split!r}; expected one of {SPLITS}")
    return _SPLIT_STREAMS[split]


def stream_rng(seed: int, *key: int) -> np.random.Generator:
    """An independent stream per (seed, key); keys are padded to one length because
    numpy's SeedSequence treats trailing zeros as absent ([1, 2] and [1, 2, 0] collide)."""
    if len(key) > 4:
        raise ValueError(f"random stream keys have at most 4 parts, got {key}")
    return np.random.default_rng([seed, *key, *([0] * (4 - len(key))), 1])


def choice(rng: np.random.Generator, options: Sequence[Any], p: Sequence[float] | None = None) -> Any:
    """`rng.choice` for short lists, at a tenth of its cost (it is called ~40 times per image)."""
    if p is None:
        return options[int(rng.integers(len(options)))]
    index = bisect.bisect_right(list(itertools.accumulate(p)), rng.random() * sum(p))
    return options[min(index, len(options) - 1)]


__all__ = ["IDENTITY_STREAM", "SPLITS", "choice", "split_stream", "stream_rng"]
