"""Hold identities out of a training split, for corpora that have no validation split.

ICFG-PEDES and WebPerson ship train and test only; selecting a model on test makes the test score
optimistic. Whole identities are held out (a person seen in training would make retrieval easier),
chosen by a seed so that a run can be repeated and its record checked.
"""

from __future__ import annotations

import datasets
import numpy as np

MIN_HELD_OUT = 2  # one identity would make every ranking perfect


def hold_out_identities(dataset: datasets.Dataset, fraction: float, seed: int
                        ) -> tuple[datasets.Dataset, datasets.Dataset, list[int]]:
    """Split off `fraction` of the identities (at least two) of a one-row-per-caption split.

    Returns:
        ``(rest, held_out, person_ids)``: the remaining rows with ``person_id`` re-indexed to
        ``0..K-1`` in the order of the old ids (the ID head needs contiguous labels), the held-out rows
        with their ids unchanged, and the held-out ``person_id`` values, sorted.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"--holdout_fraction={fraction} must be between 0 and 1")
    person_ids = np.asarray(dataset.select_columns(["person_id"]).with_format("numpy")["person_id"][:])
    identities = np.unique(person_ids)
    count = max(MIN_HELD_OUT, round(fraction * len(identities)))
    if count >= len(identities):
        raise ValueError(
            f"cannot hold out {count} of {len(identities)} identities and still train on the rest; "
            "use a corpus with a validation split or a smaller --holdout_fraction"
        )
    held = np.sort(np.random.default_rng(seed).choice(identities, size=count, replace=False))
    is_held = np.isin(person_ids, held)
    rest = dataset.select(np.flatnonzero(~is_held))
    kept = np.unique(person_ids[~is_held])
    contiguous = np.searchsorted(kept, person_ids[~is_held])
    features = rest.features.copy()
    rest = rest.remove_columns("person_id").add_column("person_id", contiguous.tolist())
    rest = rest.cast_column("person_id", features["person_id"]).select_columns(list(features))
    return rest, dataset.select(np.flatnonzero(is_held)), held.tolist()


__all__ = ["hold_out_identities"]
