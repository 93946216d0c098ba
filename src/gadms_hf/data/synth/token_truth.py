"""Token-level truth of SynthPEDES captions: which tokens are planted noise, which name attributes.

The corpus records noise as character spans, but GASS scores tokens. These functions carry the
spans over to the positions of a fast tokenizer's padded encoding, so that GASS scores can be
checked against ground truth: attribute tokens (what the image shows) should score high, planted
noise low.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .identities import COLOURS, HAIR_COLOURS
from .vocabulary import (
    BAG_WORDS,
    BOTTOM_WORDS,
    COLOUR_SYNONYMS,
    HAIR_LENGTH_WORDS,
    HAT_WORDS,
    NOUNS,
    SHOE_WORDS,
    TOP_WORDS,
)


def _attribute_words() -> frozenset[str]:
    """Every word a clean caption uses to name something drawn: colours, hair length, garments, bags, hats and
    the gender nouns (not "young" or "pedestrian", which every identity could carry)."""
    phrases = [*COLOURS, *HAIR_COLOURS, *(w for words in COLOUR_SYNONYMS.values() for w in words)]
    for table in (HAIR_LENGTH_WORDS, TOP_WORDS, BOTTOM_WORDS, BAG_WORDS, HAT_WORDS, NOUNS):
        phrases += [phrase for options in table.values() for phrase in options]
    phrases += [*SHOE_WORDS, "hair"]
    return frozenset(word for phrase in phrases for word in phrase.split()) - {"young", "pedestrian"}


ATTRIBUTE_WORDS = _attribute_words()
# The colour words alone: the attribute a small model grounds first, and the word a wrong-colour noise span is.
COLOUR_WORDS = frozenset([*COLOURS, *HAIR_COLOURS, *(w for words in COLOUR_SYNONYMS.values() for w in words)])
_WORD_BREAKS = " ,."


def _encode_with_offsets(tokenizer: Any, caption: str, max_length: int, caller: str) -> Any:
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(
            f"{caller} needs a fast (tokenizers-backed) tokenizer with offset mapping, got {type(tokenizer).__name__}"
        )
    return tokenizer(
        caption,
        padding="max_length",
        truncation=True,
        max_length=max_length,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
    )


def _check_spans(caption: str, noise_spans: Sequence[Sequence[int]]) -> None:
    for span in noise_spans:
        if len(span) != 2 or not 0 <= span[0] < span[1] <= len(caption):
            raise ValueError(
                f"noise span {list(span)} is not a [start, end) range inside the caption of length {len(caption)}: {caption!r}"
            )


def token_noise_flags(
    tokenizer: Any, caption: str, noise_spans: Sequence[Sequence[int]], max_length: int = 77
) -> list[bool]:
    """Per token position of `tokenizer(caption, padding="max_length", truncation=True, max_length=...)`,
    whether the token overlaps a noise span (always False for start, end and padding tokens).

    Uses the fast tokenizer's character offsets, which point into the original caption even
    though CLIP's normaliser lowercases and collapses whitespace.
    """
    _check_spans(caption, noise_spans)
    encoding = _encode_with_offsets(tokenizer, caption, max_length, "token_noise_flags")
    flags = []
    for (start, end), special in zip(encoding["offset_mapping"], encoding["special_tokens_mask"]):
        flags.append(not special and end > start and any(start < b and a < end for a, b in noise_spans))
    return flags


def token_attribute_flags(
    tokenizer: Any, caption: str, noise_spans: Sequence[Sequence[int]], max_length: int = 77,
    words: frozenset[str] = ATTRIBUTE_WORDS,
) -> list[bool]:
    """Per token position (as in `token_noise_flags`), whether the token belongs to a word of `words`
    (`ATTRIBUTE_WORDS`: the words a clean caption uses to describe what the image shows) outside every noise span.

    Together with `token_noise_flags` this separates the tokens that GASS should score high (attributes)
    from those it should score low (planted noise); function words ("a", "is", ",") are in neither set.
    """
    _check_spans(caption, noise_spans)
    encoding = _encode_with_offsets(tokenizer, caption, max_length, "token_attribute_flags")
    flags = []
    for (start, end), special in zip(encoding["offset_mapping"], encoding["special_tokens_mask"]):
        if special or end <= start or any(start < b and a < end for a, b in noise_spans):
            flags.append(False)
            continue
        left, right = start, end
        while left > 0 and caption[left - 1] not in _WORD_BREAKS:
            left -= 1
        while right < len(caption) and caption[right] not in _WORD_BREAKS:
            right += 1
        flags.append(caption[left:right].lower() in words)
    return flags


def colour_noise_spans(caption: str, noise_spans: Sequence[Sequence[int]]) -> list[Sequence[int]]:
    """The noise spans that are one colour word: the wrong colours (under both profiles a wrong colour's span is
    its colour word alone; an absent bag's clause or a wrong garment's noun is never a bare colour)."""
    _check_spans(caption, noise_spans)
    return [span for span in noise_spans if caption[span[0]:span[1]].lower() in COLOUR_WORDS]


def truth_scores(tokenizer: Any, captions: Sequence[str], noise_spans: Sequence[Sequence[Sequence[int]]],
                 colours_only: bool = False) -> list[list[float]]:
    """Score-bank rows that know the planted noise: 0 on its tokens, 1 on every other position (an oracle bank
    for the dual masking). `colours_only`: 0 on the planted wrong colour words alone (`colour_noise_spans`)."""
    return [[0.0 if flag else 1.0 for flag in token_noise_flags(
        tokenizer, caption, colour_noise_spans(caption, spans) if colours_only else spans)]
        for caption, spans in zip(captions, noise_spans)]


__all__ = ["ATTRIBUTE_WORDS", "COLOUR_WORDS", "colour_noise_spans", "token_attribute_flags", "token_noise_flags",
           "truth_scores"]
