"""The "confusable" noise profile of SynthPEDES: the hallucinations an MLLM captioner makes.

The default profile's noise is partly talk about the background ("waiting at a bus stop") that a
model can learn to ignore without looking at the image. Confusable noise is about the person, in
the very words that describe people, so only the image tells it from the truth. A noisy caption
gets one item (70%) or two (30%), as with the default profile, never two about the same item of
clothing; each item's kind is drawn uniformly among the kinds the caption allows:

- wrong colour: the colour word of the top, bottom, shoes, bag or hat is replaced by another
  colour of that item's palette; the span is the colour word ("red").
- wrong garment: the noun of the top or bottom is replaced by a noun of another type of the same
  slot and grammatical number ("sweater" for a jacket, "jeans" for trousers); the span is the
  noun ("zip-up jacket").
- absent item: a bag or hat that the person lacks is added, as a clause of an existing sentence
  (", carrying a red rucksack") or as a sentence of its own ("She is wearing a grey cap."); the
  span is the whole clause, verb included (every word of it is false), without its ", " or
  "She is" wrapper.

Articles are settled when the caption is rendered, outside every span ("an orange"). The caption
vocabulary comes in as an argument, from `synthetic`, which imports this module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# The item of clothing each attribute describes: a caption gets at most one noise item per item of clothing.
_ITEM = {
    "top_colour": "top",
    "top_type": "top",
    "bottom_colour": "bottom",
    "bottom_type": "bottom",
    "shoes_colour": "shoes",
    "bag_colour": "bag",
    "hat_colour": "hat",
}
_VERBS = {"bag": "carrying", "hat": "wearing"}


@dataclass(frozen=True)
class CaptionVocabulary:
    """The words SynthPEDES describes people with: its caption tables, passed in to avoid an import circle."""

    piece: Callable[..., Any]  # the caption piece type: piece(text, noise=True)
    palettes: Mapping[str, Sequence[str]]  # colour attribute -> the colours it takes
    synonyms: Mapping[str, Sequence[str]]  # colour -> its spellings, when it has several
    garments: Mapping[str, Mapping[str, Sequence[str]]]  # type attribute -> swappable type -> nouns
    items: Mapping[str, Mapping[str, Sequence[str]]]  # "bag" / "hat" -> type -> nouns
    pronouns: Mapping[str, str]  # gender -> subject pronoun


def _pick(rng: np.random.Generator, options: Sequence[Any]) -> Any:
    """A uniform choice (`rng.choice` costs ten times as much on short lists)."""
    return options[int(rng.integers(len(options)))]


def _targets(
    sentences: list[list[Any]], person: Any, vocabulary: CaptionVocabulary, used: set[str]
) -> dict[str, list[tuple[str, int, int]]]:
    """Per kind, the places noise can go, as (item, sentence, piece); (item, -1, -1) for an added item."""
    targets: dict[str, list[tuple[str, int, int]]] = {"colour": [], "garment": [], "absent": []}
    for i, sentence in enumerate(sentences):
        for k, piece in enumerate(sentence):
            if piece.colour_of in _ITEM and _ITEM[piece.colour_of] not in used:
                targets["colour"].append((_ITEM[piece.colour_of], i, k))
            swappable = piece.type_of in vocabulary.garments and (
                getattr(person, piece.type_of) in vocabulary.garments[piece.type_of]
            )
            if swappable and _ITEM[piece.type_of] not in used:
                targets["garment"].append((_ITEM[piece.type_of], i, k))
    for item in vocabulary.items:
        if getattr(person, f"{item}_type") == "none" and item not in used:
            targets["absent"].append((item, -1, -1))
    return {kind: places for kind, places in targets.items() if places}


def _colour_word(rng: np.random.Generator, vocabulary: CaptionVocabulary, colour: str) -> str:
    return _pick(rng, vocabulary.synonyms.get(colour, (colour,)))


def _absent_item(rng: np.random.Generator, vocabulary: CaptionVocabulary, item: str) -> str:
    """A clause claiming a bag or hat of the caption vocabulary: "carrying a red rucksack"."""
    colour = _colour_word(rng, vocabulary, _pick(rng, vocabulary.palettes[f"{item}_colour"]))
    words = vocabulary.items[item]
    noun = _pick(rng, words[_pick(rng, tuple(words))])
    return f"{_VERBS[item]} {'an' if colour[0] in 'aeiou' else 'a'} {colour} {noun}"


def plant_confusable_noise(
    sentences: list[list[Any]], person: Any, rng: np.random.Generator, vocabulary: CaptionVocabulary
) -> list[list[Any]]:
    """`sentences` (lists of caption pieces) with one or two confusable falsehoods about `person`
    (a `PedestrianIdentity`); see the module docstring for the kinds and their spans."""
    sentences = [list(s) for s in sentences]
    used: set[str] = set()
    for _ in range(1 if rng.random() < 0.7 else 2):
        targets = _targets(sentences, person, vocabulary, used)
        item, i, k = _pick(rng, targets[_pick(rng, tuple(targets))])
        used.add(item)
        if i < 0:
            phrase = vocabulary.piece(_absent_item(rng, vocabulary, item), noise=True)
            if rng.random() < 0.6:  # trailing clause of an existing sentence
                sentences[int(rng.integers(len(sentences)))] += [vocabulary.piece(", "), phrase]
            else:  # a sentence of its own, after the one that introduces the person
                at = 1 + int(rng.integers(len(sentences)))
                sentences.insert(at, [vocabulary.piece(f"{vocabulary.pronouns[person.gender]} is "), phrase])
        elif sentences[i][k].colour_of is not None:
            attribute = sentences[i][k].colour_of
            wrong = _pick(rng, [c for c in vocabulary.palettes[attribute] if c != getattr(person, attribute)])
            sentences[i][k] = vocabulary.piece(_colour_word(rng, vocabulary, wrong), noise=True)
        else:
            words = vocabulary.garments[sentences[i][k].type_of]
            wrong = _pick(rng, [t for t in words if t != getattr(person, sentences[i][k].type_of)])
            sentences[i][k] = vocabulary.piece(_pick(rng, words[wrong]), noise=True)
    return sentences


__all__ = ["CaptionVocabulary", "plant_confusable_noise"]
