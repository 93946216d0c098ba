"""Initialise a `GADMSModel` from a transformers `CLIPModel`, and what every CLIP conversion shares.

A CLIP checkpoint differs from a GA-DMS model in two places whatever its format: its positional
table is a square grid for square images (GA-DMS takes 384 x 128 pedestrians), and its vocabulary
has no `<|mask|>` row. Both are fixed once, here, at conversion, never at forward time. This file
converts a transformers `CLIPModel` (`GADMSModel.from_clip`); `openai_clip.py` converts
OpenAI-format state dicts and the authors' checkpoints with the same two steps.

Conversion is not part of the model shipped to the Hub: `modeling_gadms.py` imports this lazily,
so the remote code needs only the model.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPModel, PreTrainedModel

CLIP_VOCAB_SIZE = 49408
# Our tokenizer keeps every CLIP BPE token and appends `<|mask|>` after them.
GADMS_MASK_ID = CLIP_VOCAB_SIZE
CLIP_TOKEN_IDS = dict(bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)


def resize_positions(table: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Resize a CLIP positional table (1 + g*g, D) to (1 + grid[0]*grid[1], D), bilinear; CLS kept."""
    cls_pos, patch_pos = table[:1], table[1:]
    side = int(round(patch_pos.shape[0] ** 0.5))
    if side * side != patch_pos.shape[0]:
        raise ValueError(f"positional table of {patch_pos.shape[0]} patches is not a square grid")
    if (side, side) == tuple(grid):
        return table.clone()
    image = patch_pos.reshape(1, side, side, -1).permute(0, 3, 1, 2).float()
    resized = nn.functional.interpolate(image, size=grid, mode="bilinear", align_corners=False)
    resized = resized.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1).to(table.dtype)
    return torch.cat([cls_pos, resized])


def with_mask_row(table: torch.Tensor, source_row: int | None = None) -> torch.Tensor:
    """`table` (V, D) plus a `<|mask|>` row at index V: a copy of `source_row`, or the mean row (in float32)."""
    row = table[source_row] if source_row is not None else table.float().mean(0).to(table.dtype)
    return torch.cat([table, row.unsqueeze(0)])


def convert_clip_model(
    clip: str | CLIPModel,
    image_size: tuple[int, int] = (384, 128),
    mask_token_id: int | None = None,
    *,
    model_class: type[PreTrainedModel],
    **config_overrides,
) -> PreTrainedModel:
    """The body of `GADMSModel.from_clip` (documented there); `model_class` is the class it was called on.

    The class comes in as an argument rather than an import, so that this converter and the model file
    (which calls it lazily) do not import each other.

    Raises:
        ValueError: a tower weight found no place in the model, or a model weight other than the
            fresh heads' was left unset.
    """
    if not isinstance(clip, CLIPModel):
        clip = CLIPModel.from_pretrained(clip)
    text_cfg = clip.config.text_config.to_dict()
    vision_cfg = clip.config.vision_config.to_dict()
    old_vocab = text_cfg["vocab_size"]
    text_cfg.update(vocab_size=old_vocab + 1, **CLIP_TOKEN_IDS)
    vision_cfg.update(image_size=list(image_size))
    for key in ("model_type", "transformers_version", "architectures"):
        text_cfg.pop(key, None)
        vision_cfg.pop(key, None)
    config_class = model_class.config_class
    config_overrides.setdefault("mask_token_id", mask_token_id if mask_token_id is not None else old_vocab)
    config_overrides.setdefault(
        "gass_num_layers", min(config_class.gass_num_layers, text_cfg["num_hidden_layers"])
    )
    config = config_class(
        text_config=text_cfg, vision_config=vision_cfg, projection_dim=clip.config.projection_dim, **config_overrides
    )
    model = model_class(config)
    state = {f"text_model.{key}": value for key, value in clip.text_model.state_dict().items()}
    state.update({f"vision_model.{key}": value for key, value in clip.vision_model.state_dict().items()})
    state["text_projection.weight"] = clip.text_projection.weight
    state["visual_projection.weight"] = clip.visual_projection.weight

    tokens = "text_model.embeddings.token_embedding.weight"
    state[tokens] = with_mask_row(state[tokens])
    positions = "vision_model.embeddings.position_embedding.weight"
    state[positions] = resize_positions(state[positions], model.vision_model.embeddings.grid)

    missing, unexpected = model.load_state_dict(state, strict=False)
    unexpected = [k for k in unexpected if not k.endswith("position_ids")]
    missing = [k for k in missing if not k.startswith(("cross_modal.", "classifier."))]
    if missing or unexpected:
        raise ValueError(f"CLIP conversion left weights unmatched: missing={missing}, unexpected={unexpected}")
    return model


__all__ = [
    "CLIP_TOKEN_IDS",
    "CLIP_VOCAB_SIZE",
    "GADMS_MASK_ID",
    "convert_clip_model",
    "resize_positions",
    "with_mask_row",
]
