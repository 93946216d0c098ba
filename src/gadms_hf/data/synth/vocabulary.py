"""The words SynthPEDES describes people with, and the pieces a caption is built from.

Three parts read these tables: the clean captions (which pick from them), the noise profiles
(which swap in a wrong colour, garment or item from them) and the token-level truth (whose
attribute words are exactly these). Keeping them in one module is what lets every part agree on
what a caption can say.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .identities import BAG_COLOURS, BOTTOM_COLOURS, HAIR_COLOURS, HAT_COLOURS, SHOE_COLOURS, TOP_COLOURS
from .streams import choice


class Piece(NamedTuple):
    """A stretch of caption text, with what the noise planters and the renderer need to know about it."""

    text: str
    colour_of: str | None = None  # the attribute this colour word names: a target for wrong-colour noise
    type_of: str | None = None  # the garment attribute this noun names: a target for wrong-garment noise
    noise: bool = False
    article: bool = False  # "a"/"an", settled at rendering from the next word (noise may change it)


ARTICLE = Piece("a", article=True)
NOUNS = {
    "woman": ("woman", "lady", "young woman", "female pedestrian", "girl"),
    "man": ("man", "gentleman", "young man", "male pedestrian", "guy"),
}
PRONOUNS = {"woman": ("she", "her"), "man": ("he", "his")}
HAIR_LENGTH_WORDS = {"short": ("short",), "medium": ("shoulder-length", "medium-length"), "long": ("long",)}
TOP_WORDS = {
    "t-shirt": ("t-shirt", "tee", "short-sleeved shirt"),
    "tank top": ("tank top", "sleeveless top", "vest top"),
    "sweater": ("sweater", "jumper", "pullover"),
    "jacket": ("jacket", "zip-up jacket"),
    "coat": ("long coat", "coat", "overcoat"),
}
BOTTOM_WORDS = {
    "trousers": ("trousers", "pants", "slacks"),
    "jeans": ("jeans", "denim jeans"),
    "shorts": ("shorts",),
    "skirt": ("skirt", "knee-length skirt"),
}
SHOE_WORDS = ("shoes", "sneakers", "trainers")
BAG_WORDS = {
    "backpack": ("backpack", "rucksack"),
    "shoulder bag": ("shoulder bag", "crossbody bag", "messenger bag"),
    "handbag": ("handbag", "purse"),
}
HAT_WORDS = {"cap": ("cap", "baseball cap"), "hat": ("hat", "brimmed hat", "sun hat")}
COLOUR_SYNONYMS = {"grey": ("grey", "gray"), "blonde": ("blonde", "blond")}
COLOUR_PALETTES = {
    "hair_colour": tuple(HAIR_COLOURS),
    "top_colour": TOP_COLOURS,
    "bottom_colour": BOTTOM_COLOURS,
    "shoes_colour": SHOE_COLOURS,
    "bag_colour": BAG_COLOURS,
    "hat_colour": HAT_COLOURS,
}


def colour_word(rng: np.random.Generator, colour: str) -> str:
    """`colour` in one of its spellings ("grey" or "gray")."""
    return choice(rng, COLOUR_SYNONYMS.get(colour, (colour,)))


__all__ = [
    "ARTICLE",
    "BAG_WORDS",
    "BOTTOM_WORDS",
    "COLOUR_PALETTES",
    "COLOUR_SYNONYMS",
    "HAIR_LENGTH_WORDS",
    "HAT_WORDS",
    "NOUNS",
    "PRONOUNS",
    "SHOE_WORDS",
    "TOP_WORDS",
    "Piece",
    "colour_word",
]
