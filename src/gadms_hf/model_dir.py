"""Is a local folder a GA-DMS model directory? One answer for the model's loader and for training.

`GADMSModel.from_pretrained` checks a folder before transformers reads it, so that a missing or
foreign `config.json` fails with the file and the expected `model_type` named, not deep inside
transformers; training asks the same question to choose between loading a GA-DMS model and
converting a CLIP checkpoint. Shipped to the Hub with the model (remote code): only the flat
relative import of the configuration.
"""

from __future__ import annotations

import json
import os

from .configuration_gadms import GADMSConfig


def _model_type(config_file: str) -> str | None:
    """The `model_type` that `config_file` declares; ValueError naming the file if it is not JSON."""
    try:
        with open(config_file, encoding="utf-8") as handle:
            return json.load(handle).get("model_type")
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_file} is not valid JSON: {error}") from error


def check_model_dir(path: str | os.PathLike) -> None:
    """Raise unless `path` holds a `config.json` whose `model_type` is GA-DMS's.

    Raises:
        FileNotFoundError: `config.json` is missing.
        ValueError: `config.json` is not JSON, or declares another `model_type`.
    """
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"{config_file} is missing: a GA-DMS model directory holds config.json + model.safetensors")
    model_type = _model_type(config_file)
    if model_type != GADMSConfig.model_type:
        raise ValueError(
            f"{config_file} has model_type={model_type!r}, expected {GADMSConfig.model_type!r}; "
            "for a CLIP checkpoint use GADMSModel.from_clip(...)"
        )


def is_gadms_dir(path: str | os.PathLike) -> bool:
    """Whether `path` holds a `config.json` declaring GA-DMS's `model_type` (False without one).

    Raises:
        ValueError: `config.json` exists but is not JSON.
    """
    config_file = os.path.join(path, "config.json")
    return os.path.isfile(config_file) and _model_type(config_file) == GADMSConfig.model_type


__all__ = ["check_model_dir", "is_gadms_dir"]
