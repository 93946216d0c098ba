"""Decode one gallery photo into model pixels, holding at most that one full-size image in memory.

A folder of camera photos is not a curated dataset: files are huge (a 3 MP photo is 9 MB decoded), some
are truncated, mislabelled or hostile (a header that claims 20000x20000). Each file is decoded alone and
turned into the model's (3, H, W) input at once, so memory never grows with the number of photos, and
every way a file can fail is caught per file, so one bad photo never stops an index.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps

# A folder is searched for these suffixes (case-insensitive); anything else in it is not a photo.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"})


class UnusableImage(Exception):
    """A file that cannot become model pixels; the message says why, for the list of skipped files."""


def model_input_size(processor: Any) -> tuple[int, int]:
    """(height, width) the processor resizes every image to."""
    size = processor.image_processor.size
    return int(size["height"]), int(size["width"])


def _decode(path: Path, size: tuple[int, int]) -> Image.Image:
    with warnings.catch_warnings():
        # Pillow only warns between its pixel limit and twice it: a photo that big is skipped, not decoded.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            # JPEG only: decode at the smallest DCT scale that still leaves twice the model's input size,
            # which cuts the time and memory of decoding a multi-megapixel photo by up to 64x.
            image.draft("RGB", (2 * size[1], 2 * size[0]))
            image = image.convert("RGB")
    return ImageOps.exif_transpose(image)  # phones store portraits sideways with a rotation tag


def read_pixels(path: Path, processor: Any) -> torch.Tensor:
    """The (3, H, W) float pixel tensor the model expects for the photo at `path`.

    Raises `UnusableImage` naming the reason for any file that cannot be used: not an image, truncated,
    over Pillow's `Image.MAX_IMAGE_PIXELS`, or anything else a decoder raises on malformed input.
    """
    try:
        image = _decode(path, model_input_size(processor))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise UnusableImage(f"over Pillow's decompression-bomb limit (Image.MAX_IMAGE_PIXELS): {error}") from error
    except Exception as error:  # decoders raise OSError, SyntaxError, ValueError, struct.error, ... on bad bytes
        raise UnusableImage(f"{type(error).__name__}: {error}") from error
    return processor.image_processor(images=[image], return_tensors="pt")["pixel_values"][0]


__all__ = ["IMAGE_SUFFIXES", "UnusableImage", "model_input_size", "read_pixels"]
