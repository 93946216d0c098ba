"""GADMSCollator: examples -> the keyword arguments of `GADMSModel.forward` (+ `caption_ids`).

Per batch it tokenises the captions, reads each caption's token scores from the score bank, and
makes the noise-suppressed and the MIM copies with `dual_mask` (docs/method.md §5).

Padding. The authors pad every caption to 77 positions. Here a batch is padded to its longest
caption (never beyond `max_length`, 77) unless `pad_to_max_length=True`: SynthPEDES captions average
36 tokens, so the text tower's three passes (alignment copy, MIM copy, GASS) do about half the work.
Under the causal mask padding never reaches a real token, so embeddings and losses are unchanged;
GASS min-max scales its query-key cosine over the positions present, so the scores move slightly
(correlation 0.996 with 77-padded scores on a random `small()` model, largest change 0.07). The bank
keeps 77 scores per caption; the trainer writes a row's trailing positions as 0.

Randomness. With `seed=None` the masks are drawn from torch's global RNG (in a `DataLoader`
worker, torch seeds it with `base_seed + worker_id`, a new `base_seed` each epoch). With an integer
`seed` (what the training scripts pass) each batch's masks come from a generator seeded with
`derive_seed(seed, epoch, caption_ids)`: they differ across batches and epochs, do not depend on
workers or prefetching, and a resumed run replays them exactly (`data/randomness.py`). The trainer
advances `epoch` through `set_epoch` before each epoch's workers start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..masking import MaskingParams, dual_mask
from ..processing_gadms import TEXT_LENGTH
from .randomness import derive_seed
from .score_bank import TokenScoreBank

_REQUIRED = ("pixel_values", "caption", "person_id", "caption_id")


@dataclass
class GADMSCollator:
    """Collate `{pixel_values, caption, person_id, caption_id, ...}` examples into a GA-DMS training batch.

    Args:
        processor: a `GADMSProcessor` (only its `tokenizer` is used: images arrive as tensors from
            `with_transform`).
        params: the masking constants, `MaskingParams.from_config(model.config)`.
        score_bank: token scores per caption id; `None` scores every token `params.initial_token_score`.
        mask_token_id: id of `<|mask|>`; `None` asks the processor.
        seed: `None` draws from torch's global RNG (see the module docstring); an int makes masks
            reproducible.
        max_length: token positions per caption at most; must equal the bank's row length.
        pad_to_max_length: pad every caption to `max_length` (the authors' layout) instead of to the
            batch's longest caption.

    Returns a dict with exactly `pixel_values, input_ids, attention_mask, noisy_input_ids,
    mim_input_ids, mim_labels, person_ids, caption_ids, return_loss`; the text tensors are
    `(batch, length)` with `length` the longest caption's (or `max_length`).
    """

    processor: Any = field(repr=False)
    params: MaskingParams
    score_bank: TokenScoreBank | None = None
    mask_token_id: int | None = None
    seed: int | None = None
    max_length: int = TEXT_LENGTH
    pad_to_max_length: bool = False
    special_ids: list[int] = field(init=False, repr=False)
    vocab_size: int = field(init=False, repr=False)
    eos_token_id: int = field(init=False, repr=False)
    epoch: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        tokenizer = self.processor.tokenizer
        if self.mask_token_id is None:
            self.mask_token_id = self.processor.mask_token_id
        if self.score_bank is not None and self.score_bank.text_length != self.max_length:
            raise ValueError(
                f"score bank rows hold {self.score_bank.text_length} tokens but captions are tokenised to"
                f" max_length={self.max_length}"
            )
        self.special_ids = sorted({*tokenizer.all_special_ids, self.mask_token_id})
        self.vocab_size = len(tokenizer)
        self.eos_token_id = tokenizer.eos_token_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        if not features:
            raise ValueError("GADMSCollator got an empty list of examples")
        for feature in features:
            missing = [key for key in _REQUIRED if key not in feature]
            if missing:
                raise ValueError(
                    f"example is missing {missing} (has {sorted(feature)}); images become `pixel_values`"
                    " through gadms_hf.data.transforms.with_transform"
                )
            caption = feature["caption"]
            if not isinstance(caption, str) or not caption.strip():
                raise ValueError(
                    f"caption_id {feature['caption_id']}: caption is empty or not text: {caption!r}"
                )
        captions = [feature["caption"] for feature in features]
        caption_ids = torch.tensor([int(feature["caption_id"]) for feature in features], dtype=torch.long)
        person_ids = torch.tensor([int(feature["person_id"]) for feature in features], dtype=torch.long)
        pixel_values = torch.stack([torch.as_tensor(feature["pixel_values"]) for feature in features])

        padding = "max_length" if self.pad_to_max_length else "longest"
        text = self.processor.tokenizer(captions, padding=padding, truncation=True,
                                        max_length=self.max_length, return_tensors="pt")
        input_ids, attention_mask = text["input_ids"], text["attention_mask"]
        # GASS and the model pool at the end-of-text token: a caption without one is unusable.
        last_real = attention_mask.sum(dim=1) - 1
        lost_eos = input_ids.gather(1, last_real[:, None]).squeeze(1) != self.eos_token_id
        if lost_eos.any():
            first = int(caption_ids[lost_eos][0])
            raise ValueError(f"caption_id {first}: the tokenizer dropped the end-of-text token")

        if self.score_bank is None:
            scores = torch.full(input_ids.shape, self.params.initial_token_score)
        else:
            scores = self.score_bank.read(caption_ids)[:, : input_ids.shape[1]]
        masked = dual_mask(
            input_ids,
            scores,
            attention_mask,
            params=self.params,
            special_ids=self.special_ids,
            mask_token_id=self.mask_token_id,
            vocab_size=self.vocab_size,
            generator=self._batch_generator(caption_ids),
        )
        return {
            "pixel_values": pixel_values,
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "noisy_input_ids": masked.noisy_input_ids,
            "mim_input_ids": masked.mim_input_ids,
            "mim_labels": masked.mim_labels,
            "person_ids": person_ids,
            "caption_ids": caption_ids,
            "return_loss": True,
        }

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _batch_generator(self, caption_ids: torch.Tensor) -> torch.Generator | None:
        """`None` (global RNG) without a seed; else a generator keyed on (seed, epoch, caption ids)."""
        if self.seed is None:
            return None
        return torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, caption_ids.tolist()))


__all__ = ["GADMSCollator"]
