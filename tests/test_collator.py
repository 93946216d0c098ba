"""GADMSCollator: batch layout, score-bank steering, errors, DataLoader workers on a real dataset."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from gadms_hf import GADMSProcessor, make_image_processor
from gadms_hf.data.collator import GADMSCollator
from gadms_hf.data.score_bank import TokenScoreBank
from gadms_hf.data.transforms import with_transform
from gadms_hf.masking import IGNORE_INDEX, MaskingParams

H, W = 64, 32
BOS, EOS, MASK = 49406, 49407, 49408
KEYS = {"pixel_values", "input_ids", "attention_mask", "noisy_input_ids", "mim_input_ids", "mim_labels",
        "person_ids", "caption_ids", "return_loss"}
CAPTION = ("A young woman with long black hair wears a red down jacket, black trousers and white sneakers,"
           " and carries a brown shoulder bag on her left side.")


@pytest.fixture(scope="module")
def small_processor(tokenizer) -> GADMSProcessor:
    return GADMSProcessor(make_image_processor(H, W), tokenizer)


def features(n: int, caption: str = CAPTION, start: int = 0) -> list[dict]:
    return [
        {"pixel_values": torch.randn(3, H, W), "caption": caption, "person_id": i // 2,
         "caption_id": start + i, "image_id": i}
        for i in range(n)
    ]


def word_count(batch: dict) -> torch.Tensor:
    ids = batch["input_ids"]
    return (batch["attention_mask"].bool() & (ids != BOS) & (ids != EOS)).sum(dim=1)


def test_batch_layout(small_processor):
    collator = GADMSCollator(small_processor, MaskingParams(), seed=0)
    feats = features(4)
    feats[3]["caption"] = "a man"
    batch = collator(feats)
    assert set(batch) == KEYS and batch["return_loss"] is True
    assert batch["pixel_values"].shape == (4, 3, H, W) and batch["pixel_values"].dtype == torch.float32
    expected = small_processor(text=[f["caption"] for f in feats], return_tensors="pt")
    longest = int(expected["attention_mask"].sum(dim=1).max())
    assert longest < 77
    for key in ("input_ids", "attention_mask", "noisy_input_ids", "mim_input_ids", "mim_labels"):
        assert batch[key].shape == (4, longest) and batch[key].dtype == torch.int64, key
    assert batch["person_ids"].tolist() == [0, 0, 1, 1] and batch["caption_ids"].tolist() == [0, 1, 2, 3]
    # the processor's 77-position layout, cut after the longest caption: the same tokens at the same positions
    assert torch.equal(batch["input_ids"], expected["input_ids"][:, :longest])
    assert torch.equal(batch["attention_mask"], expected["attention_mask"][:, :longest])
    assert torch.equal(batch["pixel_values"], torch.stack([f["pixel_values"] for f in feats]))
    assert ((batch["mim_labels"] != IGNORE_INDEX).sum(dim=1) >= 1).all()  # at-least-one rule


def test_bank_rows_steer_the_two_copies(small_processor, tmp_path):
    bank = TokenScoreBank.create(tmp_path / "bank", num_captions=400)
    bank.write(torch.arange(200), torch.zeros(200, 77))  # noisy-looking captions
    bank.write(torch.arange(200, 400), torch.ones(200, 77))  # fully informative captions
    batch = GADMSCollator(small_processor, MaskingParams(), bank, seed=0)(features(400))
    words = word_count(batch)
    noise = (batch["noisy_input_ids"] != batch["input_ids"]).sum(dim=1)
    mim = (batch["mim_labels"] != IGNORE_INDEX).sum(dim=1)
    low, high = slice(0, 200), slice(200, 400)
    # score 0: q = 0.2 sigmoid(2) = 0.176, p = 0.3 sigmoid(-2) = 0.036; score 1: q ~ 3e-9, p ~ 0.3
    noise_low = noise[low].sum() / words[low].sum()
    assert 0.15 < noise_low < 0.20 and noise[high].sum() == 0
    mim_high = mim[high].sum() / words[high].sum()
    assert 0.27 < mim_high < 0.33 and mim[low].sum() / words[low].sum() < 0.1


def test_without_a_bank_every_token_gets_the_initial_score(small_processor):
    batch = GADMSCollator(small_processor, MaskingParams(), seed=0)(features(100))
    assert torch.equal(batch["noisy_input_ids"], batch["input_ids"])  # 0.85: no noise masking
    low = GADMSCollator(small_processor, MaskingParams(initial_token_score=0.0), seed=0)(features(100))
    assert (low["noisy_input_ids"] != low["input_ids"]).any()


def test_over_long_and_non_ascii_captions(small_processor):
    feats = features(2)
    feats[0]["caption"] = " ".join(["a tall man in a very long grey coat"] * 20)
    feats[1]["caption"] = "Une femme élégante, manteau rouge 👠 — 穿红色外套的女人"
    batch = GADMSCollator(small_processor, MaskingParams(), seed=0)(feats)
    assert batch["attention_mask"][0].all() and batch["input_ids"][0, -1] == EOS  # truncated, end kept
    length = int(batch["attention_mask"][1].sum())
    assert batch["input_ids"][1, length - 1] == EOS and length > 10
    decoded = small_processor.tokenizer.decode(batch["input_ids"][1, 1 : length - 1])
    assert "élégante" in decoded and "👠" in decoded


@pytest.mark.parametrize("caption", ["", "   \n\t"])
def test_empty_caption_names_its_id(small_processor, caption):
    feats = features(3, start=15)
    feats[2]["caption"] = caption
    with pytest.raises(ValueError, match="caption_id 17"):
        GADMSCollator(small_processor, MaskingParams())(feats)


def test_missing_fields_and_mismatched_bank(small_processor, tmp_path):
    feats = features(1)
    del feats[0]["pixel_values"]
    with pytest.raises(ValueError, match=r"missing \['pixel_values'\].*with_transform"):
        GADMSCollator(small_processor, MaskingParams())(feats)
    short = TokenScoreBank.create(tmp_path / "short", num_captions=4, text_length=10)
    with pytest.raises(ValueError, match="10 tokens"):
        GADMSCollator(small_processor, MaskingParams(), short)
    bank = TokenScoreBank.create(tmp_path / "bank", num_captions=4)
    with pytest.raises(ValueError, match="caption_id 4 is out of range"):
        GADMSCollator(small_processor, MaskingParams(), bank)(features(5))


def test_seed_replays_masks_and_batches_and_epochs_differ(small_processor):
    feats = features(16)
    first = GADMSCollator(small_processor, MaskingParams(), seed=3)
    second = GADMSCollator(small_processor, MaskingParams(), seed=3)
    a, b = first(feats), second(feats)
    assert torch.equal(a["mim_input_ids"], b["mim_input_ids"])
    assert torch.equal(a["mim_labels"], b["mim_labels"])
    # counter-based: the same batch in the same epoch replays (as after a resume) ...
    assert torch.equal(first(feats)["mim_input_ids"], a["mim_input_ids"])
    # ... another batch composition or another epoch draws anew
    assert not torch.equal(first(feats[::-1])["mim_input_ids"].flip(0), a["mim_input_ids"])
    first.set_epoch(1)
    assert not torch.equal(first(feats)["mim_input_ids"], a["mim_input_ids"])


def image_dataset(n: int) -> datasets.Dataset:
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 255, (80, 40, 3), dtype=np.uint8)).convert("RGB" if i % 2 else "L")
        for i in range(n)
    ]
    int64 = datasets.Value("int64")
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string"),
                                  "person_id": int64, "caption_id": int64})
    return datasets.Dataset.from_dict(
        {"image": images, "caption": [CAPTION] * n, "person_id": [i // 2 for i in range(n)],
         "caption_id": list(range(n))},
        features=features,
    )


@pytest.mark.parametrize("seed", [None, 5])
def test_dataloader_with_two_workers(small_processor, tmp_path, seed):
    bank = TokenScoreBank.create(tmp_path / "bank", num_captions=16)
    dataset = with_transform(image_dataset(16), H, W, train=True)
    collator = GADMSCollator(small_processor, MaskingParams(), bank, seed=seed)
    torch.manual_seed(0)
    loader = DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collator)
    batches = list(loader)
    assert len(batches) == 4 and all(set(b) == KEYS for b in batches)
    assert all(b["pixel_values"].shape == (4, 3, H, W) for b in batches)
    assert sorted(torch.cat([b["caption_ids"] for b in batches]).tolist()) == list(range(16))
    # same caption, same scores everywhere: any difference comes from the per-worker, per-step draws
    masks = [b["mim_input_ids"] for b in batches]
    assert not torch.equal(masks[0], masks[1])  # worker 0 vs worker 1
    assert not torch.equal(masks[0], masks[2])  # worker 0, step 1 vs step 2


@pytest.mark.parametrize("context", ["fork", pytest.param("spawn", marks=pytest.mark.slow)])
def test_persistent_workers_see_bank_updates(small_processor, tmp_path, context):
    """Rows the trainer writes between epochs reach long-lived workers (forked: inherited shared
    mapping; spawned: the bank was pickled by path and reopened read-only)."""
    bank = TokenScoreBank.create(tmp_path / "bank", num_captions=8, initial_score=1.0)
    dataset = with_transform(image_dataset(8), H, W, train=False)
    collator = GADMSCollator(small_processor, MaskingParams(), bank)
    loader = DataLoader(dataset, batch_size=4, num_workers=2, persistent_workers=True,
                        multiprocessing_context=context, collate_fn=collator)
    first_epoch = list(loader)
    assert all(torch.equal(b["noisy_input_ids"], b["input_ids"]) for b in first_epoch)
    bank.write(torch.arange(8), torch.zeros(8, 77))
    bank.flush()
    second_epoch = list(loader)
    assert any((b["noisy_input_ids"] != b["input_ids"]).any() for b in second_epoch)


def test_pad_to_max_length_keeps_the_authors_layout(small_processor):
    """Padding to 77 adds only trailing padding: the same tokens at the same positions."""
    feats = features(4)
    short = GADMSCollator(small_processor, MaskingParams(), seed=0)(feats)
    full = GADMSCollator(small_processor, MaskingParams(), seed=0, pad_to_max_length=True)(feats)
    length = short["input_ids"].shape[1]
    assert full["input_ids"].shape == (4, 77) and length < 77
    for key in ("input_ids", "attention_mask"):
        assert torch.equal(full[key][:, :length], short[key]), key
    assert (full["attention_mask"][:, length:] == 0).all()

