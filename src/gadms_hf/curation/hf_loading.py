"""Device/dtype choice and fail-fast loading of the transformers models used for curation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .errors import CurationSetupError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(device: str) -> str:
    """`"auto"` -> the first CUDA device when there is one, else the CPU; anything else unchanged."""
    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """`"auto"` -> bfloat16 on GPU (what the Qwen VL/instruct checkpoints are trained in), float32 on CPU."""
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if dtype not in DTYPES:
        raise CurationSetupError(f"unknown dtype {dtype!r}; expected 'auto' or one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def load_pretrained(loader: Callable[..., Any], name: str, role: str, **kwargs: Any) -> Any:
    """`loader(name, **kwargs)`, with any failure turned into one `CurationSetupError` naming the model."""
    try:
        return loader(name, **kwargs)
    except (OSError, ValueError, KeyError, ImportError, RuntimeError) as exc:
        raise CurationSetupError(
            f"cannot load the {role} {name!r}: {type(exc).__name__}: {exc}\nOffline (HF_HUB_OFFLINE=1) the "
            f"model must already be in the Hugging Face cache (`hf download {name}` on a connected machine) "
            "or be a local folder holding config, weights and processor/tokenizer files."
        ) from exc


__all__ = ["resolve_device", "resolve_dtype", "load_pretrained", "DTYPES"]
