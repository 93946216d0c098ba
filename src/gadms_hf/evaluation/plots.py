"""Pictures for reports: GASS token heat-maps and text-to-image retrieval grids (PNG).

Figures are built on matplotlib's Agg canvas directly, never through `pyplot`, so plotting
from a training job neither needs a display nor changes the backend of the caller's session.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from PIL import Image

from .quality_study import TAYLOR

NOISE_OUTLINE = "#1d4ed8"  # blue: distinct from every colour of the score map
CORRECT_FRAME = "#16a34a"
WRONG_FRAME = "#dc2626"


def _display_image(image: Any, where: str) -> np.ndarray:
    """PIL image, (H, W[, C]) array or (C, H, W) tensor -> array imshow can draw.

    Float pixels outside [0, 1] (e.g. mean/std-normalised tensors) are min-max rescaled for display.
    """
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().float().numpy()
        if image.ndim == 3 and image.shape[0] in (1, 3):
            image = image.transpose(1, 2, 0)
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(
            f"{where}: expected a PIL image, (H, W, 3) array or (3, H, W) tensor, got {array.shape}"
        )
    if array.dtype.kind == "f":
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:
            array = (array - low) / max(high - low, 1e-12)
    return array


def _check_lengths(**sequences: Sequence[Any] | None) -> int:
    lengths = {name: len(values) for name, values in sequences.items() if values is not None}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"inputs must have one entry per example, got lengths {lengths}")
    count = next(iter(lengths.values()))
    if count == 0:
        raise ValueError("nothing to plot: no examples")
    return count


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100, bbox_inches="tight")
    return path


def _draw_tokens(axes, tokens, scores, flags, cmap, renderer) -> None:
    """Lay word pieces out left to right with line wrapping, each on a box coloured by its score."""
    axes.set_axis_off()
    box = axes.get_window_extent(renderer)
    x, y, line_height = 0.0, 1.0, 0.0
    for token, score, noisy in zip(tokens, scores, flags):
        text = axes.text(
            x,
            y,
            token,
            transform=axes.transAxes,
            va="top",
            fontsize=10,
            color="white" if score > 0.75 else "black",
            bbox=dict(
                boxstyle="round,pad=0.25",
                facecolor=cmap(float(score)),
                edgecolor=NOISE_OUTLINE if noisy else "#d4d4d4",
                linewidth=2.2 if noisy else 0.6,
            ),
        )
        extent = text.get_window_extent(renderer)
        width, height = extent.width / box.width, extent.height / box.height
        line_height = max(line_height, 1.9 * height)
        if x > 0.0 and x + width > 1.0:
            x, y = 0.0, y - line_height
            text.set_position((x, y))
        x += width + 12.0 / box.width


def plot_gass_heatmap(
    images: Sequence[Any],
    tokens: Sequence[Sequence[str]],
    scores: Sequence[Sequence[float]],
    path: str | Path,
    noise_flags: Sequence[Sequence[bool]] | None = None,
    max_examples: int = 8,
) -> Path:
    """Save one row per example: the image, then its caption's tokens coloured by GASS score.

    `tokens` are display strings (decoded word pieces), `scores` one value in [0, 1] per token (pale =
    low = likely noise). Tokens flagged in `noise_flags` (e.g. planted noise words) are outlined in blue.
    At most `max_examples` rows are drawn. Returns the PNG's path.
    """
    count = _check_lengths(images=images, tokens=tokens, scores=scores, noise_flags=noise_flags)
    if max_examples < 1:
        raise ValueError(f"max_examples must be >= 1, got {max_examples}")
    count = min(count, max_examples)
    rows = []
    for i in range(count):
        row_scores = np.asarray(scores[i], dtype=np.float64).reshape(-1)
        flags = [False] * len(tokens[i]) if noise_flags is None else list(noise_flags[i])
        if not len(tokens[i]) == len(row_scores) == len(flags):
            raise ValueError(
                f"example {i}: {len(tokens[i])} tokens but {len(row_scores)} scores"
                + ("" if noise_flags is None else f" and {len(flags)} noise flags")
            )
        if not np.all((row_scores >= 0.0) & (row_scores <= 1.0)):
            raise ValueError(
                f"example {i}: scores must lie in [0, 1], got min {row_scores.min()} max {row_scores.max()}"
            )
        rows.append((_display_image(images[i], f"images[{i}]"), list(tokens[i]), row_scores, flags))

    cmap = colormaps["YlOrRd"]
    figure = Figure(figsize=(11.0, 1.9 * count + 0.9))
    canvas = FigureCanvasAgg(figure)
    grid = figure.add_gridspec(count + 1, 2, width_ratios=[1, 9], height_ratios=[1.9] * count + [0.25])
    renderer = canvas.get_renderer()
    for i, (image, row_tokens, row_scores, flags) in enumerate(rows):
        image_axes = figure.add_subplot(grid[i, 0])
        image_axes.imshow(image, cmap="gray" if image.ndim == 2 else None)
        image_axes.set_axis_off()
        _draw_tokens(figure.add_subplot(grid[i, 1]), row_tokens, row_scores, flags, cmap, renderer)
    colorbar = figure.colorbar(
        ScalarMappable(norm=Normalize(0.0, 1.0), cmap=cmap),
        cax=figure.add_subplot(grid[count, 1]),
        orientation="horizontal",
    )
    legend = "GASS score (pale = low = likely noise)"
    colorbar.set_label(legend + ("; blue outline = planted noise" if noise_flags is not None else ""))
    return _save(figure, path)


def plot_retrieval_grid(
    query_texts: Sequence[str],
    gallery_images: Sequence[Any] | Dataset,
    topk_indices: Sequence[Sequence[int]] | np.ndarray | torch.Tensor,
    correct: Sequence[Sequence[bool]] | np.ndarray | torch.Tensor,
    path: str | Path,
    k: int = 5,
) -> Path:
    """Save one block per query: its caption above its top-k gallery images, correct framed green, wrong red.

    `gallery_images` is indexable by gallery row (a list of images, or a `Dataset` with an `image`
    column); `topk_indices` / `correct` are (n_query, >= k), as `evaluate_retrieval(return_topk=k)`
    returns them. Returns the PNG's path.
    """
    count = _check_lengths(query_texts=query_texts, topk_indices=topk_indices, correct=correct)
    indices = np.asarray(topk_indices.cpu() if isinstance(topk_indices, torch.Tensor) else topk_indices)
    hits = np.asarray(correct.cpu() if isinstance(correct, torch.Tensor) else correct, dtype=bool)
    if indices.ndim != 2 or hits.shape != indices.shape:
        raise ValueError(
            f"topk_indices {indices.shape} and correct {hits.shape} must be the same (n_query, k) shape"
        )
    if not 1 <= k <= indices.shape[1]:
        raise ValueError(f"k must be between 1 and the {indices.shape[1]} ranked items per query, got {k}")
    if indices.min() < 0 or indices.max() >= len(gallery_images):
        raise ValueError(
            f"topk_indices must index the {len(gallery_images)} gallery images, got {indices.max()}"
        )

    def gallery_image(row: int) -> Any:
        return gallery_images[row]["image"] if isinstance(gallery_images, Dataset) else gallery_images[row]

    figure = Figure(figsize=(1.35 * k + 0.4, 3.8 * count))
    FigureCanvasAgg(figure)
    blocks = figure.subfigures(count, 1, squeeze=False)[:, 0]
    wrap = max(30, math.floor(11 * k))
    for i, block in enumerate(blocks):
        block.suptitle(textwrap.fill(str(query_texts[i]), wrap), fontsize=9, y=0.99, va="top")
        axes_row = block.subplots(1, k, squeeze=False)[0]
        block.subplots_adjust(top=0.78, bottom=0.07, left=0.02, right=0.98, wspace=0.08)
        for rank, axes in enumerate(axes_row):
            image = _display_image(gallery_image(int(indices[i, rank])), f"gallery image {indices[i, rank]}")
            axes.imshow(image, cmap="gray" if image.ndim == 2 else None)
            axes.set_xticks([])
            axes.set_yticks([])
            axes.set_xlabel(f"#{rank + 1}", fontsize=8, labelpad=2)
            for spine in axes.spines.values():
                spine.set_edgecolor(CORRECT_FRAME if hits[i, rank] else WRONG_FRAME)
                spine.set_linewidth(4)
    return _save(figure, path)


def quality_study_scorers(runs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(recipe, label) of every row whose bank scores were measured, in the order of their panels: GA-DMS's
    GASS first, then each row with our `-taylor` score."""
    scored = list(dict.fromkeys(r["recipe"] for r in runs if "gass" in r))
    return ([("gadms", "GASS")] if "gadms" in scored else []) + [
        (recipe, "ours, occlusion_taylor") for recipe in scored if TAYLOR in recipe]


def plot_quality_study(result: dict[str, Any], path: str | Path) -> Path:
    """A quality study (`scripts/bench_quality.py --output`) as one PNG: R1 of every run and each recipe's
    mean ± std (left); the bank's token scores of attribute vs planted noise tokens (right), one panel per
    `quality_study_scorers` row on its own axis: GA-DMS's GASS, then our `-taylor` score's rows.

    A reader sees at once whether the recipes' seed spreads overlap, and whether a score puts noise below
    attributes.
    """
    setting, runs, summary = result["setting"], result["runs"], result["summary"]
    blocks = [(setting["noise_rate"], tuple(summary["noisy"]))]  # the summary keeps the table's row order
    if summary["clean"]:
        blocks.append((0.0, tuple(summary["clean"])))
    scorers = quality_study_scorers(runs)
    figure = Figure(figsize=(11, 4.6), dpi=110)
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(max(len(scorers), 1), 2, width_ratios=[1.6, 1])
    left = figure.add_subplot(grid[:, 0])
    labels = []
    for rate, recipes in blocks:
        for recipe in recipes:
            values = [r["R1"] for r in runs if r["recipe"] == recipe and r["noise_rate"] == rate]
            x = len(labels)
            left.scatter([x] * len(values), values, s=18, color="#64748b", zorder=3)
            left.errorbar([x], [float(np.mean(values))], yerr=[float(np.std(values, ddof=1)) if len(values) > 1 else 0],
                          fmt="_", markersize=22, capsize=5, color=WRONG_FRAME if rate else "#2563eb", zorder=4)
            labels.append(f"{recipe}, noise {rate:g}")
    left.set_xticks(range(len(labels)), labels, fontsize=7, rotation=30, ha="right")
    left.set_ylabel(f"R1 on SynthPEDES {setting['split']} (%)")
    left.set_title(f"{len(setting['seeds'])} seed(s): dots = runs, bars = mean ± std", fontsize=9)
    left.grid(axis="y", alpha=0.3)
    for row, (recipe, name) in enumerate(scorers):
        axes = figure.add_subplot(grid[row, 1])
        scored = [r["gass"] for r in runs if r["recipe"] == recipe and "gass" in r]
        for kind, colour in (("attribute", CORRECT_FRAME), ("noise", WRONG_FRAME)):
            counts = np.sum([g["histograms"][kind] for g in scored], axis=0)
            edges = np.linspace(0.0, 1.0, len(counts) + 1)  # token_separation's equal bins of [0, 1]
            axes.stairs(counts / max(counts.sum(), 1), edges, color=colour, linewidth=1.8,
                        label=f"{kind} tokens ({int(counts.sum())})")
        aurocs = ", ".join(f"{g['auroc']:.3f}" for g in scored)
        axes.set_title(f"{name} ({recipe}): AUROC per seed {aurocs}", fontsize=8)
        axes.set_ylabel("share of tokens", fontsize=8)
        axes.legend(fontsize=7)
    if scorers:
        axes.set_xlabel("token score in the bank")
    figure.tight_layout()
    return _save(figure, path)


__all__ = ["plot_gass_heatmap", "plot_quality_study", "plot_retrieval_grid", "quality_study_scorers"]
