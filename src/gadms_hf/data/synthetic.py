"""SynthPEDES: a procedural pedestrian corpus with captions whose noise tokens are known.

GA-DMS is about captions that say more than the image shows. Real corpora never tell which
words those are; this one plants them on purpose and records where, so that GASS scores can be
checked against ground truth and the whole method can run, learn and be measured on a laptop
with no download. Everything is drawn with PIL + numpy and is a pure function of the seed:
every image and caption has its own random stream, so results do not depend on sharding or on
the order of generation, and changing `noise_rate` changes only the planted noise.

An identity is a set of captionable attributes (gender, hair, top, bottom, shoes, bag, hat)
plus uncaptioned physique (skin tone, build). Images of one identity vary in view, pose,
position, scale, lighting, background clutter, occlusion and mirroring.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import io
import itertools
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import datasets
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .builders._common import FEATURES

SPLITS = ("train", "test", "val")
# Random-stream key of each split's images and captions. Key 2 is the identity stream, and the val split
# came later: these keys keep every train and test image and caption what it was before val existed.
_SPLIT_STREAMS = {"train": 0, "test": 1, "val": 3}
_IDENTITY_STREAM = 2

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

# What planted noise looks like: "default" mixes accessories, backgrounds and wrong colours (the corpora made
# before profiles existed); "confusable" says only wrong things about the person, in the words that describe
# people (see `synth_noise`), as an MLLM captioner's hallucinations do.
NOISE_PROFILES = ("default", "confusable")

# Planted noise: things the drawings never show.
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


@dataclass
class SynthPedesConfig:
    """Size and difficulty of a SynthPEDES corpus (each field is also a builder-config field).

    `images_per_id` is for train; `test_images_per_id` for test and val (their gallery is the
    split's unique images). `val` is a held-out split drawn like `test` (its own identities, clean
    captions, the same sibling and occlusion rates) for choosing settings and checkpoints, so that
    `test` is read once; `num_val_ids=None` draws as many val identities as test ones.
    `sibling_rate` is the share of identities made by changing exactly one attribute of an earlier
    identity of the same split, so that retrieval has to read every attribute. `noise_rate` is the
    share of train captions given planted noise and `noise_profile` (one of `NOISE_PROFILES`) its kind.

    The defaults are the embedded default's corpus (measured on the val split, README "Embedded
    default"): 3,000 training identities (more identities teach more than more views of each) with
    2 photos each, so that its 700 steps pass over every caption about 3.7 times and GASS-guided
    masks (read from the previous pass) drive most of them; images drawn at the 96 x 32 the `small`
    model sees.
    """

    num_train_ids: int = 3000
    num_test_ids: int = 100
    num_val_ids: int | None = None
    images_per_id: int = 2
    test_images_per_id: int = 2
    captions_per_image: int = 2
    noise_rate: float = 0.5
    noise_profile: str = "default"
    sibling_rate: float = 0.3
    occlusion_rate: float = 0.15
    height: int = 96
    width: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        sizes = ("num_train_ids", "num_test_ids", "num_val_ids", "images_per_id", "test_images_per_id",
                 "captions_per_image")
        for name in (*sizes, "height", "width"):
            value = getattr(self, name)
            if name == "num_val_ids" and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"SynthPedesConfig.{name} must be a positive int, got {value!r}")
        for name in ("noise_rate", "sibling_rate", "occlusion_rate"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"SynthPedesConfig.{name} must be a number in [0, 1], got {value!r}")
        if self.height < 32 or self.width < 16:
            raise ValueError(
                f"SynthPedesConfig needs height >= 32 and width >= 16 to draw a pedestrian, "
                f"got height={self.height!r}, width={self.width!r}"
            )
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"SynthPedesConfig.seed must be a non-negative int, got {self.seed!r}")
        if self.noise_profile not in NOISE_PROFILES:
            raise ValueError(
                f"SynthPedesConfig.noise_profile must be one of {NOISE_PROFILES}, got {self.noise_profile!r}"
            )

    def num_ids(self, split: str) -> int:
        _split_stream(split)
        if split == "val" and self.num_val_ids is not None:
            return self.num_val_ids
        return self.num_train_ids if split == "train" else self.num_test_ids

    def num_images_per_id(self, split: str) -> int:
        return self.images_per_id if _split_stream(split) == 0 else self.test_images_per_id


def synth_config_fields() -> tuple[str, ...]:
    """Names of the `SynthPedesConfig` fields (what `load_synth_pedes` accepts as overrides)."""
    return tuple(f.name for f in dataclasses.fields(SynthPedesConfig))


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


# The schema every corpus shares, plus the planted noise as [start, end) character offsets.
SYNTH_PEDES_FEATURES = datasets.Features(
    {**FEATURES, "noise_spans": datasets.List(datasets.List(datasets.Value("int64"), length=2))}
)


def _split_stream(split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"unknown SynthPEDES split {split!r}; expected one of {SPLITS}")
    return _SPLIT_STREAMS[split]


def _choice(rng: np.random.Generator, options: Sequence[Any], p: Sequence[float] | None = None) -> Any:
    """`rng.choice` for short lists, at a tenth of its cost (it is called ~40 times per image)."""
    if p is None:
        return options[int(rng.integers(len(options)))]
    index = bisect.bisect_right(list(itertools.accumulate(p)), rng.random() * sum(p))
    return options[min(index, len(options) - 1)]


# ---------------------------------------------------------------------------------------------
# Identities
# ---------------------------------------------------------------------------------------------

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
        return _choice(rng, ("woman", "man"))
    if name == "hair_length":
        return _choice(rng, HAIR_LENGTHS, (0.2, 0.3, 0.5) if woman else (0.75, 0.2, 0.05))
    if name == "hair_colour":
        return _choice(rng, tuple(HAIR_COLOURS), (0.45, 0.3, 0.15, 0.1))
    if name == "top_type":
        return _choice(rng, TOP_TYPES, (0.24, 0.1, 0.22, 0.24, 0.2))
    if name == "top_colour":
        return _choice(rng, TOP_COLOURS)
    if name == "bottom_type":
        return _choice(rng, BOTTOM_TYPES, (0.3, 0.3, 0.15, 0.25) if woman else (0.45, 0.4, 0.15, 0.0))
    if name == "bottom_colour":
        return _choice(rng, JEANS_COLOURS if ident["bottom_type"] == "jeans" else BOTTOM_COLOURS)
    if name == "shoes_colour":
        return _choice(rng, SHOE_COLOURS)
    if name == "bag_type":
        return _choice(rng, BAG_TYPES, (0.3, 0.25, 0.25, 0.2))
    if name == "bag_colour":
        return None if ident["bag_type"] == "none" else _choice(rng, BAG_COLOURS)
    if name == "hat_type":
        return _choice(rng, HAT_TYPES, (0.6, 0.25, 0.15))
    if name == "hat_colour":
        return None if ident["hat_type"] == "none" else _choice(rng, HAT_COLOURS)
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
    name = _choice(rng, _MUTABLE_ATTRIBUTES)
    if name in ("bag_colour", "hat_colour") and ident[name] is None:
        return None
    ident[name] = _sample_attribute(rng, name, ident)
    # A type change into/out of "none" has to bring/drop its colour; that is still one attribute.
    if name == "bag_type":
        ident["bag_colour"] = (
            None if ident["bag_type"] == "none" else (parent.bag_colour or _choice(rng, BAG_COLOURS))
        )
    if name == "hat_type":
        ident["hat_colour"] = (
            None if ident["hat_type"] == "none" else (parent.hat_colour or _choice(rng, HAT_COLOURS))
        )
    return ident if _is_consistent(ident) else None


def sample_identities(config: SynthPedesConfig) -> dict[str, list[PedestrianIdentity]]:
    """The identities of both splits, all with distinct captioned attributes, so splits are disjoint."""
    rng = _rng(config.seed, _IDENTITY_STREAM)  # a stream of its own, beside the per-split image streams
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


# ---------------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------------

_SUPERSAMPLE = 2  # draw at 2x and box-filter down: anti-aliased edges at little cost


def _shade(colour: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    return tuple(int(max(0, min(255, c * factor))) for c in colour)


def _jitter(rng: np.random.Generator, colour: tuple[int, int, int], amount: int = 10) -> tuple[int, int, int]:
    noise = rng.integers(-amount, amount + 1, size=3)
    return tuple(int(max(0, min(255, c + d))) for c, d in zip(colour, noise))


class _Figure:
    """Maps body coordinates (fractions of the person's height, x towards the facing side) to pixels."""

    def __init__(self, draw: ImageDraw.ImageDraw, cx: float, top: float, size: float) -> None:
        self.draw, self.cx, self.top, self.size = draw, cx, top, size

    def pt(self, x: float, y: float) -> tuple[float, float]:
        return (self.cx + x * self.size, self.top + y * self.size)

    def px(self, length: float) -> int:
        return max(1, int(round(length * self.size)))

    def polygon(self, points: Sequence[tuple[float, float]], fill: tuple[int, int, int]) -> None:
        self.draw.polygon([self.pt(x, y) for x, y in points], fill=fill)

    def ellipse(self, x: float, y: float, rx: float, ry: float, fill: tuple[int, int, int]) -> None:
        (x0, y0), (x1, y1) = self.pt(x - rx, y - ry), self.pt(x + rx, y + ry)
        self.draw.ellipse((x0, y0, x1, y1), fill=fill)

    def chord(
        self, x: float, y: float, rx: float, ry: float, start: float, end: float, fill: tuple[int, int, int]
    ) -> None:
        (x0, y0), (x1, y1) = self.pt(x - rx, y - ry), self.pt(x + rx, y + ry)
        self.draw.chord((x0, y0, x1, y1), start, end, fill=fill)

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill: tuple[int, int, int]) -> None:
        (a, b), (c, d) = self.pt(x0, y0), self.pt(x1, y1)
        self.draw.rectangle((min(a, c), min(b, d), max(a, c), max(b, d)), fill=fill)

    def limb(
        self, p0: tuple[float, float], p1: tuple[float, float], width: float, fill: tuple[int, int, int]
    ) -> None:
        """A thick segment with round ends, so joints bend without gaps."""
        self.draw.line([self.pt(*p0), self.pt(*p1)], fill=fill, width=self.px(width))
        r = width / 2
        self.ellipse(p0[0], p0[1], r, r, fill)
        self.ellipse(p1[0], p1[1], r, r, fill)


def _towards(p: tuple[float, float], angle_deg: float, length: float) -> tuple[float, float]:
    """The point `length` away from `p`, `angle_deg` from straight down, positive towards +x."""
    a = math.radians(angle_deg)
    return (p[0] + length * math.sin(a), p[1] + length * math.cos(a))


class _Pose(NamedTuple):
    view: str  # "front", "back" or "side" (facing +x; mirroring gives the other side)
    legs: tuple[float, float, float, float]  # thigh/shin angles of the far leg, then of the near leg
    arms: tuple[float, float, float, float]  # upper-arm/forearm angles of the far arm, then of the near arm


def _sample_pose(rng: np.random.Generator) -> _Pose:
    view = _choice(rng, ("front", "back", "side"), (0.35, 0.35, 0.3))
    if view == "side":
        stride = float(rng.uniform(0.0, 26.0)) * (1 if rng.random() < 0.5 else -1)
        swing = -0.7 * stride
        legs = (
            -stride,
            -stride * (1.5 if stride > 0 else 0.3),
            stride,
            stride * (0.3 if stride > 0 else 1.5),
        )
        arms = (-swing, -swing + 12.0, swing, swing + 12.0)
    else:
        spread, lift = float(rng.uniform(2.0, 9.0)), float(rng.uniform(-4.0, 4.0))
        legs = (-spread + lift, -spread + lift, spread + lift, spread + lift)
        out = float(rng.uniform(4.0, 12.0))
        arms = (-out, -out + 6.0, out, out - 6.0)
    return _Pose(view, legs, arms)


def _scene_colour(rng: np.random.Generator, saturation: float) -> tuple[int, int, int]:
    """A random colour pulled towards grey, so scenery rarely outshouts the clothes."""
    grey = float(rng.uniform(50, 210))
    colour = grey + saturation * (rng.uniform(20, 236, size=3) - grey)
    return tuple(int(v) for v in colour)


def _draw_background(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int, ground: float
) -> None:
    draw.rectangle((0, 0, w, h), fill=_scene_colour(rng, 0.35))  # wall
    draw.rectangle((0, int(ground), w, h), fill=_scene_colour(rng, 0.2))  # pavement
    for _ in range(int(rng.integers(2, 9))):  # windows, signs, doors, poles, shrubs
        colour = _scene_colour(rng, 0.6)
        kind = rng.random()
        x0, y0 = float(rng.uniform(-0.2, 1.0)) * w, float(rng.uniform(-0.1, 0.85)) * ground
        if kind < 0.55:
            draw.rectangle(
                (x0, y0, x0 + rng.uniform(0.1, 0.6) * w, y0 + rng.uniform(0.05, 0.3) * h), fill=colour
            )
        elif kind < 0.8:
            draw.rectangle((x0, 0, x0 + max(2.0, rng.uniform(0.02, 0.08) * w), ground), fill=colour)
        else:
            r = rng.uniform(0.08, 0.3) * w
            draw.ellipse((x0 - r, ground - 1.6 * r, x0 + r, ground + 0.2 * r), fill=colour)


def _draw_occluder(draw: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int) -> None:
    colour = _scene_colour(rng, 0.6)
    if rng.random() < 0.5:  # something low in front: a bench, a car bonnet, a railing
        draw.rectangle((-1, int(h * rng.uniform(0.8, 0.9)), w, h), fill=colour)
    else:  # something at one side: a pole, a passer-by
        edge = rng.uniform(0.12, 0.3) * w
        x0, x1 = (-1, edge) if rng.random() < 0.5 else (w - edge, w)
        draw.rectangle((x0, int(h * rng.uniform(0.0, 0.3)), x1, h), fill=colour)


def _draw_person(fig: _Figure, person: PedestrianIdentity, pose: _Pose, rng: np.random.Generator) -> None:
    woman = person.gender == "woman"
    side, back = pose.view == "side", pose.view == "back"
    skin = _jitter(rng, SKIN_TONES[person.skin_tone], 6)
    hair = _jitter(rng, HAIR_COLOURS[person.hair_colour], 8)
    top = _jitter(rng, COLOURS[person.top_colour])
    bottom = _jitter(rng, COLOURS[person.bottom_colour])
    shoes = _jitter(rng, COLOURS[person.shoes_colour])
    bag = _jitter(rng, COLOURS[person.bag_colour]) if person.bag_colour else None
    hat = _jitter(rng, COLOURS[person.hat_colour]) if person.hat_colour else None

    girth = (0.62 if side else 1.0) * person.build
    sw = (0.115 if woman else 0.135) * girth  # half-widths: shoulders, waist, hips
    ww = (0.082 if woman else 0.098) * girth
    hw = (0.112 if woman else 0.102) * girth
    hip_x = 0.0 if side else 0.048 * person.build
    shoulder_x = 0.0 if side else sw - 0.028
    thigh, shin, leg_w = 0.245, 0.235, 0.064 * person.build
    upper_arm, forearm, arm_w = 0.16, 0.15, 0.046 * person.build
    long_sleeves = person.top_type in ("sweater", "jacket", "coat")
    head_x, head_y, head_rx, head_ry = (0.012 if side else 0.0), 0.075, 0.056, 0.07

    def leg(index: int) -> None:
        sign = -1 if index == 0 else 1
        far = index == 0 and side
        hip = (sign * hip_x, 0.49)
        knee = _towards(hip, pose.legs[2 * index], thigh)
        ankle = _towards(knee, pose.legs[2 * index + 1], shin)
        dim = 0.78 if far else 1.0
        long_legs = person.bottom_type in ("trousers", "jeans")
        fig.limb(hip, knee, leg_w, _shade(skin if person.bottom_type == "skirt" else bottom, dim))
        fig.limb(knee, ankle, leg_w * 0.85, _shade(bottom if long_legs else skin, dim))
        if person.bottom_type == "shorts":  # bare knee below the hem
            fig.limb(knee, _towards(hip, pose.legs[2 * index], thigh * 0.8), leg_w * 0.92, _shade(skin, dim))
        if person.bottom_type == "jeans":  # rolled-up cuffs and a pale outer seam read as denim
            cuff = _towards(knee, pose.legs[2 * index + 1], shin * 0.9)
            fig.limb(cuff, ankle, leg_w * 0.9, _shade(bottom, dim * 1.35))
            seam_x = sign * leg_w * 0.3 if not side else 0.0
            fig.draw.line(
                [fig.pt(hip[0] + seam_x, hip[1] + 0.02), fig.pt(knee[0] + seam_x, knee[1])],
                fill=_shade(bottom, dim * 1.5),
                width=fig.px(0.008),
            )
        toe = 0.05 if side else 0.0
        fig.ellipse(ankle[0] + toe, ankle[1] + 0.022, 0.045 if not side else 0.065, 0.024, _shade(shoes, dim))

    def arm(index: int) -> None:
        sign = -1 if index == 0 else 1
        far = index == 0 and side
        dim = 0.78 if far else 1.0
        shoulder = (sign * shoulder_x, 0.195)
        elbow = _towards(shoulder, pose.arms[2 * index], upper_arm)
        wrist = _towards(elbow, pose.arms[2 * index + 1], forearm)
        sleeve = person.top_type != "tank top"
        fig.limb(shoulder, elbow, arm_w, _shade(top if sleeve else skin, dim))
        if person.top_type == "t-shirt":
            fig.limb(
                _towards(shoulder, pose.arms[2 * index], upper_arm * 0.55),
                elbow,
                arm_w * 0.9,
                _shade(skin, dim),
            )
        fig.limb(elbow, wrist, arm_w * 0.88, _shade(top if long_sleeves else skin, dim))
        fig.ellipse(wrist[0], wrist[1] + 0.01, 0.024, 0.028, _shade(skin, dim))
        if person.bag_type == "handbag" and index == 1:
            hx, hy = wrist[0], wrist[1] + 0.03
            fig.draw.line(
                [fig.pt(hx - 0.02, hy + 0.02), fig.pt(hx, hy), fig.pt(hx + 0.02, hy + 0.02)],
                fill=bag,
                width=fig.px(0.01),
            )
            fig.rect(hx - 0.045, hy + 0.02, hx + 0.045, hy + 0.095, bag)

    def hair_behind() -> None:
        if person.hair_length != "short":
            length = 0.21 if person.hair_length == "medium" else 0.33
            x0 = head_x - head_rx * (1.15 if not side else 1.05) - (0.01 if side else 0.0)
            x1 = head_x + head_rx * (1.15 if not side else -0.1)
            fig.rect(x0, head_y, x1, length, hair)
            fig.ellipse((x0 + x1) / 2, length, (x1 - x0) / 2, 0.02, hair)

    def head() -> None:
        fig.ellipse(head_x, head_y, head_rx, head_ry, hair if back else skin)
        if back:
            if person.hair_length == "short":
                fig.chord(head_x, head_y, head_rx, head_ry, 40, 140, skin)  # nape below short hair
        elif side:
            fig.chord(head_x, head_y, head_rx * 1.06, head_ry * 1.06, 150, 345, hair)
            fig.ellipse(head_x - 0.025, head_y + 0.005, 0.034, 0.05, hair)
        else:
            fig.chord(
                head_x, head_y - 0.022, head_rx * 1.04, head_ry * 1.02, 180, 360, hair
            )  # hairline above the eyes
        if hat is not None:
            if person.hat_type == "cap":
                fig.chord(head_x, head_y - 0.005, head_rx * 1.1, head_ry * 1.02, 180, 360, hat)
                if side:
                    fig.rect(head_x, head_y - 0.012, head_x + head_rx + 0.05, head_y, hat)
                elif not back:
                    fig.rect(
                        head_x - head_rx, head_y - 0.015, head_x + head_rx, head_y + 0.002, _shade(hat, 0.8)
                    )
            else:
                fig.ellipse(head_x, head_y - 0.03, head_rx * 2.0, 0.017, hat)
                fig.rect(head_x - head_rx * 0.95, head_y - 0.085, head_x + head_rx * 0.95, head_y - 0.03, hat)

    def torso() -> None:
        hem = 0.7 if person.top_type == "coat" else 0.5
        hem_w = hw * 1.25 if person.top_type == "coat" else hw * 1.02
        fig.rect(head_x - 0.02, 0.12, head_x + 0.02, 0.19, skin)  # neck: under long hair seen from behind
        fig.polygon([(-sw, 0.17), (sw, 0.17), (ww, 0.4), (hem_w, hem), (-hem_w, hem), (-ww, 0.4)], top)
        fig.ellipse(-sw + 0.02, 0.19, 0.03, 0.025, top)
        fig.ellipse(sw - 0.02, 0.19, 0.03, 0.025, top)
        if person.top_type == "tank top":
            if not back:
                fig.polygon([(-0.05 * girth, 0.17), (0.05 * girth, 0.17), (0.0, 0.24)], skin)
            fig.rect(-sw, 0.165, -sw * 0.55, 0.2, skin)
            fig.rect(sw * 0.55, 0.165, sw, 0.2, skin)
        elif person.top_type == "jacket" and not back:
            x = 0.03 if side else 0.0
            fig.rect(x - 0.006, 0.19, x + 0.006, hem, _shade(top, 0.6))
            fig.polygon([(-0.05, 0.165), (0.05, 0.165), (0.0, 0.215)], _shade(top, 0.75))
        elif person.top_type == "sweater":
            fig.rect(-hem_w, hem - 0.03, hem_w, hem, _shade(top, 0.82))
        if person.top_type == "coat":
            fig.rect(-ww * 0.9, 0.4, ww * 0.9, 0.42, _shade(top, 0.7))  # belt

    def hips() -> None:
        if person.bottom_type == "skirt":
            fig.polygon([(-hw, 0.46), (hw, 0.46), (hw * 1.55, 0.68), (-hw * 1.55, 0.68)], bottom)
        else:
            fig.polygon([(-hw, 0.46), (hw, 0.46), (hw * 0.95, 0.56), (-hw * 0.95, 0.56)], bottom)

    def backpack(in_front: bool) -> None:
        if bag is None or person.bag_type != "backpack":
            return
        if side and not in_front:
            fig.rect(-sw - 0.1, 0.2, -sw + 0.01, 0.45, bag)
        elif back and in_front:
            fig.rect(-sw * 0.78, 0.2, sw * 0.78, 0.44, bag)
            fig.rect(-sw * 0.5, 0.32, sw * 0.5, 0.4, _shade(bag, 0.75))  # front pocket
        elif not back and not side and not in_front:
            fig.rect(-sw * 0.7, 0.15, sw * 0.7, 0.3, bag)  # top of the pack, seen over the shoulders
        elif not back and in_front:
            for sx in (-1, 1):
                fig.rect(sx * sw * 0.72 - 0.016, 0.17, sx * sw * 0.72 + 0.016, 0.38, bag)
        elif side and in_front:
            fig.draw.line([fig.pt(-sw * 0.3, 0.18), fig.pt(sw * 0.1, 0.35)], fill=bag, width=fig.px(0.02))

    def shoulder_bag() -> None:
        if bag is None or person.bag_type != "shoulder bag":
            return
        fig.draw.line([fig.pt(-sw * 0.8, 0.175), fig.pt(hw, 0.46)], fill=bag, width=fig.px(0.018))
        fig.rect(hw - 0.04, 0.42, hw + 0.07, 0.52, bag)

    # Painter's order: what is further from the camera first.
    if side:
        arm(0)
    if not back:
        backpack(in_front=False)
        hair_behind()
    leg(0)
    leg(1)
    hips()
    torso()
    backpack(in_front=True)
    shoulder_bag()
    if back:
        hair_behind()
    head()
    if not side:
        arm(0)
    arm(1)


def draw_pedestrian(
    person: PedestrianIdentity,
    rng: np.random.Generator,
    height: int = 192,
    width: int = 64,
    occlusion_rate: float = 0.15,
) -> Image.Image:
    """One photo of `person`: random view, pose, placement, scene, occlusion, mirror and lighting."""
    h, w = height * _SUPERSAMPLE, width * _SUPERSAMPLE
    image = Image.new("RGB", (w, h))
    draw = ImageDraw.Draw(image)
    size = h * float(rng.uniform(0.8, 0.94)) * person.stature
    feet = h * float(rng.uniform(0.95, 0.99)) - 0.03 * size
    _draw_background(draw, rng, w, h, ground=feet - float(rng.uniform(0.02, 0.15)) * h)
    cx = w / 2 + float(rng.uniform(-0.09, 0.09)) * w
    _draw_person(_Figure(draw, cx, feet - size, size), person, _sample_pose(rng), rng)
    if rng.random() < occlusion_rate:
        _draw_occluder(draw, rng, w, h)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    image = image.reduce(_SUPERSAMPLE)
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 0.8))))
    # Lighting: exposure, colour cast, a light falling off across the frame, sensor noise.
    pixels = np.asarray(image, dtype=np.float32)
    gain = float(rng.uniform(0.7, 1.2)) * (1.0 + rng.uniform(-0.08, 0.08, size=3))
    falloff = float(rng.uniform(-0.25, 0.25)) * np.linspace(-0.5, 0.5, width, dtype=np.float32)
    pixels = pixels * gain.astype(np.float32) * (1.0 + falloff)[None, :, None]
    if rng.random() < 0.5:  # sensor noise, on half the shots only: it dominates the PNG size
        pixels += float(rng.uniform(1.0, 3.0)) * rng.standard_normal(size=pixels.shape, dtype=np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


# ---------------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------------


class _Piece(NamedTuple):
    text: str
    colour_of: str | None = None  # the attribute this colour word names: a target for wrong-colour noise
    type_of: str | None = None  # the garment attribute this noun names: a target for wrong-garment noise
    noise: bool = False
    article: bool = False  # "a"/"an", settled at rendering from the next word (noise may change it)


_A = _Piece("a", article=True)
_NOUNS = {
    "woman": ("woman", "lady", "young woman", "female pedestrian", "girl"),
    "man": ("man", "gentleman", "young man", "male pedestrian", "guy"),
}
_PRONOUNS = {"woman": ("she", "her"), "man": ("he", "his")}
_HAIR_LENGTH_WORDS = {"short": ("short",), "medium": ("shoulder-length", "medium-length"), "long": ("long",)}
_TOP_WORDS = {
    "t-shirt": ("t-shirt", "tee", "short-sleeved shirt"),
    "tank top": ("tank top", "sleeveless top", "vest top"),
    "sweater": ("sweater", "jumper", "pullover"),
    "jacket": ("jacket", "zip-up jacket"),
    "coat": ("long coat", "coat", "overcoat"),
}
_BOTTOM_WORDS = {
    "trousers": ("trousers", "pants", "slacks"),
    "jeans": ("jeans", "denim jeans"),
    "shorts": ("shorts",),
    "skirt": ("skirt", "knee-length skirt"),
}
_SHOE_WORDS = ("shoes", "sneakers", "trainers")
_BAG_WORDS = {
    "backpack": ("backpack", "rucksack"),
    "shoulder bag": ("shoulder bag", "crossbody bag", "messenger bag"),
    "handbag": ("handbag", "purse"),
}
_HAT_WORDS = {"cap": ("cap", "baseball cap"), "hat": ("hat", "brimmed hat", "sun hat")}
_WEAR_VERBS = ("wears", "is wearing", "has on", "is dressed in")
_COLOUR_SYNONYMS = {"grey": ("grey", "gray"), "blonde": ("blonde", "blond")}
_COLOUR_PALETTES = {
    "hair_colour": tuple(HAIR_COLOURS),
    "top_colour": TOP_COLOURS,
    "bottom_colour": BOTTOM_COLOURS,
    "shoes_colour": SHOE_COLOURS,
    "bag_colour": BAG_COLOURS,
    "hat_colour": HAT_COLOURS,
}


def _colour_word(rng: np.random.Generator, colour: str) -> str:
    return _choice(rng, _COLOUR_SYNONYMS.get(colour, (colour,)))


class _Phrases:
    """Noun phrases for one caption of one identity, each a list of pieces."""

    def __init__(self, person: PedestrianIdentity, rng: np.random.Generator) -> None:
        self.p, self.rng = person, rng
        self.pronoun, self.possessive = _PRONOUNS[person.gender]

    def colour(self, attribute: str) -> _Piece:
        return _Piece(_colour_word(self.rng, getattr(self.p, attribute)), colour_of=attribute)

    def pick(self, options: Sequence[str]) -> str:
        return _choice(self.rng, options)

    def subject(self, indefinite: bool = False) -> list[_Piece]:
        det = _A if indefinite or self.rng.random() < 0.6 else _Piece(self.pick(("the", "this")))
        return [det, _Piece(" " + self.pick(_NOUNS[self.p.gender]))]

    def hair_length(self) -> _Piece:
        return _Piece(self.pick(_HAIR_LENGTH_WORDS[self.p.hair_length]))

    def hair(self) -> list[_Piece]:
        if self.rng.random() < 0.7:
            return [self.hair_length(), _Piece(" "), self.colour("hair_colour"), _Piece(" hair")]
        return [self.colour("hair_colour"), _Piece(" "), self.hair_length(), _Piece(" hair")]

    def top(self) -> list[_Piece]:
        noun = _Piece(self.pick(_TOP_WORDS[self.p.top_type]), type_of="top_type")
        if self.rng.random() < 0.75:
            return [_A, _Piece(" "), self.colour("top_colour"), _Piece(" "), noun]
        return [_A, _Piece(" "), noun, _Piece(" in "), self.colour("top_colour")]

    def bottom(self) -> list[_Piece]:
        noun = _Piece(self.pick(_BOTTOM_WORDS[self.p.bottom_type]), type_of="bottom_type")
        if self.p.bottom_type == "skirt":
            return [_A, _Piece(" "), self.colour("bottom_colour"), _Piece(" "), noun]
        lead = [_Piece("a pair of ")] if self.rng.random() < 0.25 else []
        return [*lead, self.colour("bottom_colour"), _Piece(" "), noun]

    def shoes(self) -> list[_Piece]:
        lead = [_Piece("a pair of ")] if self.rng.random() < 0.25 else []
        return [*lead, self.colour("shoes_colour"), _Piece(f" {self.pick(_SHOE_WORDS)}")]

    def bag(self) -> list[_Piece]:
        return [
            _A,
            _Piece(" "),
            self.colour("bag_colour"),
            _Piece(f" {self.pick(_BAG_WORDS[self.p.bag_type])}"),
        ]

    def hat(self) -> list[_Piece]:
        return [
            _A,
            _Piece(" "),
            self.colour("hat_colour"),
            _Piece(f" {self.pick(_HAT_WORDS[self.p.hat_type])}"),
        ]

    def carrying(self) -> _Piece:
        return _Piece(
            self.pick(("carrying", "holding") if self.p.bag_type == "handbag" else ("carrying", "with"))
        )

    def carries(self) -> _Piece:
        return _Piece(
            self.pick(
                ("carries", "is carrying", "has") if self.p.bag_type != "handbag" else ("holds", "carries")
            )
        )

    def wear(self) -> _Piece:
        return _Piece(self.pick(_WEAR_VERBS))

    def enumerate(self, items: list[list[_Piece]]) -> list[_Piece]:
        """`a, b and c` (sometimes with an Oxford comma)."""
        if len(items) == 1:
            return items[0]
        out: list[_Piece] = []
        for item in items[:-2]:
            out += [*item, _Piece(", ")]
        last = ", and " if len(items) > 2 and self.rng.random() < 0.3 else " and "
        return out + [*items[-2], _Piece(last), *items[-1]]

    def clothes(self) -> list[list[_Piece]]:
        items = [self.top(), self.bottom(), self.shoes()]
        if self.rng.random() < 0.4:
            order = self.rng.permutation(len(items))
            items = [items[int(i)] for i in order]
        return items


def _caption_sentences(person: PedestrianIdentity, rng: np.random.Generator) -> list[list[_Piece]]:
    """A clean description of every captioned attribute, in one of six sentence shapes."""
    w = _Phrases(person, rng)
    has_bag, has_hat = person.bag_type != "none", person.hat_type != "none"
    pron = _Piece(w.pronoun)
    shape = int(rng.integers(6))
    if shape == 0:
        first = [*w.subject(), _Piece(" with "), *w.hair()]
        if has_hat:
            first += [_Piece(" and "), *w.hat()]
        first += [_Piece(" "), w.wear(), _Piece(" "), *w.enumerate(w.clothes())]
        if has_bag:
            first += [_Piece(", "), w.carrying(), _Piece(" "), *w.bag()]
        return [first]
    if shape == 1:
        sentences = [[*w.subject(), _Piece(" "), w.wear(), _Piece(" "), *w.enumerate(w.clothes())]]
        second = [pron, _Piece(" has "), *w.hair()]
        if has_hat:
            second += [_Piece(" and wears "), *w.hat()]
        sentences.append(second)
        if has_bag:
            sentences.append([pron, _Piece(" "), w.carries(), _Piece(" "), *w.bag()])
        return sentences
    if shape == 2:
        sentences = [[*w.subject(), _Piece(" has "), *w.hair()]]
        worn = w.clothes() + ([w.hat()] if has_hat else [])
        sentences.append([pron, _Piece(" "), w.wear(), _Piece(" "), *w.enumerate(worn)])
        if has_bag:
            sentences.append([pron, _Piece(" "), w.carries(), _Piece(" "), *w.bag()])
        return sentences
    if shape == 3:  # terse attribute list, in any order
        items = [w.hair(), w.top(), w.bottom(), w.shoes()]
        items += ([w.bag()] if has_bag else []) + ([w.hat()] if has_hat else [])
        listed: list[_Piece] = []
        for index in rng.permutation(len(items)):
            listed += [_Piece(", "), *items[int(index)]]
        return [[*w.subject(), *listed]]
    if shape == 4:
        first = [*w.subject(), _Piece(" in "), *w.top(), _Piece(" and "), *w.bottom()]
        if has_bag:
            first += [_Piece(", "), w.carrying(), _Piece(" "), *w.bag()]
        second = [
            _Piece(f"{w.possessive} hair is "),
            w.hair_length(),
            _Piece(" and "),
            w.colour("hair_colour"),
        ]
        third = [pron, _Piece(" "), w.wear(), _Piece(" "), *w.shoes()]
        if has_hat:
            third += [_Piece(" and "), *w.hat()]
        return [first, second, third]
    sentences = [[_Piece("this is "), *w.subject(indefinite=True), _Piece(" with "), *w.hair()]]
    second = [pron, _Piece(" "), w.wear(), _Piece(" "), *w.enumerate(w.clothes())]
    if has_bag:
        second += [_Piece(", "), w.carrying(), _Piece(" "), *w.bag()]
    sentences.append(second)
    if has_hat:
        sentences.append([pron, _Piece(" also wears "), *w.hat()])
    return sentences


def _hallucinations(person: PedestrianIdentity, rng: np.random.Generator) -> list[str]:
    """Accessory phrases the image does not show, including absent bags and hats of the vocabulary."""
    phrases = list(NOISE_ACCESSORIES)
    if person.bag_type == "none":
        colour = _choice(rng, BAG_COLOURS)
        bag = _choice(rng, ("backpack", "shoulder bag", "handbag"))
        phrases.append(f"carrying {'an' if colour[0] in 'aeiou' else 'a'} {colour} {bag}")
    if person.hat_type == "none":
        colour = _choice(rng, HAT_COLOURS)
        phrases.append(
            f"wearing {'an' if colour[0] in 'aeiou' else 'a'} {colour} {_choice(rng, ('cap', 'hat'))}"
        )
    return phrases


def _plant_noise(
    sentences: list[list[_Piece]], person: PedestrianIdentity, rng: np.random.Generator
) -> list[list[_Piece]]:
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
                wrong = [c for c in _COLOUR_PALETTES[attribute] if c != getattr(person, attribute)]
                sentences[i][k] = _Piece(_colour_word(rng, _choice(rng, wrong)), noise=True)
                continue
        pool = _hallucinations(person, rng) if kind < 0.4 else list(NOISE_BACKGROUNDS)
        phrase = _choice(rng, [p for p in pool if p not in used])
        used.add(phrase)
        if rng.random() < 0.6:  # trailing clause of an existing sentence
            sentences[int(rng.integers(len(sentences)))] += [_Piece(", "), _Piece(phrase, noise=True)]
        else:  # a sentence of its own, after the one that introduces the person
            pronoun = _PRONOUNS[person.gender][0]
            at = 1 + int(rng.integers(len(sentences)))
            sentences.insert(at, [_Piece(f"{pronoun} is "), _Piece(phrase, noise=True)])
    return sentences


_NoisePlanter = Callable[[list[list[_Piece]], PedestrianIdentity, np.random.Generator], list[list[_Piece]]]


@functools.cache
def _noise_planter(noise_profile: str) -> _NoisePlanter:
    """The function that plants `noise_profile`'s noise into a caption's sentences."""
    if noise_profile == "default":
        return _plant_noise
    if noise_profile == "confusable":
        from .synth_noise import CaptionVocabulary, plant_confusable_noise

        vocabulary = CaptionVocabulary(
            piece=_Piece,
            palettes=_COLOUR_PALETTES,
            synonyms=_COLOUR_SYNONYMS,
            # A skirt, the only singular bottom, is left out: "a pair of blue skirt" would give noise away.
            garments={
                "top_type": _TOP_WORDS,
                "bottom_type": {kind: nouns for kind, nouns in _BOTTOM_WORDS.items() if kind != "skirt"},
            },
            items={"bag": _BAG_WORDS, "hat": _HAT_WORDS},
            pronouns={gender: words[0] for gender, words in _PRONOUNS.items()},
        )
        return functools.partial(plant_confusable_noise, vocabulary=vocabulary)
    raise ValueError(f"noise_profile must be one of {NOISE_PROFILES}, got {noise_profile!r}")


def _render(sentences: list[list[_Piece]]) -> tuple[str, list[list[int]]]:
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
    plant = _noise_planter(noise_profile)
    sentences = _caption_sentences(person, rng)
    if noise_rng is not None:
        sentences = plant(sentences, person, noise_rng)
    return _render(sentences)


# ---------------------------------------------------------------------------------------------
# Corpus
# ---------------------------------------------------------------------------------------------


def _rng(seed: int, *key: int) -> np.random.Generator:
    """An independent stream per (seed, key); keys are padded to one length because
    numpy's SeedSequence treats trailing zeros as absent ([1, 2] and [1, 2, 0] collide)."""
    if len(key) > 4:
        raise ValueError(f"random stream keys have at most 4 parts, got {key}")
    return np.random.default_rng([seed, *key, *([0] * (4 - len(key))), 1])


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def generate_examples(
    config: SynthPedesConfig, split: str, person_ranges: Sequence[tuple[int, int]] | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of `split` as `(caption_id, row)`, for the persons in `person_ranges` ([start, stop) pairs).

    One row per caption; ids are positional (image_id = person_id * images_per_id + k,
    caption_id = image_id * captions_per_image + j), so they are stable across runs and shards.
    """
    stream = _split_stream(split)
    people = sample_identities(config)[split]
    per_id, per_image = config.num_images_per_id(split), config.captions_per_image
    noise_rate = config.noise_rate if split == "train" else 0.0
    for start, stop in person_ranges if person_ranges is not None else [(0, len(people))]:
        if not 0 <= start <= stop <= len(people):
            raise ValueError(
                f"person range [{start}, {stop}) is outside the {len(people)} {split} identities"
            )
        for person_id in range(start, stop):
            person = people[person_id]
            for k in range(per_id):
                image_id = person_id * per_id + k
                draw_rng = _rng(config.seed, stream, person_id, k, 0)
                image = draw_pedestrian(person, draw_rng, config.height, config.width, config.occlusion_rate)
                png = _png_bytes(image)
                for j in range(per_image):
                    noise_rng = _rng(config.seed, stream, person_id, k, 2 + 2 * j)
                    noisy = noise_rng.random() < noise_rate
                    caption_rng = _rng(config.seed, stream, person_id, k, 1 + 2 * j)
                    caption, spans = write_caption(
                        person, caption_rng, noise_rng if noisy else None, config.noise_profile
                    )
                    caption_id = image_id * per_image + j
                    yield (
                        caption_id,
                        {
                            "image": {"bytes": png, "path": None},
                            "caption": caption,
                            "person_id": person_id,
                            "image_id": image_id,
                            "caption_id": caption_id,
                            "image_path": f"synth/{split}/{person_id:06d}_{k}.png",
                            "noise_spans": spans,
                        },
                    )


def _prepared_builder(
    cache_dir: str | os.PathLike | None,
    overrides: dict[str, Any],
    num_proc: int | None,
    download_mode: str | None,
) -> datasets.DatasetBuilder:
    unknown = sorted(set(overrides) - set(synth_config_fields()))
    if unknown:
        raise ValueError(
            f"unknown SynthPEDES option(s) {unknown}; expected some of {list(synth_config_fields())}"
        )
    defaults = SynthPedesConfig()
    SynthPedesConfig(**overrides)  # validate here, with a clear message, before datasets wraps it
    # Only the fields that differ from the defaults name the cache entry, so one corpus is built once
    # however it is spelled (SynthPedesConfig() and no overrides share the "default" entry).
    overrides = {name: value for name, value in overrides.items() if value != getattr(defaults, name)}
    # Imported here: the builder module imports this one.
    from .builders.synth_pedes import SynthPedes

    builder = SynthPedes(cache_dir=None if cache_dir is None else str(cache_dir), **overrides)
    builder.download_and_prepare(num_proc=num_proc, download_mode=download_mode)
    return builder


def generate_synth_pedes(
    config: SynthPedesConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
    num_proc: int | None = None,
    download_mode: str | None = None,
) -> datasets.DatasetDict:
    """Both splits of a SynthPEDES corpus, built once and then read from the `datasets` cache.

    `download_mode="force_redownload"` rebuilds; `num_proc` spreads the drawing over processes.
    """
    overrides = dataclasses.asdict(config) if config is not None else {}
    return _prepared_builder(cache_dir, overrides, num_proc, download_mode).as_dataset()


def load_synth_pedes(
    split: str = "train",
    cache_dir: str | os.PathLike | None = None,
    num_proc: int | None = None,
    download_mode: str | None = None,
    **overrides: Any,
) -> datasets.Dataset:
    """One split ("train" or "test") of SynthPEDES; `overrides` are `SynthPedesConfig` fields
    (e.g. `num_train_ids=50`), the rest as in `generate_synth_pedes`."""
    _split_stream(split)
    return _prepared_builder(cache_dir, overrides, num_proc, download_mode).as_dataset(split=split)


# ---------------------------------------------------------------------------------------------
# Token-level noise labels
# ---------------------------------------------------------------------------------------------


def _attribute_words() -> frozenset[str]:
    """Every word a clean caption uses to name something drawn: colours, hair length, garments, bags, hats and
    the gender nouns (not "young" or "pedestrian", which every identity could carry)."""
    phrases = [*COLOURS, *HAIR_COLOURS, *(w for words in _COLOUR_SYNONYMS.values() for w in words)]
    for table in (_HAIR_LENGTH_WORDS, _TOP_WORDS, _BOTTOM_WORDS, _BAG_WORDS, _HAT_WORDS, _NOUNS):
        phrases += [phrase for options in table.values() for phrase in options]
    phrases += [*_SHOE_WORDS, "hair"]
    return frozenset(word for phrase in phrases for word in phrase.split()) - {"young", "pedestrian"}


ATTRIBUTE_WORDS = _attribute_words()
_WORD_BREAKS = " ,."


def _encode_with_offsets(tokenizer: Any, caption: str, max_length: int, caller: str):
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
    tokenizer: Any, caption: str, noise_spans: Sequence[Sequence[int]], max_length: int = 77
) -> list[bool]:
    """Per token position (as in `token_noise_flags`), whether the token belongs to a word of `ATTRIBUTE_WORDS`
    outside every noise span: the words a clean caption uses to describe what the image shows.

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
        flags.append(caption[left:right].lower() in ATTRIBUTE_WORDS)
    return flags


__all__ = [
    "ATTRIBUTE_WORDS",
    "COLOURS",
    "HAIR_COLOURS",
    "NOISE_ACCESSORIES",
    "NOISE_BACKGROUNDS",
    "NOISE_PROFILES",
    "SYNTH_PEDES_FEATURES",
    "PedestrianIdentity",
    "SynthPedesConfig",
    "draw_pedestrian",
    "generate_examples",
    "generate_synth_pedes",
    "load_synth_pedes",
    "sample_identities",
    "synth_config_fields",
    "token_attribute_flags",
    "token_noise_flags",
    "write_caption",
]
