"""GADMSProcessor: a 384x128 CLIP image processor and a CLIP tokenizer with `<|mask|>`.

Shipped to the Hub as remote code with the model: imports nothing else from the package.
"""

from __future__ import annotations

import logging

from transformers import BatchFeature, CLIPImageProcessor, ProcessorMixin

logger = logging.getLogger(__name__)

MASK_TOKEN = "<|mask|>"
TEXT_LENGTH = 77
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def make_image_processor(height: int = 384, width: int = 128) -> CLIPImageProcessor:
    """CLIP normalisation at a fixed (height, width): resize only, no centre crop (docs/method.md §8)."""
    return CLIPImageProcessor(
        size={"height": height, "width": width},
        do_center_crop=False,
        do_resize=True,
        resample=3,  # bicubic
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )


class GADMSProcessor(ProcessorMixin):
    """Turns captions and pedestrian images into `GADMSModel` inputs.

    Text is always padded/truncated to `max_length` (77) with the end-of-text token kept,
    because GA-DMS scores and masks token *positions*: the score bank stores one row of 77
    values per caption.
    """

    def __init__(self, image_processor=None, tokenizer=None, max_length: int = TEXT_LENGTH, **kwargs):
        self.max_length = max_length
        super().__init__(image_processor, tokenizer, **kwargs)
        # A tokenizer taken from a CLIP checkpoint lacks `<|mask|>`, without which no collator can mask.
        if tokenizer is not None and MASK_TOKEN not in tokenizer.get_vocab():
            token_id = add_mask_token(tokenizer)
            logger.warning("the tokenizer had no %s token: added %s as id %d (GADMSModel.from_clip adds the "
                           "matching embedding row)", MASK_TOKEN, MASK_TOKEN, token_id)

    @property
    def mask_token_id(self) -> int:
        token_id = self.tokenizer.convert_tokens_to_ids(MASK_TOKEN)
        if token_id is None or token_id == self.tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no {MASK_TOKEN!r} token; build it with add_mask_token()")
        return token_id

    def __call__(self, text=None, images=None, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        """Tokenise `text` (str or list) and/or preprocess `images` (PIL, arrays or tensors)."""
        if text is None and images is None:
            raise ValueError("GADMSProcessor needs `text`, `images` or both")
        for name, value in (("text", text), ("images", images)):
            if isinstance(value, (list, tuple)) and not value:
                raise ValueError(f"GADMSProcessor: {name}=[] is empty; pass at least one item (or leave it out)")
        data = {}
        if text is not None:
            text_kwargs = dict(padding="max_length", truncation=True, max_length=self.max_length)
            text_kwargs.update(kwargs)
            data.update(self.tokenizer(text, return_tensors=return_tensors, **text_kwargs))
        if images is not None:
            data.update(self.image_processor(images, return_tensors=return_tensors))
        return BatchFeature(data=data, tensor_type=return_tensors)


def add_mask_token(tokenizer) -> int:
    """Add `<|mask|>` as a special token (id 49408 on CLIP's 49,408-token vocabulary)."""
    tokenizer.add_special_tokens({"additional_special_tokens": [MASK_TOKEN]})
    return tokenizer.convert_tokens_to_ids(MASK_TOKEN)


__all__ = ["GADMSProcessor", "make_image_processor", "add_mask_token", "MASK_TOKEN", "TEXT_LENGTH"]
