"""Dual masking (docs/method.md §5): token scores -> selection probabilities -> two masked caption copies.

From one tokenised caption and its score-bank row, GA-DMS makes

- an *informative* copy for masked-token prediction (MIM): high-score tokens are likely masked, and
  the masked positions become the labels;
- a *noise-suppressed* copy for the image-text alignment loss: low-score tokens (words the image does
  not bear out) are likely masked, so they stop pulling the caption embedding away from its image.

Everything here is a tensor operation over the whole batch (no Python loop over tokens), and every
random draw comes from the `generator` passed in, so a seeded generator reproduces the masks exactly.

The constants come as a `MaskingParams`, declared and validated once in `configuration_gadms.py`
(which `GADMSConfig` inherits) and re-exported here beside the functions that take it. Beyond that
file this one imports nothing from the package, so that it can ship next to the model as remote code.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import torch

from .configuration_gadms import MaskingParams

IGNORE_INDEX = -100


class DualMask(NamedTuple):
    """The two masked copies of a batch of captions, all `(batch, length)` int64 tensors.

    - `noisy_input_ids`: the noise-suppressed copy, fed to the alignment loss.
    - `mim_input_ids`: the informative copy, fed to the MIM head.
    - `mim_labels`: the original id where `mim_input_ids` was selected, `-100` elsewhere.
    """

    noisy_input_ids: torch.Tensor
    mim_input_ids: torch.Tensor
    mim_labels: torch.Tensor


def mim_select_prob(scores: torch.Tensor, params: MaskingParams) -> torch.Tensor:
    """Probability that each token is selected in the informative (MIM) copy.

    `gass`: `mim_max_prob * sigmoid(mim_sigmoid_slope * (s - mim_sigmoid_center))`, rising with the score;
    `random`: the constant `random_mask_prob` (the IRRA baseline); `none`: zero.
    """
    scores = scores.float()
    if params.masking == "gass":
        return params.mim_max_prob * torch.sigmoid(
            params.mim_sigmoid_slope * (scores - params.mim_sigmoid_center)
        )
    if params.masking == "random":
        return torch.full_like(scores, params.random_mask_prob)
    return torch.zeros_like(scores)


def noise_select_prob(scores: torch.Tensor, params: MaskingParams) -> torch.Tensor:
    """Probability that each token is selected in the noise-suppressed copy.

    `gass`: `noise_max_prob * sigmoid(noise_sigmoid_slope * ((1 - s) - noise_sigmoid_center))`, rising as
    the score falls; `random` and `none`: zero (those baselines align on the clean caption).
    """
    scores = scores.float()
    if params.masking == "gass":
        return params.noise_max_prob * torch.sigmoid(
            params.noise_sigmoid_slope * ((1.0 - scores) - params.noise_sigmoid_center)
        )
    return torch.zeros_like(scores)


def _first_true(mask: torch.Tensor) -> torch.Tensor:
    """Boolean tensor that is True only at the first True of each row."""
    return mask & (mask.cumsum(dim=1) == 1)


def _ordinary_ids(vocab_size: int, special_ids: torch.Tensor) -> torch.Tensor:
    """All ids in `[0, vocab_size)` that are not special: the pool of BERT-rule random replacements."""
    candidates = torch.arange(vocab_size, device=special_ids.device)
    ordinary = candidates[~torch.isin(candidates, special_ids)]
    if ordinary.numel() == 0:
        raise ValueError(f"vocab_size={vocab_size} leaves no ordinary token once special ids are excluded")
    return ordinary


def _corrupt(
    input_ids: torch.Tensor,
    selected: torch.Tensor,
    forced: torch.Tensor,
    params: MaskingParams,
    mask_token_id: int,
    ordinary_ids: torch.Tensor,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Apply the BERT rule to `selected` positions; `forced` (at-least-one) positions always get the mask."""
    draw = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)
    pick = torch.randint(ordinary_ids.numel(), input_ids.shape, generator=generator, device=input_ids.device)
    to_mask = (selected & (draw < params.mask_replace_prob)) | forced
    to_random = selected & ~to_mask & (draw < params.mask_replace_prob + params.random_replace_prob)
    out = input_ids.clone()
    out[to_random] = ordinary_ids[pick[to_random]]
    out[to_mask] = mask_token_id
    return out


def _select(
    prob: torch.Tensor, eligible: torch.Tensor, at_least_one: bool, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bernoulli selection of eligible tokens, plus the forced first word of rows left with none."""
    selected = eligible & (torch.rand(prob.shape, generator=generator, device=prob.device) < prob)
    forced = torch.zeros_like(selected)
    if at_least_one:
        empty_rows = ~selected.any(dim=1, keepdim=True)
        forced = _first_true(eligible) & empty_rows
    return selected, forced


def dual_mask(
    input_ids: torch.Tensor,
    scores: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    params: MaskingParams,
    special_ids: Iterable[int] | torch.Tensor,
    mask_token_id: int,
    vocab_size: int,
    generator: torch.Generator | None = None,
) -> DualMask:
    """Make the noise-suppressed and the informative (MIM) copies of a batch of tokenised captions.

    Args:
        input_ids: `(batch, length)` token ids of the clean captions.
        scores: `(batch, length)` token scores in [0, 1] (the captions' score-bank rows).
        attention_mask: `(batch, length)`, 1 on real tokens, 0 on padding.
        params: the masking constants (`MaskingParams.from_config(config)`).
        special_ids: ids that are never selected nor drawn as random replacements (start, end, pad,
            mask); `mask_token_id` is always added to them.
        mask_token_id: id of `<|mask|>`.
        vocab_size: size of the id space random replacements are drawn from (`len(tokenizer)`).
        generator: source of every random draw, on the device of `input_ids`; `None` uses torch's
            global RNG. Outputs live on the device of `input_ids`.

    Only real word tokens (attention 1 and not special) are eligible. A selected token becomes
    `mask_token_id` with probability `mask_replace_prob`, a uniformly random ordinary token with
    `random_replace_prob`, and otherwise stays (it is still labelled in the MIM copy). If a caption
    has eligible tokens but none was selected, `mim_at_least_one` (and, for the noise copy,
    `noise_at_least_one`) masks its first word token with `mask_token_id` (never a random or kept
    token, so the forced label is always a real prediction task); in the MIM copy that token is labelled.
    Captions without any eligible token come back unchanged with no label.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}")
    for name, tensor in (("scores", scores), ("attention_mask", attention_mask)):
        if tensor.shape != input_ids.shape:
            raise ValueError(
                f"{name} has shape {tuple(tensor.shape)}, expected input_ids' shape {tuple(input_ids.shape)}"
            )
    input_ids = input_ids.long()
    scores, attention_mask = scores.to(input_ids.device), attention_mask.to(input_ids.device)
    clean = input_ids.clone()
    if params.masking == "none":
        return DualMask(clean, input_ids.clone(), torch.full_like(input_ids, IGNORE_INDEX))

    special = torch.tensor([*map(int, special_ids), mask_token_id], device=input_ids.device).unique()
    eligible = attention_mask.bool() & ~torch.isin(input_ids, special)
    ordinary_ids = _ordinary_ids(vocab_size, special)

    selected, forced = _select(mim_select_prob(scores, params), eligible, params.mim_at_least_one, generator)
    mim_input_ids = _corrupt(input_ids, selected, forced, params, mask_token_id, ordinary_ids, generator)
    mim_labels = torch.where(selected | forced, input_ids, torch.full_like(input_ids, IGNORE_INDEX))

    if params.masking == "random":
        return DualMask(clean, mim_input_ids, mim_labels)
    noise_prob = noise_select_prob(scores, params)
    selected, forced = _select(noise_prob, eligible, params.noise_at_least_one, generator)
    noisy_input_ids = _corrupt(input_ids, selected, forced, params, mask_token_id, ordinary_ids, generator)
    return DualMask(noisy_input_ids, mim_input_ids, mim_labels)


__all__ = ["DualMask", "IGNORE_INDEX", "MaskingParams", "dual_mask", "mim_select_prob", "noise_select_prob"]
