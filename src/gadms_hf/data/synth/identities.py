"""SynthPEDES identities: the attribute tables, the person they describe, and how people are drawn.

An identity is a set of captionable attributes (gender, hair, top, bottom, shoes, bag, hat) plus
uncaptioned physique (skin tone, build, stature). Identities are sampled with plausible
dependencies (skirts for women, jeans in denim colours), distinct across all splits so that the
splits are disjoint, and a share of them are siblings of an earlier identity, one attribute apart,
so that retrieval has to read every attribute.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import SynthPedesConfig
from .streams import IDENTITY_STREAM, SPLITS, choice, stream_rng

COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (30, 30, 33),
    "white": (234, 234, 230),
    "grey": (128, 128, 131),
    "red": (205, 35, 40),
    "blue": (40, 78, 190),
    "green": (38, 145, 62),
    "yellow": (238, 204, 38),
    "pink": (238, 132, 178),
    "purple": (118, 52, 155),
    "orange": (242, 128, 30),
    "brown": (118, 72, 38),
    "beige": (212, 192, 150),
}
HAIR_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (24, 21, 20),
    "brown": (105, 64, 34),
    "blonde": (224, 188, 108),
    "grey": (170, 170, 172),
}
SKIN_TONES = ((246, 212, 182), (228, 182, 142), (194, 142, 102), (144, 98, 66), (98, 66, 46))

TOP_TYPES = ("t-shirt", "tank top", "sweater", "jacket", "coat")
BOTTOM_TYPES = ("trousers", "jeans", "shorts", "skirt")
BAG_TYPES = ("none", "backpack", "shoulder bag", "handbag")
HAT_TYPES = ("none", "cap", "hat")
HAIR_LENGTHS = ("short", "medium", "long")

TOP_COLOURS = ("black", "white", "grey", "red", "blue", "green", "yellow", "pink", "purple", "orange")
BOTTOM_COLOURS = ("black", "white", "grey", "blue", "brown", "beige", "green", "red")
JEANS_COLOURS = ("blue", "black", "grey")
SHOE_COLOURS = ("black", "white", "brown", "grey", "red", "blue")
BAG_COLOURS = ("black", "brown", "red", "blue", "grey", "pink", "white")
HAT_COLOURS = ("black", "white", "red", "blue", "grey", "green", "beige")


@dataclass(frozen=True)
class PedestrianIdentity:
    """One person: captioned attributes (`key()`) plus physique that captions never mention."""

    gender: str
    hair_length: str
    hair_colour: str
    top_type: str
    top_colour: str
    bottom_type: str
    bottom_colour: str
    shoes_colour: str
    bag_type: str
    bag_colour: str | None
    hat_type: str
    hat_colour: str | None
    skin_tone: int
    build: float
    stature: float

    def key(self) -> tuple[Any, ...]:
        """The captioned attributes: two identities with the same key are textually identical."""
        return (
            self.gender,
            self.hair_length,
            self.hair_colour,
            self.top_type,
            self.top_colour,
            self.bottom_type,
            self.bottom_colour,
            self.shoes_colour,
            self.bag_type,
            self.bag_colour,
            self.hat_type,
            self.hat_colour,
        )


_MUTABLE_ATTRIBUTES = (
    "gender",
    "hair_length",
    "hair_colour",
    "top_type",
    "top_colour",
    "bottom_type",
    "bottom_colour",
    "shoes_colour",
    "bag_type",
    "bag_colour",
    "hat_type",
    "hat_colour",
)


def _sample_attribute(rng: np.random.Generator, name: str, ident: dict[str, Any]) -> Any:
    """Draw one attribute given the others (skirts for women, jeans in denim colours...)."""
    woman = ident.get("gender") == "woman"
    if name == "gender":
        return choice(rng, ("woman", "man"))
    if name == "hair_length":
        return choice(rng, HAIR_LENGTHS, (0.2, 0.3, 0.5) if woman else (0.75, 0.2, 0.05))
    if name == "hair_colour":
        return choice(rng, tuple(HAIR_COLOURS), (0.45, 0.3, 0.15, 0.1))
    if name == "top_type":
        return choice(rng, TOP_TYPES, (0.24, 0.1, 0.22, 0.24, 0.2))
    if name == "top_colour":
        return choice(rng, TOP_COLOURS)
    if name == "bottom_type":
        return choice(rng, BOTTOM_TYPES, (0.3, 0.3, 0.15, 0.25) if woman else (0.45, 0.4, 0.15, 0.0))
    if name == "bottom_colour":
        return choice(rng, JEANS_COLOURS if ident["bottom_type"] == "jeans" else BOTTOM_COLOURS)
    if name == "shoes_colour":
        return choice(rng, SHOE_COLOURS)
    if name == "bag_type":
        return choice(rng, BAG_TYPES, (0.3, 0.25, 0.25, 0.2))
    if name == "bag_colour":
        return None if ident["bag_type"] == "none" else choice(rng, BAG_COLOURS)
    if name == "hat_type":
        return choice(rng, HAT_TYPES, (0.6, 0.25, 0.15))
    if name == "hat_colour":
        return None if ident["hat_type"] == "none" else choice(rng, HAT_COLOURS)
    raise ValueError(f"unknown identity attribute {name!r}")


def _is_consistent(ident: dict[str, Any]) -> bool:
    return (
        not (ident["gender"] == "man" and ident["bottom_type"] == "skirt")
        and not (ident["bottom_type"] == "jeans" and ident["bottom_colour"] not in JEANS_COLOURS)
        and (ident["bag_type"] == "none") == (ident["bag_colour"] is None)
        and (ident["hat_type"] == "none") == (ident["hat_colour"] is None)
    )


def _physique(rng: np.random.Generator) -> dict[str, Any]:
    return {
        "skin_tone": int(rng.integers(len(SKIN_TONES))),
        "build": float(rng.uniform(0.88, 1.12)),
        "stature": float(rng.uniform(0.9, 1.0)),
    }


def _random_identity(rng: np.random.Generator) -> dict[str, Any]:
    ident: dict[str, Any] = {}
    for name in _MUTABLE_ATTRIBUTES:
        ident[name] = _sample_attribute(rng, name, ident)
    return ident


def _sibling_of(rng: np.random.Generator, parent: PedestrianIdentity) -> dict[str, Any] | None:
    """`parent` with exactly one captioned attribute changed (None if the draw was inconsistent)."""
    ident = {name: getattr(parent, name) for name in _MUTABLE_ATTRIBUTES}
    name = choice(rng, _MUTABLE_ATTRIBUTES)
    if name in ("bag_colour", "hat_colour") and ident[name] is None:
        return None
    ident[name] = _sample_attribute(rng, name, ident)
    # A type change into/out of "none" has to bring/drop its colour; that is still one attribute.
    if name == "bag_type":
        ident["bag_colour"] = (
            None if ident["bag_type"] == "none" else (parent.bag_colour or choice(rng, BAG_COLOURS))
        )
    if name == "hat_type":
        ident["hat_colour"] = (
            None if ident["hat_type"] == "none" else (parent.hat_colour or choice(rng, HAT_COLOURS))
        )
    return ident if _is_consistent(ident) else None


def sample_identities(config: SynthPedesConfig) -> dict[str, list[PedestrianIdentity]]:
    """The identities of every split, all with distinct captioned attributes, so splits are disjoint."""
    rng = stream_rng(config.seed, IDENTITY_STREAM)  # a stream of its own, beside the per-split image streams
    seen: set[tuple[Any, ...]] = set()
    result: dict[str, list[PedestrianIdentity]] = {}
    for split in SPLITS:
        people: list[PedestrianIdentity] = []
        wanted = config.num_ids(split)
        attempts = 0
        while len(people) < wanted:
            attempts += 1
            if attempts > 100 * wanted + 1000:
                raise ValueError(
                    f"could not draw {wanted} distinct SynthPEDES identities for split {split!r}; "
                    f"the attribute space is exhausted, use fewer identities"
                )
            make_sibling = bool(people) and rng.random() < config.sibling_rate
            ident = (
                _sibling_of(rng, people[int(rng.integers(len(people)))])
                if make_sibling
                else _random_identity(rng)
            )
            if ident is None:
                continue
            person = PedestrianIdentity(**ident, **_physique(rng))
            if person.key() in seen:
                continue
            seen.add(person.key())
            people.append(person)
        result[split] = people
    return result


__all__ = [
    "BAG_COLOURS",
    "BAG_TYPES",
    "BOTTOM_COLOURS",
    "BOTTOM_TYPES",
    "COLOURS",
    "HAIR_COLOURS",
    "HAIR_LENGTHS",
    "HAT_COLOURS",
    "HAT_TYPES",
    "JEANS_COLOURS",
    "SHOE_COLOURS",
    "SKIN_TONES",
    "TOP_COLOURS",
    "TOP_TYPES",
    "PedestrianIdentity",
    "sample_identities",
]
