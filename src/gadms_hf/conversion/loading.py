"""Read a checkpoint file without running code from it, and convert it.

`.pth` / `.pt` / `.bin` files go through `torch.load(weights_only=True)`, which unpickles
tensors, containers and plain numbers only: a file that needs a custom class (a pickled
`argparse.Namespace`, a whole model) is refused rather than trusted. `.safetensors` files
hold tensors only by design. Training checkpoints keep the weights under `model` (IRRA's
`Checkpointer`) or `state_dict`; DDP adds `module.` to every key; both are undone here.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..modeling_gadms import GADMSModel
from .openai_clip import ConversionReport, MaskSource, convert_openai_state_dict

_WRAPPER_KEYS = ("model", "state_dict")
_DDP_PREFIX = "module."


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, unwrapped from `model` / `state_dict` and DDP's `module.`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist or is not a file")
    if path.suffix == ".safetensors":
        try:
            return load_file(path)
        except SafetensorError as err:
            raise ValueError(f"{path} is not a safetensors file that can be read ({err})") from err
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except (KeyError, EOFError) as err:  # what torch's legacy reader raises on a file it does not recognise
        raise ValueError(f"{path} is not a PyTorch checkpoint (expected a file written by torch.save, or "
                         ".safetensors)") from err
    except pickle.UnpicklingError as err:
        if "Unsupported operand" in str(err):  # not a pickle at all, rather than one that needs code
            raise ValueError(f"{path} is not a PyTorch checkpoint (expected a file written by torch.save, or "
                             ".safetensors)") from err
        # torch's message is a long how-to; its "WeightsUnpickler error" line names what needs code.
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        reason = next((line for line in lines if "WeightsUnpickler error" in line), lines[0] if lines else "")
        raise ValueError(
            f"{path} cannot be read without running code stored in it, so it is refused "
            f"(torch.load(weights_only=True): {reason}). In an environment you trust, re-save only its "
            "tensors, e.g. torch.save({'model': checkpoint['model']}, 'weights.pth')"
        ) from err
    except RuntimeError as err:
        raise ValueError(
            f"{path} is not a tensor checkpoint torch.load(weights_only=True) can read ({err}). OpenAI's "
            "original .pt files are TorchScript archives: in a trusted environment save "
            "torch.jit.load(path).state_dict() with torch.save first"
        ) from err
    if not isinstance(content, Mapping):
        raise ValueError(f"{path} holds a {type(content).__name__}, expected a dict of tensors")
    for key in _WRAPPER_KEYS:
        if isinstance(content.get(key), Mapping):
            content = content[key]
            break
    state = dict(content)
    if state and all(key.startswith(_DDP_PREFIX) for key in state):
        state = {key.removeprefix(_DDP_PREFIX): value for key, value in state.items()}
    return state


def load_authors_checkpoint(
    path: str | Path,
    image_size: tuple[int, int] = (384, 128),
    source_mask_id: MaskSource = "auto",
    **config_overrides,
) -> tuple[GADMSModel, ConversionReport]:
    """Convert the authors' released GA-DMS `.pth` (or any OpenAI-format CLIP file) to a `GADMSModel`.

    See [`convert_openai_state_dict`] for the arguments; the report also records the file's sha256.
    """
    model, report = convert_openai_state_dict(
        load_state_dict_file(path), image_size, source_mask_id, source=Path(path).name, **config_overrides
    )
    report.sha256 = file_sha256(path)
    return model, report


__all__ = ["file_sha256", "load_authors_checkpoint", "load_state_dict_file"]
