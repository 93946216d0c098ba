"""The report pictures are real PNGs showing what they claim (colours, frames, outlines)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset, Features, Image
from matplotlib import colormaps
from PIL import Image as PILImage

from gadms_hf.evaluation.plots import (
    CORRECT_FRAME,
    NOISE_OUTLINE,
    WRONG_FRAME,
    plot_gass_heatmap,
    plot_retrieval_grid,
)

CAPTIONS = [
    caption.split()
    for caption in (
        "a woman in a red jacket and black trousers carrying a purple umbrella",
        "a man wearing a blue shirt and a golden watch",
    )
]


def person(colour: tuple[int, int, int]) -> PILImage.Image:
    pixels = np.full((96, 32, 3), 235, dtype=np.uint8)
    pixels[20:55, 6:26] = colour
    return PILImage.fromarray(pixels)


def read_png(path) -> np.ndarray:
    with open(path, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    with PILImage.open(path) as image:
        return np.asarray(image.convert("RGB")).astype(int)


def has_colour(pixels: np.ndarray, hex_colour: str, tolerance: int = 12, at_least: int = 50) -> bool:
    target = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(pixels - target).max(axis=-1) <= tolerance).sum()) >= at_least


def test_gass_heatmap_colours_tokens_and_outlines_noise(tmp_path):
    scores = [np.linspace(0.0, 1.0, len(CAPTIONS[0])), np.full(len(CAPTIONS[1]), 0.5)]
    flags = [
        [word in ("purple", "umbrella") for word in CAPTIONS[0]],
        [word == "golden" for word in CAPTIONS[1]],
    ]
    tensor_image = torch.from_numpy(np.array(person((30, 160, 30)))).permute(2, 0, 1) / 255.0
    images = [person((200, 30, 30)), tensor_image]  # PIL and a (C, H, W) tensor
    path = plot_gass_heatmap(images, CAPTIONS, scores, tmp_path / "sub" / "gass.png", noise_flags=flags)
    pixels = read_png(path)
    assert pixels.shape[0] > 150 and pixels.shape[1] > 400
    assert has_colour(pixels, NOISE_OUTLINE)
    top = colormaps["YlOrRd"](1.0)
    assert has_colour(pixels, "#" + "".join(f"{round(255 * c):02x}" for c in top[:3]), tolerance=6)

    plain = read_png(plot_gass_heatmap(images, CAPTIONS, scores, tmp_path / "plain.png"))
    assert not has_colour(plain, NOISE_OUTLINE, at_least=1)


def test_gass_heatmap_keeps_at_most_max_examples(tmp_path):
    images = [person((30, 30, 200))] * 5
    tokens = [["a", "man"]] * 5
    scores = [[0.2, 0.9]] * 5
    two = read_png(plot_gass_heatmap(images, tokens, scores, tmp_path / "two.png", max_examples=2))
    five = read_png(plot_gass_heatmap(images, tokens, scores, tmp_path / "five.png", max_examples=8))
    assert five.shape[0] > 2 * two.shape[0] * 0.9


def test_gass_heatmap_rejects_bad_input(tmp_path):
    images = [person((0, 0, 0))] * 2
    with pytest.raises(ValueError, match=r"one entry per example.*'images': 2, 'tokens': 1"):
        plot_gass_heatmap(images, CAPTIONS[:1], [[0.5]], tmp_path / "x.png")
    with pytest.raises(ValueError, match="example 1: 10 tokens but 2 scores"):
        plot_gass_heatmap(images, CAPTIONS, [[0.5] * 13, [0.1, 0.2]], tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"example 0: scores must lie in \[0, 1\]"):
        plot_gass_heatmap(images, CAPTIONS, [[1.5] * 13, [0.1] * 10], tmp_path / "x.png")
    with pytest.raises(ValueError, match="and 1 noise flags"):
        plot_gass_heatmap(
            images, CAPTIONS, [[0.5] * 13, [0.1] * 10], tmp_path / "x.png", noise_flags=[[False] * 13, [True]]
        )
    assert not (tmp_path / "x.png").exists()


def test_retrieval_grid_frames_correct_green_and_wrong_red(tmp_path):
    colours = [(200, 30, 30), (30, 30, 200), (30, 160, 30), (200, 200, 30), (120, 30, 160)]
    gallery = Dataset.from_dict(
        {"image": [person(c) for c in colours]}, features=Features({"image": Image()})
    )
    topk = torch.tensor([[0, 3, 1], [1, 4, 0]])
    correct = torch.tensor([[True, False, False], [False, False, False]])
    pixels = read_png(
        plot_retrieval_grid(
            ["a woman in red", "a man in blue"], gallery, topk, correct, tmp_path / "grid.png", k=3
        )
    )
    assert pixels.shape[0] > 400 and pixels.shape[1] > 200
    assert has_colour(pixels, CORRECT_FRAME) and has_colour(pixels, WRONG_FRAME)

    all_wrong = read_png(
        plot_retrieval_grid(
            ["q"], [person(c) for c in colours], [[2, 1]], [[False, False]], tmp_path / "wrong.png", k=2
        )
    )
    assert not has_colour(all_wrong, CORRECT_FRAME, at_least=1) and has_colour(all_wrong, WRONG_FRAME)


def test_retrieval_grid_rejects_bad_input(tmp_path):
    gallery = [person((0, 0, 0))] * 3
    with pytest.raises(ValueError, match=r"'query_texts': 2, 'topk_indices': 1"):
        plot_retrieval_grid(["a", "b"], gallery, [[0, 1]], [[True, False]], tmp_path / "g.png", k=2)
    with pytest.raises(ValueError, match="k must be between 1 and the 2 ranked items"):
        plot_retrieval_grid(["a"], gallery, [[0, 1]], [[True, False]], tmp_path / "g.png", k=5)
    with pytest.raises(ValueError, match="must index the 3 gallery images, got 7"):
        plot_retrieval_grid(["a"], gallery, [[0, 7]], [[True, False]], tmp_path / "g.png", k=2)
    with pytest.raises(ValueError, match="same"):
        plot_retrieval_grid(["a"], gallery, [[0, 1]], [[True]], tmp_path / "g.png", k=1)
