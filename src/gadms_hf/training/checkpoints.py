"""Checkpoint folders that appear complete or not at all.

The Trainer writes `checkpoint-N` in place, file after file, so a run killed during a save leaves a
folder that looks like the newest checkpoint and cannot be resumed from. `GADMSTrainer` instead
writes every part (score bank, weights, optimiser, RNG states, trainer state) into
`_tmp-checkpoint-N/checkpoint-N` and then renames it to `checkpoint-N`, a single atomic step on one
file system. What a killed save leaves is a `_tmp-*` folder, which the Trainer's own checkpoint
lookups never match, `remove_partial_checkpoints` deletes and Hub uploads skip (`_*`).
"""

from __future__ import annotations

import logging
import os
import re
import shutil

from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

logger = logging.getLogger("gadms_hf")

STAGING_PREFIX = f"_tmp-{PREFIX_CHECKPOINT_DIR}-"
_CHECKPOINT = re.compile(rf"{PREFIX_CHECKPOINT_DIR}-(\d+)")


def staging_root(run_dir: str, step: int) -> str:
    """The folder a save at `step` writes into; its `checkpoint-<step>` is then moved up to `run_dir`."""
    return os.path.join(run_dir, f"{STAGING_PREFIX}{step}")


def is_complete(folder: str) -> bool:
    """The trainer state is the last part written, so its presence marks a whole checkpoint."""
    return os.path.isfile(os.path.join(folder, TRAINER_STATE_NAME))


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The highest-step `checkpoint-N` in `output_dir` with its trainer state, or None.

    A `checkpoint-N` without one (an interrupted in-place save by an older version) is named in a
    warning and passed over; saving step N again replaces it.
    """
    if not os.path.isdir(output_dir):
        return None
    complete = []
    for name in os.listdir(output_dir):
        match = _CHECKPOINT.fullmatch(name)
        path = os.path.join(output_dir, name)
        if match is None or not os.path.isdir(path):
            continue
        if is_complete(path):
            complete.append((int(match.group(1)), path))
        else:
            logger.warning("ignoring %s: it has no %s (its save was interrupted)", path, TRAINER_STATE_NAME)
    return max(complete)[1] if complete else None


def remove_partial_checkpoints(output_dir: str) -> list[str]:
    """Delete the staging folders of saves that were interrupted; returns their paths."""
    if not os.path.isdir(output_dir):
        return []
    removed = []
    for name in sorted(os.listdir(output_dir)):
        path = os.path.join(output_dir, name)
        if name.startswith(STAGING_PREFIX) and os.path.isdir(path):
            shutil.rmtree(path)
            logger.warning("removed %s: a checkpoint save that was interrupted before it completed", path)
            removed.append(path)
    return removed


def publish_checkpoint(staged: str, final: str) -> None:
    """Move the fully written `staged` folder to `final`, replacing a checkpoint of the same step.

    A previous `final` is first moved into the (hidden) staging root, so at every instant `final`
    is either the old complete checkpoint, absent, or the new complete one.
    """
    root = os.path.dirname(staged)
    if os.path.exists(final):
        os.replace(final, os.path.join(root, "replaced"))
    os.replace(staged, final)
    shutil.rmtree(root)


__all__ = [
    "STAGING_PREFIX",
    "staging_root",
    "is_complete",
    "last_complete_checkpoint",
    "remove_partial_checkpoints",
    "publish_checkpoint",
]
