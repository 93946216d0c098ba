"""Which words of a description counted for one image: the model's own GASS token scores, per word.

GASS scores word pieces (CLIP's BPE splits "backpack" into "back" + "pack"); a reader thinks in words.
The fast tokenizer's character offsets map each piece back to the description, which CLIP's normaliser
lowercases and re-spaces, and a word takes the highest score of its pieces. Punctuation is not a word.
Words past the 77-token limit were never seen by the model and get no score.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch

_WORD = re.compile(r"\w+(?:['\u2019]\w+)*")  # "t-shirt" is two words, "don't" one


@dataclass(frozen=True)
class WordScore:
    """A word of the description (`text[start:end]`) and its GASS score in [0, 1]; None if truncated away."""

    text: str
    start: int
    end: int
    score: float | None


@dataclass(frozen=True)
class DescriptionScores:
    words: list[WordScore]
    num_tokens: int  # the description's tokens with start and end-of-text, before truncation
    max_tokens: int  # what the model reads (77 for CLIP)

    @property
    def truncated(self) -> bool:
        return self.num_tokens > self.max_tokens


def split_words(text: str) -> list[tuple[int, int]]:
    """[start, end) character spans of the words of `text`."""
    return [match.span() for match in _WORD.finditer(text)]


def word_gass_scores(model: Any, processor: Any, text: str, image_embedding: torch.Tensor) -> DescriptionScores:
    """GASS scores of `text`'s words against one image embedding (raw or L2-normalised, shape (D,)).

    Uses `model.gass` exactly as training does (`GADMSModel.forward`): token scores in [0, 1], min-max
    normalised over this description's word pieces.
    """
    tokenizer = processor.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(f"word scores need a fast tokenizer with offsets, got {type(tokenizer).__name__}")
    encoding = processor(text=[text], return_tensors="pt", return_offsets_mapping=True,
                         return_special_tokens_mask=True)
    device = next(model.parameters()).device
    input_ids = encoding["input_ids"].to(device)
    attention_mask = encoding["attention_mask"].to(device)
    eos = model.eos_positions(input_ids)
    image = image_embedding.reshape(1, -1).to(device)
    scores = model.gass(model.text_model, model.text_projection, input_ids, attention_mask, image, eos)[0].cpu()
    offsets = encoding["offset_mapping"][0].tolist()
    special = encoding["special_tokens_mask"][0].tolist()
    pieces = [(start, end, float(scores[i])) for i, ((start, end), flag) in enumerate(zip(offsets, special))
              if not flag and end > start]
    words = []
    for start, end in split_words(text):
        inside = [score for a, b, score in pieces if a < end and start < b]
        words.append(WordScore(text[start:end], start, end, max(inside) if inside else None))
    return DescriptionScores(words, len(tokenizer(text, verbose=False)["input_ids"]), input_ids.shape[1])


__all__ = ["DescriptionScores", "WordScore", "split_words", "word_gass_scores"]
