"""SynthPEDES captions: a clean description of every captioned attribute, then the planted noise.

A caption is a list of sentences, each a list of `Piece`s, so that a noise planter can swap a
colour word or a garment noun, or add a clause, and the rendered text still knows which
characters are noise. The clean wording (one of six sentence shapes, with synonyms and varied
word order) is drawn from its own random stream, so the same stream gives the same sentence with
or without noise, whatever its profile.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .identities import PedestrianIdentity
from .noise import Sentences, noise_planter
from .streams import choice
from .vocabulary import (
    ARTICLE,
    BAG_WORDS,
    BOTTOM_WORDS,
    HAIR_LENGTH_WORDS,
    HAT_WORDS,
    NOUNS,
    PRONOUNS,
    SHOE_WORDS,
    TOP_WORDS,
    Piece,
    colour_word,
)

_WEAR_VERBS = ("wears", "is wearing", "has on", "is dressed in")


class _Phrases:
    """Noun phrases for one caption of one identity, each a list of pieces."""

    def __init__(self, person: PedestrianIdentity, rng: np.random.Generator) -> None:
        self.p, self.rng = person, rng
        self.pronoun, self.possessive = PRONOUNS[person.gender]

    def colour(self, attribute: str) -> Piece:
        return Piece(colour_word(self.rng, getattr(self.p, attribute)), colour_of=attribute)

    def pick(self, options: Sequence[str]) -> str:
        return choice(self.rng, options)

    def subject(self, indefinite: bool = False) -> list[Piece]:
        det = ARTICLE if indefinite or self.rng.random() < 0.6 else Piece(self.pick(("the", "this")))
        return [det, Piece(" " + self.pick(NOUNS[self.p.gender]))]

    def hair_length(self) -> Piece:
        return Piece(self.pick(HAIR_LENGTH_WORDS[self.p.hair_length]))

    def hair(self) -> list[Piece]:
        if self.rng.random() < 0.7:
            return [self.hair_length(), Piece(" "), self.colour("hair_colour"), Piece(" hair")]
        return [self.colour("hair_colour"), Piece(" "), self.hair_length(), Piece(" hair")]

    def top(self) -> list[Piece]:
        noun = Piece(self.pick(TOP_WORDS[self.p.top_type]), type_of="top_type")
        if self.rng.random() < 0.75:
            return [ARTICLE, Piece(" "), self.colour("top_colour"), Piece(" "), noun]
        return [ARTICLE, Piece(" "), noun, Piece(" in "), self.colour("top_colour")]

    def bottom(self) -> list[Piece]:
        noun = Piece(self.pick(BOTTOM_WORDS[self.p.bottom_type]), type_of="bottom_type")
        if self.p.bottom_type == "skirt":
            return [ARTICLE, Piece(" "), self.colour("bottom_colour"), Piece(" "), noun]
        lead = [Piece("a pair of ")] if self.rng.random() < 0.25 else []
        return [*lead, self.colour("bottom_colour"), Piece(" "), noun]

    def shoes(self) -> list[Piece]:
        lead = [Piece("a pair of ")] if self.rng.random() < 0.25 else []
        return [*lead, self.colour("shoes_colour"), Piece(f" {self.pick(SHOE_WORDS)}")]

    def bag(self) -> list[Piece]:
        return [ARTICLE, Piece(" "), self.colour("bag_colour"), Piece(f" {self.pick(BAG_WORDS[self.p.bag_type])}")]

    def hat(self) -> list[Piece]:
        return [ARTICLE, Piece(" "), self.colour("hat_colour"), Piece(f" {self.pick(HAT_WORDS[self.p.hat_type])}")]

    def carrying(self) -> Piece:
        return Piece(self.pick(("carrying", "holding") if self.p.bag_type == "handbag" else ("carrying", "with")))

    def carries(self) -> Piece:
        return Piece(
            self.pick(("carries", "is carrying", "has") if self.p.bag_type != "handbag" else ("holds", "carries"))
        )

    def wear(self) -> Piece:
        return Piece(self.pick(_WEAR_VERBS))

    def enumerate(self, items: list[list[Piece]]) -> list[Piece]:
        """`a, b and c` (sometimes with an Oxford comma)."""
        if len(items) == 1:
            return items[0]
        out: list[Piece] = []
        for item in items[:-2]:
            out += [*item, Piece(", ")]
        last = ", and " if len(items) > 2 and self.rng.random() < 0.3 else " and "
        return out + [*items[-2], Piece(last), *items[-1]]

    def clothes(self) -> list[list[Piece]]:
        items = [self.top(), self.bottom(), self.shoes()]
        if self.rng.random() < 0.4:
            order = self.rng.permutation(len(items))
            items = [items[int(i)] for i in order]
        return items


def _caption_sentences(person: PedestrianIdentity, rng: np.random.Generator) -> Sentences:
    """A clean description of every captioned attribute, in one of six sentence shapes."""
    w = _Phrases(person, rng)
    has_bag, has_hat = person.bag_type != "none", person.hat_type != "none"
    pron = Piece(w.pronoun)
    shape = int(rng.integers(6))
    if shape == 0:
        first = [*w.subject(), Piece(" with "), *w.hair()]
        if has_hat:
            first += [Piece(" and "), *w.hat()]
        first += [Piece(" "), w.wear(), Piece(" "), *w.enumerate(w.clothes())]
        if has_bag:
            first += [Piece(", "), w.carrying(), Piece(" "), *w.bag()]
        return [first]
    if shape == 1:
        sentences = [[*w.subject(), Piece(" "), w.wear(), Piece(" "), *w.enumerate(w.clothes())]]
        second = [pron, Piece(" has "), *w.hair()]
        if has_hat:
            second += [Piece(" and wears "), *w.hat()]
        sentences.append(second)
        if has_bag:
            sentences.append([pron, Piece(" "), w.carries(), Piece(" "), *w.bag()])
        return sentences
    if shape == 2:
        sentences = [[*w.subject(), Piece(" has "), *w.hair()]]
        worn = w.clothes() + ([w.hat()] if has_hat else [])
        sentences.append([pron, Piece(" "), w.wear(), Piece(" "), *w.enumerate(worn)])
        if has_bag:
            sentences.append([pron, Piece(" "), w.carries(), Piece(" "), *w.bag()])
        return sentences
    if shape == 3:  # terse attribute list, in any order
        items = [w.hair(), w.top(), w.bottom(), w.shoes()]
        items += ([w.bag()] if has_bag else []) + ([w.hat()] if has_hat else [])
        listed: list[Piece] = []
        for index in rng.permutation(len(items)):
            listed += [Piece(", "), *items[int(index)]]
        return [[*w.subject(), *listed]]
    if shape == 4:
        first = [*w.subject(), Piece(" in "), *w.top(), Piece(" and "), *w.bottom()]
        if has_bag:
            first += [Piece(", "), w.carrying(), Piece(" "), *w.bag()]
        second = [Piece(f"{w.possessive} hair is "), w.hair_length(), Piece(" and "), w.colour("hair_colour")]
        third = [pron, Piece(" "), w.wear(), Piece(" "), *w.shoes()]
        if has_hat:
            third += [Piece(" and "), *w.hat()]
        return [first, second, third]
    sentences = [[Piece("this is "), *w.subject(indefinite=True), Piece(" with "), *w.hair()]]
    second = [pron, Piece(" "), w.wear(), Piece(" "), *w.enumerate(w.clothes())]
    if has_bag:
        second += [Piece(", "), w.carrying(), Piece(" "), *w.bag()]
    sentences.append(second)
    if has_hat:
        sentences.append([pron, Piece(" also wears "), *w.hat()])
    return sentences


def _render(sentences: Sentences) -> tuple[str, list[list[int]]]:
    """Join pieces into text; noise pieces become [start, end) character spans."""
    text, spans = "", []
    for sentence in sentences:
        if text:
            text += " "
        words = [piece.text for piece in sentence]
        for k, piece in enumerate(sentence):
            if piece.article:
                following = next((t for t in words[k + 1 :] if t.strip()), "x").lstrip()
                words[k] = "an" if following[0].lower() in "aeiou" else "a"
        words[0] = words[0][:1].upper() + words[0][1:]
        for piece, word in zip(sentence, words):
            if piece.noise:
                spans.append([len(text), len(text) + len(word)])
            text += word
        text += "."
    return text, spans


def write_caption(
    person: PedestrianIdentity,
    rng: np.random.Generator,
    noise_rng: np.random.Generator | None = None,
    noise_profile: str = "default",
) -> tuple[str, list[list[int]]]:
    """A caption of `person` and its noise spans; with `noise_rng`, noise of `noise_profile` is planted
    (else none).

    The clean wording is drawn from `rng` alone, so the same `rng` gives the same sentence with
    or without noise, whatever its profile.
    """
    plant = noise_planter(noise_profile)
    sentences = _caption_sentences(person, rng)
    if noise_rng is not None:
        sentences = plant(sentences, person, noise_rng)
    return _render(sentences)


__all__ = ["write_caption"]
