"""Where a model comes from: a local folder or a Hub id, and the errors a user can act on.

Scripts that train, evaluate or search all take `--model_name_or_path`; a typo in a local path
would otherwise surface as a Hub download error (or a network timeout offline). Kept out of the
model file and out of `training/` so that evaluation and search scripts need neither.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


def check_model_source(name: str) -> None:
    """Fail early, naming the folder, when a local model path does not exist (instead of a Hub error)."""
    if os.path.isdir(name):
        return
    if os.path.exists(name):
        raise ValueError(f"--model_name_or_path {name} is a file; expected a model folder or a Hub id")
    parts = name.split("/")
    hub_like = len(parts) <= 2 and all(parts) and not name.startswith((".", "~")) and not os.path.isdir(parts[0])
    if not hub_like:
        raise FileNotFoundError(
            f"model folder {name} does not exist (looked for {os.path.abspath(name)}); a Hub id would be "
            "user/name and needs the network"
        )


@contextlib.contextmanager
def loading_model_from(name: str) -> Iterator[None]:
    """Around loading `name`: a missing local folder says so; a Hub id that cannot load says why."""
    check_model_source(name)
    try:
        yield
    except OSError as error:
        if os.path.isdir(name):
            raise
        reason = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
        raise OSError(
            f"model folder {name} does not exist (looked for {os.path.abspath(name)}), and as a Hub id it could "
            f"not be loaded either (a Hub id needs the network): {reason}"
        ) from error


__all__ = ["check_model_source", "loading_model_from"]
