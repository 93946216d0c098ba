"""SynthPEDES photos: a pedestrian drawn with PIL in front of a street scene.

Images of one identity vary in view, pose, position, scale, lighting, background clutter,
occlusion and mirroring, so that a retrieval model has to read the attributes, not memorise a
picture. The figure is drawn at twice the size and box-filtered down (anti-aliased edges at
little cost), one body part at a time in painter's order, from body coordinates (fractions of
the person's height) so that the same code draws every size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .identities import COLOURS, HAIR_COLOURS, SKIN_TONES, PedestrianIdentity
from .streams import choice

_SUPERSAMPLE = 2  # draw at 2x and box-filter down: anti-aliased edges at little cost
_THIGH, _SHIN, _UPPER_ARM, _FOREARM = 0.245, 0.235, 0.16, 0.15  # limb lengths
_HEAD_Y, _HEAD_RX, _HEAD_RY = 0.075, 0.056, 0.07

Colour = tuple[int, int, int]


def _shade(colour: Colour, factor: float) -> Colour:
    return tuple(int(max(0, min(255, c * factor))) for c in colour)


def _jitter(rng: np.random.Generator, colour: Colour, amount: int = 10) -> Colour:
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

    def polygon(self, points: Sequence[tuple[float, float]], fill: Colour) -> None:
        self.draw.polygon([self.pt(x, y) for x, y in points], fill=fill)

    def ellipse(self, x: float, y: float, rx: float, ry: float, fill: Colour) -> None:
        (x0, y0), (x1, y1) = self.pt(x - rx, y - ry), self.pt(x + rx, y + ry)
        self.draw.ellipse((x0, y0, x1, y1), fill=fill)

    def chord(self, x: float, y: float, rx: float, ry: float, start: float, end: float, fill: Colour) -> None:
        (x0, y0), (x1, y1) = self.pt(x - rx, y - ry), self.pt(x + rx, y + ry)
        self.draw.chord((x0, y0, x1, y1), start, end, fill=fill)

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill: Colour) -> None:
        (a, b), (c, d) = self.pt(x0, y0), self.pt(x1, y1)
        self.draw.rectangle((min(a, c), min(b, d), max(a, c), max(b, d)), fill=fill)

    def limb(self, p0: tuple[float, float], p1: tuple[float, float], width: float, fill: Colour) -> None:
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
    view = choice(rng, ("front", "back", "side"), (0.35, 0.35, 0.3))
    if view == "side":
        stride = float(rng.uniform(0.0, 26.0)) * (1 if rng.random() < 0.5 else -1)
        swing = -0.7 * stride
        legs = (-stride, -stride * (1.5 if stride > 0 else 0.3), stride, stride * (0.3 if stride > 0 else 1.5))
        arms = (-swing, -swing + 12.0, swing, swing + 12.0)
    else:
        spread, lift = float(rng.uniform(2.0, 9.0)), float(rng.uniform(-4.0, 4.0))
        legs = (-spread + lift, -spread + lift, spread + lift, spread + lift)
        out = float(rng.uniform(4.0, 12.0))
        arms = (-out, -out + 6.0, out, out - 6.0)
    return _Pose(view, legs, arms)


def _scene_colour(rng: np.random.Generator, saturation: float) -> Colour:
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


@dataclass(frozen=True)
class _Body:
    """One shot of one person: identity and pose, this shot's colours, and the body's proportions."""

    person: PedestrianIdentity
    pose: _Pose
    skin: Colour
    hair: Colour
    top: Colour
    bottom: Colour
    shoes: Colour
    bag: Colour | None
    hat: Colour | None
    girth: float
    sw: float  # half-widths: shoulders, waist, hips
    ww: float
    hw: float
    hip_x: float
    shoulder_x: float
    leg_w: float
    arm_w: float
    head_x: float

    @property
    def side(self) -> bool:
        return self.pose.view == "side"

    @property
    def back(self) -> bool:
        return self.pose.view == "back"


def _dress(person: PedestrianIdentity, pose: _Pose, rng: np.random.Generator) -> _Body:
    """The shot's colours (each jittered a little) and the body's proportions (gender, build, view)."""
    woman, side = person.gender == "woman", pose.view == "side"
    skin = _jitter(rng, SKIN_TONES[person.skin_tone], 6)
    hair = _jitter(rng, HAIR_COLOURS[person.hair_colour], 8)
    top = _jitter(rng, COLOURS[person.top_colour])
    bottom = _jitter(rng, COLOURS[person.bottom_colour])
    shoes = _jitter(rng, COLOURS[person.shoes_colour])
    bag = _jitter(rng, COLOURS[person.bag_colour]) if person.bag_colour else None
    hat = _jitter(rng, COLOURS[person.hat_colour]) if person.hat_colour else None
    girth = (0.62 if side else 1.0) * person.build
    sw = (0.115 if woman else 0.135) * girth
    return _Body(
        person, pose, skin, hair, top, bottom, shoes, bag, hat,
        girth=girth,
        sw=sw,
        ww=(0.082 if woman else 0.098) * girth,
        hw=(0.112 if woman else 0.102) * girth,
        hip_x=0.0 if side else 0.048 * person.build,
        shoulder_x=0.0 if side else sw - 0.028,
        leg_w=0.064 * person.build,
        arm_w=0.046 * person.build,
        head_x=0.012 if side else 0.0,
    )


def _draw_leg(fig: _Figure, b: _Body, index: int) -> None:
    person, legs = b.person, b.pose.legs
    sign = -1 if index == 0 else 1
    dim = 0.78 if index == 0 and b.side else 1.0  # the far leg of a side view is in shadow
    hip = (sign * b.hip_x, 0.49)
    knee = _towards(hip, legs[2 * index], _THIGH)
    ankle = _towards(knee, legs[2 * index + 1], _SHIN)
    long_legs = person.bottom_type in ("trousers", "jeans")
    fig.limb(hip, knee, b.leg_w, _shade(b.skin if person.bottom_type == "skirt" else b.bottom, dim))
    fig.limb(knee, ankle, b.leg_w * 0.85, _shade(b.bottom if long_legs else b.skin, dim))
    if person.bottom_type == "shorts":  # bare knee below the hem
        fig.limb(knee, _towards(hip, legs[2 * index], _THIGH * 0.8), b.leg_w * 0.92, _shade(b.skin, dim))
    if person.bottom_type == "jeans":  # rolled-up cuffs and a pale outer seam read as denim
        cuff = _towards(knee, legs[2 * index + 1], _SHIN * 0.9)
        fig.limb(cuff, ankle, b.leg_w * 0.9, _shade(b.bottom, dim * 1.35))
        seam_x = sign * b.leg_w * 0.3 if not b.side else 0.0
        fig.draw.line(
            [fig.pt(hip[0] + seam_x, hip[1] + 0.02), fig.pt(knee[0] + seam_x, knee[1])],
            fill=_shade(b.bottom, dim * 1.5),
            width=fig.px(0.008),
        )
    toe = 0.05 if b.side else 0.0
    fig.ellipse(ankle[0] + toe, ankle[1] + 0.022, 0.045 if not b.side else 0.065, 0.024, _shade(b.shoes, dim))


def _draw_arm(fig: _Figure, b: _Body, index: int) -> None:
    person, arms = b.person, b.pose.arms
    sign = -1 if index == 0 else 1
    dim = 0.78 if index == 0 and b.side else 1.0
    shoulder = (sign * b.shoulder_x, 0.195)
    elbow = _towards(shoulder, arms[2 * index], _UPPER_ARM)
    wrist = _towards(elbow, arms[2 * index + 1], _FOREARM)
    sleeve = person.top_type != "tank top"
    long_sleeves = person.top_type in ("sweater", "jacket", "coat")
    fig.limb(shoulder, elbow, b.arm_w, _shade(b.top if sleeve else b.skin, dim))
    if person.top_type == "t-shirt":
        fig.limb(_towards(shoulder, arms[2 * index], _UPPER_ARM * 0.55), elbow, b.arm_w * 0.9, _shade(b.skin, dim))
    fig.limb(elbow, wrist, b.arm_w * 0.88, _shade(b.top if long_sleeves else b.skin, dim))
    fig.ellipse(wrist[0], wrist[1] + 0.01, 0.024, 0.028, _shade(b.skin, dim))
    if person.bag_type == "handbag" and index == 1:
        hx, hy = wrist[0], wrist[1] + 0.03
        fig.draw.line(
            [fig.pt(hx - 0.02, hy + 0.02), fig.pt(hx, hy), fig.pt(hx + 0.02, hy + 0.02)],
            fill=b.bag,
            width=fig.px(0.01),
        )
        fig.rect(hx - 0.045, hy + 0.02, hx + 0.045, hy + 0.095, b.bag)


def _draw_hair_behind(fig: _Figure, b: _Body) -> None:
    """Hair below the head: behind the body from the front and side, over it from the back."""
    if b.person.hair_length == "short":
        return
    length = 0.21 if b.person.hair_length == "medium" else 0.33
    x0 = b.head_x - _HEAD_RX * (1.15 if not b.side else 1.05) - (0.01 if b.side else 0.0)
    x1 = b.head_x + _HEAD_RX * (1.15 if not b.side else -0.1)
    fig.rect(x0, _HEAD_Y, x1, length, b.hair)
    fig.ellipse((x0 + x1) / 2, length, (x1 - x0) / 2, 0.02, b.hair)


def _draw_head(fig: _Figure, b: _Body) -> None:
    head_x = b.head_x
    fig.ellipse(head_x, _HEAD_Y, _HEAD_RX, _HEAD_RY, b.hair if b.back else b.skin)
    if b.back:
        if b.person.hair_length == "short":
            fig.chord(head_x, _HEAD_Y, _HEAD_RX, _HEAD_RY, 40, 140, b.skin)  # nape below short hair
    elif b.side:
        fig.chord(head_x, _HEAD_Y, _HEAD_RX * 1.06, _HEAD_RY * 1.06, 150, 345, b.hair)
        fig.ellipse(head_x - 0.025, _HEAD_Y + 0.005, 0.034, 0.05, b.hair)
    else:  # hairline above the eyes
        fig.chord(head_x, _HEAD_Y - 0.022, _HEAD_RX * 1.04, _HEAD_RY * 1.02, 180, 360, b.hair)
    if b.hat is not None:
        _draw_hat(fig, b, b.hat)


def _draw_hat(fig: _Figure, b: _Body, hat: Colour) -> None:
    head_x = b.head_x
    if b.person.hat_type == "cap":
        fig.chord(head_x, _HEAD_Y - 0.005, _HEAD_RX * 1.1, _HEAD_RY * 1.02, 180, 360, hat)
        if b.side:
            fig.rect(head_x, _HEAD_Y - 0.012, head_x + _HEAD_RX + 0.05, _HEAD_Y, hat)
        elif not b.back:
            fig.rect(head_x - _HEAD_RX, _HEAD_Y - 0.015, head_x + _HEAD_RX, _HEAD_Y + 0.002, _shade(hat, 0.8))
    else:
        fig.ellipse(head_x, _HEAD_Y - 0.03, _HEAD_RX * 2.0, 0.017, hat)
        fig.rect(head_x - _HEAD_RX * 0.95, _HEAD_Y - 0.085, head_x + _HEAD_RX * 0.95, _HEAD_Y - 0.03, hat)


def _draw_torso(fig: _Figure, b: _Body) -> None:
    top_type, top, skin, sw, ww, hw = b.person.top_type, b.top, b.skin, b.sw, b.ww, b.hw
    hem = 0.7 if top_type == "coat" else 0.5
    hem_w = hw * 1.25 if top_type == "coat" else hw * 1.02
    fig.rect(b.head_x - 0.02, 0.12, b.head_x + 0.02, 0.19, skin)  # neck: under long hair seen from behind
    fig.polygon([(-sw, 0.17), (sw, 0.17), (ww, 0.4), (hem_w, hem), (-hem_w, hem), (-ww, 0.4)], top)
    fig.ellipse(-sw + 0.02, 0.19, 0.03, 0.025, top)
    fig.ellipse(sw - 0.02, 0.19, 0.03, 0.025, top)
    if top_type == "tank top":
        if not b.back:
            fig.polygon([(-0.05 * b.girth, 0.17), (0.05 * b.girth, 0.17), (0.0, 0.24)], skin)
        fig.rect(-sw, 0.165, -sw * 0.55, 0.2, skin)
        fig.rect(sw * 0.55, 0.165, sw, 0.2, skin)
    elif top_type == "jacket" and not b.back:
        x = 0.03 if b.side else 0.0
        fig.rect(x - 0.006, 0.19, x + 0.006, hem, _shade(top, 0.6))
        fig.polygon([(-0.05, 0.165), (0.05, 0.165), (0.0, 0.215)], _shade(top, 0.75))
    elif top_type == "sweater":
        fig.rect(-hem_w, hem - 0.03, hem_w, hem, _shade(top, 0.82))
    if top_type == "coat":
        fig.rect(-ww * 0.9, 0.4, ww * 0.9, 0.42, _shade(top, 0.7))  # belt


def _draw_hips(fig: _Figure, b: _Body) -> None:
    hw = b.hw
    if b.person.bottom_type == "skirt":
        fig.polygon([(-hw, 0.46), (hw, 0.46), (hw * 1.55, 0.68), (-hw * 1.55, 0.68)], b.bottom)
    else:
        fig.polygon([(-hw, 0.46), (hw, 0.46), (hw * 0.95, 0.56), (-hw * 0.95, 0.56)], b.bottom)


def _draw_backpack(fig: _Figure, b: _Body, in_front: bool) -> None:
    """The part of a backpack on this side of the body: the pack itself or its straps."""
    bag, sw, side, back = b.bag, b.sw, b.side, b.back
    if bag is None or b.person.bag_type != "backpack":
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


def _draw_shoulder_bag(fig: _Figure, b: _Body) -> None:
    if b.bag is None or b.person.bag_type != "shoulder bag":
        return
    fig.draw.line([fig.pt(-b.sw * 0.8, 0.175), fig.pt(b.hw, 0.46)], fill=b.bag, width=fig.px(0.018))
    fig.rect(b.hw - 0.04, 0.42, b.hw + 0.07, 0.52, b.bag)


def _draw_person(fig: _Figure, person: PedestrianIdentity, pose: _Pose, rng: np.random.Generator) -> None:
    b = _dress(person, pose, rng)
    # Painter's order: what is further from the camera first.
    if b.side:
        _draw_arm(fig, b, 0)
    if not b.back:
        _draw_backpack(fig, b, in_front=False)
        _draw_hair_behind(fig, b)
    _draw_leg(fig, b, 0)
    _draw_leg(fig, b, 1)
    _draw_hips(fig, b)
    _draw_torso(fig, b)
    _draw_backpack(fig, b, in_front=True)
    _draw_shoulder_bag(fig, b)
    if b.back:
        _draw_hair_behind(fig, b)
    _draw_head(fig, b)
    if not b.side:
        _draw_arm(fig, b, 0)
    _draw_arm(fig, b, 1)


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


__all__ = ["draw_pedestrian"]
