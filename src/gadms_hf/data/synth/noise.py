"""Planted noise: statements a SynthPEDES caption makes that its image does not bear out.

GA-DMS is about captions that say more than the image shows. Real corpora never tell which words
those are; SynthPEDES plants them on purpose and records where, as noise pieces that become
[start, end) character spans when the caption is rendered. Each profile of `NOISE_PROFILES` is
one planter; a noisy caption gets one item (70%) or two (30%) under either.

"default" (the corpora made before profiles existed) mixes three kinds:

- an accessory the drawings never show ("holding an umbrella"), or a bag or hat the person lacks;
- a background ("waiting at a bus stop"), which a model can learn to ignore without the image;
- a wrong colour: a colour word replaced by another colour of its attribute's palette.

"confusable" is about the person only, in the very words that describe people, so that only the
image tells it from the truth, as with an MLLM captioner's hallucinations. Never two items about
the same item of clothing; each item's kind is drawn uniformly among the kinds the caption allows:

- wrong colour: the colour word of the top, bottom, shoes, bag or hat is replaced by another
  colour of that item's palette; the span is the colour word ("red").
- wrong garment: the noun of the top or bottom is replaced by a noun of another type of the same
  slot and grammatical number ("sweater" for a jacket, "jeans" for trousers); the span is the
  noun ("zip-up jacket").
- absent item: a bag or hat that the person lacks is added, as a clause of an existing sentence
  (", carrying a red rucksack") or as a sentence of its own ("She is wearing a grey cap."); the
  span is the whole clause, verb included (every word of it is false), without its ", " or
  "She is" wrapper.

Under both profiles, articles are settled when the caption is rendered, outside every span ("an orange").
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .config import NOISE_PROFILES
from .identities import BAG_COLOURS, HAT_COLOURS, PedestrianIdentity
from .streams import choice
from .vocabulary import (
    BAG_WORDS,
    BOTTOM_WORDS,
    COLOUR_PALETTES,
    HAT_WORDS,
    PRONOUNS,
    TOP_WORDS,
    Piece,
    colour_word,
)

NOISE_ACCESSORIES = (
    "holding an umbrella",
    "wearing sunglasses",
    "wearing a scarf",
    "wearing a wristwatch",
    "talking on a phone",
    "holding a cup of coffee",
    "wearing a face mask",
    "wearing gloves",
    "walking a small dog",
    "wearing glasses",
    "wearing a necklace",
    "pushing a bicycle",
)
NOISE_BACKGROUNDS = (
    "standing next to a parked car",
    "standing in front of a shop",
    "walking on a busy street",
    "waiting at a bus stop",
    "standing near a tree",
    "under a street lamp",
    "on a crosswalk",
    "beside a brick building",
    "in a shopping mall",
    "at a train station",
)

Sentences = list[list[Piece]]
NoisePlanter = Callable[[Sentences, PedestrianIdentity, np.random.Generator], Sentences]


# ---------------------------------------------------------------------------------------------
# "default": accessories, backgrounds and wrong colours
# ---------------------------------------------------------------------------------------------


def _hallucinations(person: PedestrianIdentity, rng: np.random.Generator) -> list[str]:
    """Accessory phrases the image does not show, including absent bags and hats of the vocabulary."""
    phrases = list(NOISE_ACCESSORIES)
    if person.bag_type == "none":
        colour = choice(rng, BAG_COLOURS)
        bag = choice(rng, ("backpack", "shoulder bag", "handbag"))
        phrases.append(f"carrying {'an' if colour[0] in 'aeiou' else 'a'} {colour} {bag}")
    if person.hat_type == "none":
        colour = choice(rng, HAT_COLOURS)
        phrases.append(
            f"wearing {'an' if colour[0] in 'aeiou' else 'a'} {colour} {choice(rng, ('cap', 'hat'))}"
        )
    return phrases


def plant_default_noise(sentences: Sentences, person: PedestrianIdentity, rng: np.random.Generator) -> Sentences:
    """Add one or two statements the image does not bear out: an accessory, a background or a wrong colour."""
    sentences = [list(s) for s in sentences]
    used: set[str] = set()
    for _ in range(1 if rng.random() < 0.7 else 2):
        kind = rng.random()
        if kind >= 0.7:
            targets = [
                (i, k) for i, s in enumerate(sentences) for k, piece in enumerate(s) if piece.colour_of
            ]
            if targets:
                i, k = targets[int(rng.integers(len(targets)))]
                attribute = sentences[i][k].colour_of
                wrong = [c for c in COLOUR_PALETTES[attribute] if c != getattr(person, attribute)]
                sentences[i][k] = Piece(colour_word(rng, choice(rng, wrong)), noise=True)
                continue
        pool = _hallucinations(person, rng) if kind < 0.4 else list(NOISE_BACKGROUNDS)
        phrase = choice(rng, [p for p in pool if p not in used])
        used.add(phrase)
        if rng.random() < 0.6:  # trailing clause of an existing sentence
            sentences[int(rng.integers(len(sentences)))] += [Piece(", "), Piece(phrase, noise=True)]
        else:  # a sentence of its own, after the one that introduces the person
            pronoun = PRONOUNS[person.gender][0]
            at = 1 + int(rng.integers(len(sentences)))
            sentences.insert(at, [Piece(f"{pronoun} is "), Piece(phrase, noise=True)])
    return sentences


# ---------------------------------------------------------------------------------------------
# "confusable": wrong colours, wrong garments and absent items, about the person only
# ---------------------------------------------------------------------------------------------

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
# Type attribute -> swappable type -> nouns. A skirt, the only singular bottom, is left out: "a pair of blue
# skirt" would give noise away.
_GARMENTS = {
    "top_type": TOP_WORDS,
    "bottom_type": {kind: nouns for kind, nouns in BOTTOM_WORDS.items() if kind != "skirt"},
}
_ITEMS = {"bag": BAG_WORDS, "hat": HAT_WORDS}  # items a person may lack -> type -> nouns
_VERBS = {"bag": "carrying", "hat": "wearing"}


def _targets(
    sentences: Sentences, person: PedestrianIdentity, used: set[str]
) -> dict[str, list[tuple[str, int, int]]]:
    """Per kind, the places noise can go, as (item, sentence, piece); (item, -1, -1) for an added item."""
    targets: dict[str, list[tuple[str, int, int]]] = {"colour": [], "garment": [], "absent": []}
    for i, sentence in enumerate(sentences):
        for k, piece in enumerate(sentence):
            if piece.colour_of in _ITEM and _ITEM[piece.colour_of] not in used:
                targets["colour"].append((_ITEM[piece.colour_of], i, k))
            swappable = piece.type_of in _GARMENTS and getattr(person, piece.type_of) in _GARMENTS[piece.type_of]
            if swappable and _ITEM[piece.type_of] not in used:
                targets["garment"].append((_ITEM[piece.type_of], i, k))
    for item in _ITEMS:
        if getattr(person, f"{item}_type") == "none" and item not in used:
            targets["absent"].append((item, -1, -1))
    return {kind: places for kind, places in targets.items() if places}


def _absent_item(rng: np.random.Generator, item: str) -> str:
    """A clause claiming a bag or hat of the caption vocabulary: "carrying a red rucksack"."""
    colour = colour_word(rng, choice(rng, COLOUR_PALETTES[f"{item}_colour"]))
    words = _ITEMS[item]
    noun = choice(rng, words[choice(rng, tuple(words))])
    return f"{_VERBS[item]} {'an' if colour[0] in 'aeiou' else 'a'} {colour} {noun}"


def plant_confusable_noise(
    sentences: Sentences, person: PedestrianIdentity, rng: np.random.Generator
) -> Sentences:
    """`sentences` with one or two confusable falsehoods about `person`; see the module docstring for the
    kinds and their spans."""
    sentences = [list(s) for s in sentences]
    used: set[str] = set()
    for _ in range(1 if rng.random() < 0.7 else 2):
        targets = _targets(sentences, person, used)
        item, i, k = choice(rng, targets[choice(rng, tuple(targets))])
        used.add(item)
        if i < 0:
            phrase = Piece(_absent_item(rng, item), noise=True)
            if rng.random() < 0.6:  # trailing clause of an existing sentence
                sentences[int(rng.integers(len(sentences)))] += [Piece(", "), phrase]
            else:  # a sentence of its own, after the one that introduces the person
                at = 1 + int(rng.integers(len(sentences)))
                sentences.insert(at, [Piece(f"{PRONOUNS[person.gender][0]} is "), phrase])
        elif sentences[i][k].colour_of is not None:
            attribute = sentences[i][k].colour_of
            wrong = choice(rng, [c for c in COLOUR_PALETTES[attribute] if c != getattr(person, attribute)])
            sentences[i][k] = Piece(colour_word(rng, wrong), noise=True)
        else:
            words = _GARMENTS[sentences[i][k].type_of]
            wrong = choice(rng, [t for t in words if t != getattr(person, sentences[i][k].type_of)])
            sentences[i][k] = Piece(choice(rng, words[wrong]), noise=True)
    return sentences


_PLANTERS: dict[str, NoisePlanter] = {"default": plant_default_noise, "confusable": plant_confusable_noise}


def noise_planter(noise_profile: str) -> NoisePlanter:
    """The function that plants `noise_profile`'s noise into a caption's sentences."""
    if noise_profile not in _PLANTERS:
        raise ValueError(f"noise_profile must be one of {NOISE_PROFILES}, got {noise_profile!r}")
    return _PLANTERS[noise_profile]


__all__ = [
    "NOISE_ACCESSORIES",
    "NOISE_BACKGROUNDS",
    "NoisePlanter",
    "noise_planter",
    "plant_confusable_noise",
    "plant_default_noise",
]
