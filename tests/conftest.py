"""Shared fixtures. Everything is offline and tiny: random weights, generated images."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

_YOLO_DIR = tempfile.mkdtemp(prefix="yolo-config-")
atexit.register(shutil.rmtree, _YOLO_DIR, ignore_errors=True)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", _YOLO_DIR)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import CLIPConfig, CLIPModel  # noqa: E402

from gadms_hf import GADMSConfig, GADMSModel, GADMSProcessor, build_clip_tokenizer, make_image_processor  # noqa: E402

CAPTIONS = [
    "A woman with long black hair wears a red jacket, blue jeans and white shoes.",
    "The man in a grey hoodie carries a black backpack and walks fast.",
    "A girl in a yellow skirt holds a small pink handbag.",
    "An old man wearing a brown hat, a green coat and dark trousers.",
]


@pytest.fixture(scope="session")
def tokenizer():
    return build_clip_tokenizer()


@pytest.fixture(scope="session")
def tiny_config() -> GADMSConfig:
    return GADMSConfig.tiny(num_identities=8)


@pytest.fixture(scope="session")
def processor(tokenizer, tiny_config) -> GADMSProcessor:
    return GADMSProcessor(make_image_processor(*tiny_config.image_size), tokenizer)


@pytest.fixture
def tiny_model(tiny_config) -> GADMSModel:
    torch.manual_seed(0)
    return GADMSModel(tiny_config)


def square_clip_model() -> CLIPModel:
    """A tiny random transformers `CLIPModel` (square 64-pixel images, real vocabulary size)."""
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         vocab_size=49409, max_position_embeddings=77, eos_token_id=49407),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=64, patch_size=16),
        projection_dim=16,
    )
    return CLIPModel(config)


def random_images(n: int, height: int = 120, width: int = 50, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture
def batch(processor):
    return processor(text=CAPTIONS, images=random_images(len(CAPTIONS)), return_tensors="pt")
