"""Image transforms: shapes, CLIP normalisation, augmentation, colour modes, `datasets` integration."""

from __future__ import annotations

import logging
import pickle

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from gadms_hf.data.transforms import ImageColumnTransform, apply_transform, build_transform, with_transform
from gadms_hf.processing_gadms import CLIP_MEAN, CLIP_STD, make_image_processor

H, W = 64, 32
MEAN = torch.tensor(CLIP_MEAN)[:, None, None]
STD = torch.tensor(CLIP_STD)[:, None, None]


def constant_image(rgb=(200, 100, 50), size=(45, 90)) -> Image.Image:
    return Image.new("RGB", size, rgb)


def normalised(rgb) -> torch.Tensor:
    return (torch.tensor(rgb, dtype=torch.float32)[:, None, None] / 255 - MEAN) / STD


def textured_image(seed: int = 0, height: int = 150, width: int = 60) -> Image.Image:
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 255, (height // 10, width // 10, 3))
    return Image.fromarray(np.kron(blocks, np.ones((10, 10, 1))).astype(np.uint8))


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("size", [(30, 100), (200, 80), (W, H)])
def test_output_shape_and_dtype(train, size):
    out = build_transform(H, W, train)(textured_image().resize(size))
    assert out.shape == (3, H, W) and out.dtype == torch.float32 and type(out) is torch.Tensor


def test_eval_normalises_a_constant_image_exactly():
    out = build_transform(H, W, train=False)(constant_image())
    assert torch.allclose(out, normalised((200, 100, 50)).expand(3, H, W), atol=1e-5)
    mean_colour = tuple(round(255 * m) for m in CLIP_MEAN)
    assert build_transform(H, W, train=False)(constant_image(mean_colour)).abs().max() < 0.02


def test_eval_is_deterministic_and_matches_the_processor():
    transform, image = build_transform(H, W, train=False), textured_image()
    first = transform(image)
    assert torch.equal(first, transform(image))
    processed = make_image_processor(H, W)(image, return_tensors="pt")["pixel_values"][0]
    assert torch.allclose(first, processed, atol=1e-4)


def test_train_values_are_the_image_the_padding_or_the_mean():
    """On a constant image, every output pixel is the colour, the black padding, or 0 (= the CLIP mean)."""
    torch.manual_seed(0)
    transform = build_transform(H, W, train=True)
    colour, black = normalised((200, 100, 50)), normalised((0, 0, 0))
    saw_padding = saw_erasing = False
    for _ in range(40):
        out = transform(constant_image())
        is_colour = torch.isclose(out, colour.expand_as(out), atol=1e-5).all(dim=0)
        is_black = torch.isclose(out, black.expand_as(out), atol=1e-5).all(dim=0)
        is_erased = (out == 0).all(dim=0)
        assert (is_colour | is_black | is_erased).all()
        saw_padding |= bool(is_black.any())
        saw_erasing |= bool(is_erased.any())
    assert saw_padding and saw_erasing


def test_train_flips_and_varies():
    torch.manual_seed(0)
    transform = build_transform(H, W, train=True)
    left_red = np.zeros((H, W, 3), dtype=np.uint8)
    left_red[:, : W // 2, 0] = 255
    image = Image.fromarray(left_red)
    sides = set()
    outputs = []
    for _ in range(30):
        out = transform(image)
        outputs.append(out)
        sides.add(bool(out[0, :, : W // 2].mean() > out[0, :, W // 2 :].mean()))
    assert sides == {True, False}  # both orientations occur
    assert not all(torch.equal(outputs[0], o) for o in outputs[1:])


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "CMYK", "P", "1", "I;16"])
def test_every_colour_mode_becomes_three_channels(mode):
    image = textured_image().convert(mode)
    for train in (True, False):
        assert build_transform(H, W, train)(image).shape == (3, H, W)


def test_grayscale_gives_equal_channels():
    out = build_transform(H, W, train=False)(constant_image((90, 90, 90)).convert("L"))
    assert torch.allclose(out * STD + MEAN, torch.full((3, H, W), 90 / 255), atol=1e-5)


def test_cmyk_is_converted_not_reinterpreted():
    cmyk_white = Image.new("CMYK", (20, 40), (0, 0, 0, 0))
    out = build_transform(H, W, train=False)(cmyk_white)
    assert torch.allclose(out, normalised((255, 255, 255)), atol=1e-5)


def test_non_image_input_is_rejected():
    with pytest.raises(TypeError, match="PIL image"):
        ImageColumnTransform(H, W, train=False)({"image": [np.zeros((4, 4, 3))]})


def make_dataset(n: int = 6) -> datasets.Dataset:
    modes = ["RGB", "L", "RGBA"]
    images = [textured_image(i).convert(modes[i % 3]) for i in range(n)]
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string"),
                                  "person_id": datasets.Value("int64")})
    return datasets.Dataset.from_dict(
        {"image": images, "caption": [f"person {i}" for i in range(n)], "person_id": list(range(n))},
        features=features,
    )


@pytest.mark.parametrize("train", [True, False])
def test_with_transform_on_a_real_dataset(train):
    dataset = make_dataset()
    transformed = with_transform(dataset, H, W, train=train)
    row = transformed[4]
    assert set(row) == {"pixel_values", "caption", "person_id"}
    assert row["pixel_values"].shape == (3, H, W) and row["caption"] == "person 4" and row["person_id"] == 4
    batch = transformed[:3]
    assert len(batch["pixel_values"]) == 3 and all(p.shape == (3, H, W) for p in batch["pixel_values"])
    assert isinstance(dataset[0]["image"], Image.Image)  # the input dataset is left as it was
    if not train:
        assert torch.equal(transformed[1]["pixel_values"], transformed[1]["pixel_values"])


def test_with_transform_on_a_streaming_dataset():
    stream = with_transform(make_dataset().to_iterable_dataset(), H, W, train=True)
    rows = list(stream)
    assert len(rows) == 6
    assert all(set(r) == {"pixel_values", "caption", "person_id"} for r in rows)
    assert all(torch.as_tensor(r["pixel_values"]).shape == (3, H, W) for r in rows)


def test_missing_image_column_is_named():
    with pytest.raises(KeyError, match="'picture' not found"):
        with_transform(make_dataset(), H, W, train=False, image_column="picture")


def test_transform_pickles_for_spawned_workers():
    transform = pickle.loads(pickle.dumps(ImageColumnTransform(H, W, train=False)))
    out = transform({"image": [constant_image()], "caption": ["x"]})
    assert out["caption"] == ["x"]
    assert torch.allclose(out["pixel_values"][0], normalised((200, 100, 50)), atol=1e-5)


def file_dataset(folder, n: int = 6) -> datasets.Dataset:
    """Images stored as paths (as the benchmark builders store them); image i shows colour (10 * i, 0, 0)."""
    folder.mkdir(exist_ok=True)
    paths = []
    for i in range(n):
        paths.append(str(folder / f"{i}.png"))
        constant_image((10 * i, 0, 0)).save(paths[-1])
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string"),
                                  "caption_id": datasets.Value("int64")})
    return datasets.Dataset.from_dict(
        {"image": paths, "caption": [f"person {i}" for i in range(n)], "caption_id": list(range(n))},
        features=features,
    )


@pytest.mark.parametrize("workers", [0, 1])
def test_an_image_broken_after_the_build_is_skipped_and_counted(tmp_path, caplog, workers):
    dataset = file_dataset(tmp_path / "imgs")
    (tmp_path / "imgs" / "2.png").write_bytes(b"\x89PNG broken")
    transform = ImageColumnTransform(H, W, train=True, seed=0)
    loader = torch.utils.data.DataLoader(apply_transform(dataset, transform), batch_size=3, num_workers=workers,
                                         collate_fn=list)
    with caplog.at_level(logging.WARNING):
        batches = list(loader)
    # the batch keeps its size (every rank must give SDM as many rows): a readable row of it stands in
    assert [len(batch) for batch in batches] == [3, 3]
    captions = [row["caption"] for batch in batches for row in batch]
    assert "person 2" not in captions and sorted(set(captions)) == [f"person {i}" for i in (0, 1, 3, 4, 5)]
    for row in (row for batch in batches for row in batch):  # each stand-in keeps its own image and caption
        assert row["pixel_values"].shape == (3, H, W)
    assert transform.unreadable.total == 1  # counted in the worker process, read here
    if workers == 0:
        assert "2.png" in caplog.text and "skipped" in caplog.text


def test_a_batch_without_a_readable_image_names_the_files(tmp_path):
    dataset = file_dataset(tmp_path / "imgs", n=2)
    for i in range(2):
        (tmp_path / "imgs" / f"{i}.png").write_bytes(b"")
    transformed = apply_transform(dataset, ImageColumnTransform(H, W, train=False))
    with pytest.raises(ValueError, match=r"no readable image in this batch: .*0\.png .*1\.png"):
        transformed[:2]


def test_a_streamed_unreadable_image_is_dropped(tmp_path):
    dataset = file_dataset(tmp_path / "imgs")
    (tmp_path / "imgs" / "4.png").unlink()
    transform = ImageColumnTransform(H, W, train=False)
    rows = list(apply_transform(dataset.to_iterable_dataset(), transform))
    assert [row["caption_id"] for row in rows] == [0, 1, 2, 3, 5]
    assert transform.unreadable.total == 1


@pytest.mark.parametrize("height, width, pad", [(384, 128, 10), (96, 32, 2)])
def test_pad_and_crop_shift_the_same_share_of_the_width(height, width, pad):
    """The paper pads 10 pixels at width 128; smaller images are padded in proportion, not by 10 pixels."""
    torch.manual_seed(0)
    steps = [step for step in build_transform(height, width, train=True).transforms
             if not isinstance(step, v2.RandomErasing)]
    transform = v2.Compose(steps)
    black = normalised((0, 0, 0))
    widest = 0
    for _ in range(60):
        out = transform(Image.new("RGB", (width, height), (200, 100, 50)))
        black_columns = torch.isclose(out, black.expand_as(out), atol=1e-5).all(dim=0).all(dim=0)
        widest = max(widest, int(black_columns.sum()))
    assert widest == pad


def test_random_erasing_can_be_turned_off_and_is_validated():
    torch.manual_seed(0)
    transform = build_transform(H, W, train=True, erase_prob=0.0)
    assert not any(isinstance(step, v2.RandomErasing) for step in transform.transforms)
    for _ in range(20):
        out = transform(constant_image())
        assert not (out == 0).all(dim=0).any()  # nothing painted with the mean
    with pytest.raises(ValueError, match="erase_prob"):
        build_transform(H, W, train=True, erase_prob=1.5)
