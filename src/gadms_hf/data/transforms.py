"""Train/eval image transforms for pedestrian images (docs/method.md §8), applied on the fly to a dataset.

The pipeline works on uint8 tensors up to the resize (PIL -> uint8 tensor, bicubic resize with
antialias, flip, pad + crop) and converts to float only at the final size, which keeps a 2-core
data loader fast. Bicubic matches `make_image_processor`, so evaluating through `build_transform(...,
train=False)` and through `GADMSProcessor` gives the same pixels up to resize rounding.

Unreadable images. The image column is decoded here, not by `datasets`, so that an image that
broke after the corpus was built (the build skips the ones broken then) is skipped, logged and
counted (`UnreadableCounter`, which `GADMSTrainer` logs as `unreadable_images`) instead of
ending the run with a PIL traceback. A map-style batch keeps its size, as every rank must give
the cross-rank SDM gather the same number of rows: a readable row of the batch stands in for the
skipped one. A streamed row is simply dropped (the loader fills the batch from the stream).

Random erasing fills with the dataset mean. It runs after normalisation, where the CLIP mean colour
is exactly 0 in every channel, so the fill value is 0. (The authors' code passes the *un-normalised*
mean there, which paints a light grey of about mean + 1.7 std instead.) Its probability is
torchvision's default 0.5, as in the authors' code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import datasets
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2

from ..processing_gadms import CLIP_MEAN, CLIP_STD
from .randomness import derive_seed

logger = logging.getLogger(__name__)

PAD = 10  # pixels at the paper's 128-pixel width; scaled with the width (2 at 32), so the shift is the same share
ERASE_SCALE = (0.02, 0.4)
ERASE_PROB = 0.5
FLIP_PROB = 0.5
# How many unreadable images each process names in a warning; the rest are only counted.
_NAMED_UNREADABLE = 10


def to_rgb(image: Image.Image) -> Image.Image:
    """Grayscale, palette, RGBA, CMYK, ... -> RGB (alpha is dropped, not composited)."""
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image, got {type(image).__name__}")
    return image if image.mode == "RGB" else image.convert("RGB")


def build_transform(height: int, width: int, train: bool, erase_prob: float = ERASE_PROB) -> v2.Compose:
    """PIL image -> `(3, height, width)` float32 tensor, CLIP-normalised; augmented when `train`.

    train: resize, horizontal flip (0.5), pad 10 (at width 128; in proportion at other widths) + random
    crop back to size, normalise, random erasing (p `erase_prob`, 0.5 as the authors; area 0.02-0.4, filled
    with the mean). eval: resize, normalise.
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got height={height}, width={width}")
    if not 0.0 <= erase_prob <= 1.0:
        raise ValueError(f"erase_prob={erase_prob} must be a probability in [0, 1]")
    size = (height, width)
    steps: list[Callable[[Any], Any]] = [
        v2.Lambda(to_rgb),
        v2.PILToTensor(),
        v2.Resize(size, interpolation=InterpolationMode.BICUBIC, antialias=True),
    ]
    if train:
        pad = max(1, round(PAD * width / 128))
        steps += [v2.RandomHorizontalFlip(FLIP_PROB), v2.RandomCrop(size, padding=pad)]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(CLIP_MEAN), list(CLIP_STD))]
    if train and erase_prob > 0:
        steps.append(v2.RandomErasing(p=erase_prob, scale=ERASE_SCALE, value=0.0))
    return v2.Compose(steps)


class UnreadableCounter:
    """Images skipped as unreadable, summed over the main process and its data-loader workers.

    Workers are separate processes, so the count lives in a shared-memory tensor that forked and
    spawned workers alike write into, one slot per worker (slot 0: the main process).
    """

    SLOTS = 64

    def __init__(self) -> None:
        self.slots = torch.zeros(self.SLOTS, dtype=torch.int64).share_memory_()
        self.named = 0  # per process: how many have been named in a warning

    def add(self, label: str, problem: str) -> None:
        worker = torch.utils.data.get_worker_info()
        self.slots[0 if worker is None else 1 + worker.id % (self.SLOTS - 1)] += 1
        if self.named < _NAMED_UNREADABLE:
            self.named += 1
            more = " (further ones are only counted)" if self.named == _NAMED_UNREADABLE else ""
            logger.warning("skipped unreadable image %s: %s%s", label, problem, more)

    @property
    def total(self) -> int:
        return int(self.slots.sum())


_DECODER = datasets.Image()  # decodes a stored {"bytes", "path"} value exactly as the dataset would


def _decode(value: Any) -> tuple[Image.Image | None, str]:
    """(the image, "") or (None, why it cannot be read); PIL images pass through."""
    if isinstance(value, Image.Image) or not isinstance(value, dict):
        return value, ""  # not stored form: `to_rgb` accepts PIL images and rejects the rest
    try:
        return _DECODER.decode_example(value), ""
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        return None, f"{type(error).__name__}: {error}"


class ImageColumnTransform:
    """Batch transform for `datasets`: replaces the image column by `pixel_values`, keeps the rest.

    A plain class (not a closure) so that it pickles into spawned data-loader workers. With a
    `seed`, each training augmentation is drawn from `derive_seed(seed, epoch, row[key_column])`
    (see `data/randomness.py`), so a resumed run replays it exactly; the trainer advances `epoch`
    through `set_epoch` before each epoch's workers start. Unreadable images are skipped and
    counted in `unreadable` (module docstring); `keep_batch_size` is set by `apply_transform`.
    """

    def __init__(
        self,
        height: int,
        width: int,
        train: bool,
        image_column: str = "image",
        seed: int | None = None,
        key_column: str = "caption_id",
        erase_prob: float = ERASE_PROB,
    ) -> None:
        self.image_column = image_column
        self.transform = build_transform(height, width, train, erase_prob)
        self.seeded = train and seed is not None
        self.seed, self.key_column, self.epoch = seed, key_column, 0
        self.unreadable = UnreadableCounter()
        self.keep_batch_size = False

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if self.image_column not in batch:
            raise KeyError(f"column {self.image_column!r} not found; the batch has {sorted(batch)}")
        batch = self._readable_rows(batch)
        out = {name: values for name, values in batch.items() if name != self.image_column}
        images = batch[self.image_column]
        if not self.seeded:
            out["pixel_values"] = [self.transform(image) for image in images]
            return out
        if self.key_column not in batch:
            raise KeyError(f"seeded augmentation needs the {self.key_column!r} column; the batch has {sorted(batch)}")
        pixels = []
        for image, key in zip(images, batch[self.key_column]):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(self.seed, self.epoch, [key]))
                pixels.append(self.transform(image))
        out["pixel_values"] = pixels
        return out

    def _readable_rows(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """The batch with decoded images, unreadable rows skipped (replaced or dropped, see the module)."""
        decoded = [_decode(value) for value in batch[self.image_column]]
        readable = [i for i, (image, _) in enumerate(decoded) if image is not None]
        if len(readable) == len(decoded):
            return {**batch, self.image_column: [image for image, _ in decoded]}
        labels = []
        for value, (image, problem) in zip(batch[self.image_column], decoded):
            if image is None:
                labels.append(f"{value.get('path') or 'embedded bytes'} ({problem})")
                self.unreadable.add(labels[-1], problem)
        if self.keep_batch_size and not readable:
            raise ValueError(f"no readable image in this batch: {'; '.join(labels)}. Rebuild the corpus "
                             "(load_corpus notices changed image files and skips broken ones) or fix the files.")
        rows = readable + [readable[k % len(readable)] for k in range(len(decoded) - len(readable))] \
            if self.keep_batch_size else readable
        batch = {name: [values[i] for i in rows] for name, values in batch.items()}
        batch[self.image_column] = [decoded[i][0] for i in rows]
        return batch


def apply_transform(
    dataset: datasets.Dataset | datasets.IterableDataset, transform: ImageColumnTransform
) -> datasets.Dataset | datasets.IterableDataset:
    """The dataset with `transform` applied on the fly (the input dataset is not modified).

    A `Dataset` gets a formatting transform (`Dataset.with_transform`): nothing is written to disk
    and each access draws fresh augmentations. An `IterableDataset` (streaming) gets a lazy `map`.
    An `Image` column is handed over undecoded, so that the transform can skip unreadable images.
    """
    column = transform.image_column
    if isinstance(dataset, datasets.IterableDataset):
        transform.keep_batch_size = False
        return _undecoded(dataset, column).map(transform, batched=True, batch_size=1, remove_columns=[column])
    if column not in dataset.column_names:
        raise KeyError(f"column {column!r} not found; the dataset has {dataset.column_names}")
    transform.keep_batch_size = True
    return _undecoded(dataset, column).with_transform(transform)


def _undecoded(dataset: datasets.Dataset | datasets.IterableDataset, column: str):
    feature = (dataset.features or {}).get(column)
    if isinstance(feature, datasets.Image) and feature.decode:
        return dataset.cast_column(column, datasets.Image(mode=feature.mode, decode=False))
    return dataset


def with_transform(
    dataset: datasets.Dataset | datasets.IterableDataset,
    height: int,
    width: int,
    train: bool,
    image_column: str = "image",
    seed: int | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    """`apply_transform` with a new `ImageColumnTransform(height, width, train, image_column, seed)`."""
    return apply_transform(dataset, ImageColumnTransform(height, width, train, image_column, seed))


__all__ = ["ImageColumnTransform", "UnreadableCounter", "apply_transform", "build_transform", "to_rgb", "with_transform"]
