"""Train/eval image transforms for pedestrian images (SPEC section 8), applied on the fly to a dataset.

The pipeline works on uint8 tensors up to the resize (PIL -> uint8 tensor, bicubic resize with
antialias, flip, pad + crop) and converts to float only at the final size, which keeps a 2-core
data loader fast. Bicubic matches `make_image_processor`, so evaluating through `build_transform(...,
train=False)` and through `GADMSProcessor` gives the same pixels up to resize rounding.

Random erasing fills with the dataset mean. It runs after normalisation, where the CLIP mean colour
is exactly 0 in every channel, so the fill value is 0. (The authors' code passes the *un-normalised*
mean there, which paints a light grey of about mean + 1.7 std instead.) Its probability is
torchvision's default 0.5, as in the authors' code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import datasets
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2

from ..processing_gadms import CLIP_MEAN, CLIP_STD

PAD = 10
ERASE_SCALE = (0.02, 0.4)
ERASE_PROB = 0.5
FLIP_PROB = 0.5


def to_rgb(image: Image.Image) -> Image.Image:
    """Grayscale, palette, RGBA, CMYK, ... -> RGB (alpha is dropped, not composited)."""
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image, got {type(image).__name__}")
    return image if image.mode == "RGB" else image.convert("RGB")


def build_transform(height: int, width: int, train: bool) -> v2.Compose:
    """PIL image -> `(3, height, width)` float32 tensor, CLIP-normalised; augmented when `train`.

    train: resize, horizontal flip (0.5), pad 10 + random crop back to size, normalise, random
    erasing (p 0.5, area 0.02-0.4, filled with the mean). eval: resize, normalise.
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got height={height}, width={width}")
    size = (height, width)
    steps: list[Callable[[Any], Any]] = [
        v2.Lambda(to_rgb),
        v2.PILToTensor(),
        v2.Resize(size, interpolation=InterpolationMode.BICUBIC, antialias=True),
    ]
    if train:
        steps += [v2.RandomHorizontalFlip(FLIP_PROB), v2.RandomCrop(size, padding=PAD)]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(CLIP_MEAN), list(CLIP_STD))]
    if train:
        steps.append(v2.RandomErasing(p=ERASE_PROB, scale=ERASE_SCALE, value=0.0))
    return v2.Compose(steps)


class ImageColumnTransform:
    """Batch transform for `datasets`: replaces the image column by `pixel_values`, keeps the rest.

    A plain class (not a closure) so that it pickles into spawned data-loader workers.
    """

    def __init__(self, height: int, width: int, train: bool, image_column: str = "image") -> None:
        self.image_column = image_column
        self.transform = build_transform(height, width, train)

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if self.image_column not in batch:
            raise KeyError(f"column {self.image_column!r} not found; the batch has {sorted(batch)}")
        out = {name: values for name, values in batch.items() if name != self.image_column}
        out["pixel_values"] = [self.transform(image) for image in batch[self.image_column]]
        return out


def with_transform(
    dataset: datasets.Dataset | datasets.IterableDataset,
    height: int,
    width: int,
    train: bool,
    image_column: str = "image",
) -> datasets.Dataset | datasets.IterableDataset:
    """The dataset with images turned into `pixel_values` on the fly (the input dataset is not modified).

    A `Dataset` gets a formatting transform (`Dataset.with_transform`): nothing is written to disk
    and each access draws fresh augmentations. An `IterableDataset` (streaming) gets a lazy `map`.
    """
    transform = ImageColumnTransform(height, width, train, image_column)
    if isinstance(dataset, datasets.IterableDataset):
        return dataset.map(transform, batched=True, batch_size=1, remove_columns=[image_column])
    if image_column not in dataset.column_names:
        raise KeyError(f"column {image_column!r} not found; the dataset has {dataset.column_names}")
    return dataset.with_transform(transform)


__all__ = ["ImageColumnTransform", "build_transform", "to_rgb", "with_transform"]
