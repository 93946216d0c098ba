"""GADMSCollator: examples -> the keyword arguments of `GADMSModel.forward` (+ `caption_ids`).

Per batch it tokenises the captions to 77 positions, reads each caption's token scores from the
score bank, and makes the noise-suppressed and the MIM copies with `dual_mask` (SPEC section 5).

Randomness. With `seed=None` (training) the masks are drawn from torch's global RNG. Inside a
`DataLoader` worker, torch seeds that RNG with `base_seed + worker_id`, where `base_seed` is drawn
from the main process's RNG each time the loader is iterated (each epoch), so the masks differ across
workers, steps and epochs, and the whole run is still reproducible from the trainer's seed. With an
integer `seed` the collator owns a generator seeded with `seed + worker_id` (`seed` outside workers),
created lazily in whichever process calls it: masks still differ across workers and steps, and the
same seed replays the same masks exactly (workers re-created each epoch replay them every epoch,
so this is meant for tests and debugging, not training).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import get_worker_info

from ..masking import MaskingParams, dual_mask
from ..processing_gadms import TEXT_LENGTH
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
        max_length: token positions per caption; must equal the bank's row length.

    Returns a dict with exactly `pixel_values, input_ids, attention_mask, noisy_input_ids,
    mim_input_ids, mim_labels, person_ids, caption_ids, return_loss`.
    """

    processor: Any = field(repr=False)
    params: MaskingParams
    score_bank: TokenScoreBank | None = None
    mask_token_id: int | None = None
    seed: int | None = None
    max_length: int = TEXT_LENGTH
    special_ids: list[int] = field(init=False, repr=False)
    vocab_size: int = field(init=False, repr=False)
    eos_token_id: int = field(init=False, repr=False)
    _generator: torch.Generator | None = field(default=None, init=False, repr=False)
    _generator_owner: tuple[int, int] | None = field(default=None, init=False, repr=False)

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

        text = self.processor.tokenizer(captions, padding="max_length", truncation=True,
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
            scores = self.score_bank.read(caption_ids)
        masked = dual_mask(
            input_ids,
            scores,
            attention_mask,
            params=self.params,
            special_ids=self.special_ids,
            mask_token_id=self.mask_token_id,
            vocab_size=self.vocab_size,
            generator=self._worker_generator(),
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

    def __getstate__(self) -> dict[str, Any]:
        # A worker builds its own generator; never ship the parent's.
        return {**self.__dict__, "_generator": None, "_generator_owner": None}

    def _worker_generator(self) -> torch.Generator | None:
        """`None` (global RNG) without a seed; else this process's own generator, seeded on first use."""
        if self.seed is None:
            return None
        worker = get_worker_info()
        worker_id = worker.id if worker is not None else 0
        owner = (os.getpid(), worker_id)
        if self._generator is None or self._generator_owner != owner:
            self._generator = torch.Generator().manual_seed(self.seed + worker_id)
            self._generator_owner = owner
        return self._generator


__all__ = ["GADMSCollator"]
