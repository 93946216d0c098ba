"""LoRA fine-tuning of a GADMSModel through `peft`, and the merge back into a plain model.

Low-rank adapters go on the attention projections of both CLIP towers (by default). The
heads that fine-tuning adds or re-purposes, the cross-modal MIM head and the ID classifier,
are not low-rank updates of anything useful: they stay fully trainable (`modules_to_save`).

The target modules are matched by a pattern anchored in the towers' encoder layers, because
the cross-modal head's `nn.MultiheadAttention` also has an `out_proj` and reads its weight
directly (a LoRA layer there would be bypassed or break it).

GASS keeps working under LoRA: its forward hooks sit on `self_attn.q_proj` etc., which peft
replaces by LoRA layers whose output is the adapted projection, so the scores are those of
the adapted model.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from ..modeling_gadms import GADMSModel

logger = logging.getLogger("gadms_hf")

DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "out_proj")
TRAINABLE_HEADS = ("cross_modal", "classifier")
ADAPTER_SUBDIR = "_adapter"  # "_*": the Trainer's Hub upload skips it and publishes the merged model alone
_TOWERS = ("text_model", "vision_model")


def _tower_linear_names(model: GADMSModel) -> set[str]:
    """Last name component of every Linear inside the towers' encoder layers (what LoRA can target)."""
    prefix = re.compile(rf"({'|'.join(_TOWERS)})\.encoder\.layers\.\d+\.")
    return {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and prefix.match(name)
    }


def lora_target_pattern(target_modules: Sequence[str]) -> str:
    """A regex (peft full-matches it against module names) selecting `target_modules` in both towers' layers."""
    names = "|".join(re.escape(name) for name in target_modules)
    return rf"({'|'.join(_TOWERS)})\.encoder\.layers\.\d+\.(.+\.)?({names})"


def apply_lora(
    model: GADMSModel,
    r: int = 8,
    alpha: float | None = None,
    dropout: float = 0.0,
    target_modules: Sequence[str] = DEFAULT_TARGET_MODULES,
) -> PeftModel:
    """Wrap `model` with LoRA adapters of rank `r` on `target_modules` of both towers.

    `alpha` defaults to `2 * r` (scaling alpha / r = 2). Everything else is frozen except the
    cross-modal head and the ID classifier, which are trained in full and saved with the adapter.
    """
    if r < 1:
        raise ValueError(f"LoRA rank r={r} must be >= 1")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"lora dropout={dropout} must be in [0, 1)")
    target_modules = [name.strip() for name in target_modules if name.strip()]
    if not target_modules:
        raise ValueError("lora target_modules is empty; the default is " + ",".join(DEFAULT_TARGET_MODULES))
    available = _tower_linear_names(model)
    unknown = sorted(set(target_modules) - available)
    if unknown:
        raise ValueError(
            f"lora target_modules {unknown} name no Linear layer in the towers' encoder layers; "
            f"choose from {sorted(available)}"
        )
    heads = [name for name in TRAINABLE_HEADS if getattr(model, name, None) is not None]
    config = LoraConfig(
        r=r,
        lora_alpha=2 * r if alpha is None else alpha,
        lora_dropout=dropout,
        target_modules=lora_target_pattern(target_modules),
        modules_to_save=heads or None,
    )
    peft_model = get_peft_model(model, config)
    trainable, total = peft_model.get_nb_trainable_parameters()
    logger.info(
        "LoRA r=%d on %s of both towers (fully trained: %s): %d of %d parameters trainable (%.2f%%)",
        r, ",".join(target_modules), ",".join(heads) or "none", trainable, total, 100.0 * trainable / total,
    )
    return peft_model


def merge_and_save(peft_model: PeftModel, processor, output_dir: str | os.PathLike) -> GADMSModel:
    """Save the adapters to `<output_dir>/_adapter`, merge them, and save the merged model + processor
    to `output_dir`, which `AutoModel.from_pretrained` then loads as a plain `GADMSModel`.

    `peft_model` is consumed: merging rewrites its base model in place. Returns the merged model.
    """
    output_dir = os.fspath(output_dir)
    stray = os.path.join(output_dir, "adapter_config.json")
    if os.path.isfile(stray):
        # transformers' AutoModel would load an adapter found there instead of the merged weights.
        raise ValueError(
            f"{stray} exists: AutoModel.from_pretrained({output_dir!r}) would load that adapter instead of the "
            f"merged model; remove it (adapters belong in {os.path.join(output_dir, ADAPTER_SUBDIR)})"
        )
    peft_model.save_pretrained(os.path.join(output_dir, ADAPTER_SUBDIR))
    merged = peft_model.merge_and_unload()
    leftovers = [name for name, module in merged.named_modules() if type(module).__module__.startswith("peft.")]
    if leftovers or not isinstance(merged, GADMSModel):
        raise RuntimeError(f"merging left peft layers behind: {leftovers[:5]} (model {type(merged).__name__})")
    merged.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    return merged


__all__ = ["apply_lora", "merge_and_save", "lora_target_pattern", "DEFAULT_TARGET_MODULES", "ADAPTER_SUBDIR"]
