"""How many captions the 77-token text window cuts.

The processor truncates every caption to 77 tokens (the score bank holds 77 positions per
caption), so the end of a long caption never reaches the model. That is the method's design,
but it should be a number the user sees, per corpus, not a silent loss.
"""

from __future__ import annotations

import datasets

TEXT_WINDOW = 77


def count_cut_captions(dataset: datasets.Dataset, tokenizer, max_length: int = TEXT_WINDOW,
                       batch_size: int = 1000) -> tuple[int, int]:
    """(captions longer than `max_length` tokens with start and end tokens, all captions): one tokenizer pass."""
    cut = total = 0
    for batch in dataset.select_columns(["caption"]).iter(batch_size=batch_size):
        ids = tokenizer(batch["caption"], truncation=False, return_attention_mask=False, verbose=False)["input_ids"]
        cut += sum(len(row) > max_length for row in ids)
        total += len(ids)
    return cut, total


__all__ = ["count_cut_captions", "TEXT_WINDOW"]
