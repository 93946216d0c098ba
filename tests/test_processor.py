import numpy as np
import pytest
from PIL import Image
from transformers import AutoProcessor

from gadms_hf import MASK_TOKEN, GADMSProcessor, make_image_processor
from gadms_hf.processing_gadms import CLIP_MEAN

from .conftest import random_images


def test_text_and_images(processor, tiny_config):
    out = processor(text=["a man in a red coat", "a woman"], images=random_images(2), return_tensors="pt")
    assert out["input_ids"].shape == (2, 77) and out["attention_mask"].shape == (2, 77)
    assert out["pixel_values"].shape == (2, 3, *tiny_config.image_size)
    assert out["input_ids"][0, 0] == 49406
    assert (out["input_ids"] == 49407).any(dim=1).all()


def test_either_modality_alone(processor):
    assert set(processor(text="one caption", return_tensors="pt")) == {"input_ids", "attention_mask"}
    assert set(processor(images=random_images(1), return_tensors="pt")) == {"pixel_values"}
    with pytest.raises(ValueError, match="text"):
        processor()


def test_paper_resolution_and_normalisation(tokenizer):
    processor = GADMSProcessor(make_image_processor(384, 128), tokenizer)
    grey = Image.fromarray(np.full((500, 200, 3), 128, dtype=np.uint8))
    pixels = processor.image_processor(grey, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 384, 128)
    expected = (128 / 255 - np.array(CLIP_MEAN)) / np.array([0.26862954, 0.26130258, 0.27577711])
    np.testing.assert_allclose(pixels[0].mean(dim=(1, 2)).numpy(), expected, atol=1e-3)


def test_truncation_keeps_end_of_text(processor):
    ids = processor(text=["person " * 200], return_tensors="pt")["input_ids"]
    assert ids.shape == (1, 77) and ids[0, -1] == 49407


def test_mask_token_round_trip(tmp_path, processor):
    assert processor.mask_token_id == 49408
    assert processor.tokenizer.decode([49408]) == MASK_TOKEN
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, GADMSProcessor) and loaded.mask_token_id == 49408
    text = ["A woman with long black hair; café, naïve"]
    assert loaded(text=text)["input_ids"].tolist() == processor(text=text)["input_ids"].tolist()
    assert loaded.image_processor.size.height == processor.image_processor.size.height


def test_empty_text_or_images_are_named(processor):
    with pytest.raises(ValueError, match=r"text=\[\] is empty"):
        processor(text=[])
    with pytest.raises(ValueError, match=r"images=\[\] is empty"):
        processor(images=[])
    with pytest.raises(ValueError, match=r"text=\[\] is empty"):
        processor(text=[], images=random_images(1))


def test_a_plain_clip_tokenizer_gains_the_mask_token(caplog):
    import logging

    from gadms_hf import build_clip_tokenizer

    plain = build_clip_tokenizer(with_mask_token=False)
    assert MASK_TOKEN not in plain.get_vocab()
    with caplog.at_level(logging.WARNING):
        processor = GADMSProcessor(make_image_processor(96, 32), plain)
    assert processor.mask_token_id == 49408  # the row GADMSModel.from_clip adds
    assert "added <|mask|>" in caplog.text
