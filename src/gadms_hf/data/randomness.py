"""Counter-based randomness: every random draw of a sample is a function of (seed, epoch, key).

A resumed run must replay exactly the batches an uninterrupted run would have seen. Stateful
RNGs cannot promise that: data-loader workers are re-seeded per epoch and accelerate fetches one
batch ahead, so the RNG state saved in a checkpoint is already past the next batch. Seeding each
augmentation and each batch's masks from what they are about (seed, epoch, caption ids) makes
them independent of workers, prefetching and process count.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def derive_seed(seed: int, epoch: int, keys: Sequence[int]) -> int:
    """A 63-bit seed, well mixed across `seed`, `epoch` and every key (numpy's SeedSequence)."""
    entropy = [int(seed) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF, *(int(k) & 0xFFFFFFFFFFFFFFFF for k in keys)]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


__all__ = ["derive_seed"]
