"""The demo's engine and set-up, without a browser: ranking, per-word GASS, reverse search, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gadms_hf.demo.app import build_demo
from gadms_hf.demo.engine import QueryError, SearchEngine
from gadms_hf.demo.loading import NO_MODEL, SetupError, load_engine
from gadms_hf.evaluation.embedding import embed_images, embed_texts
from gadms_hf.search.gallery import corpus_gallery, folder_gallery
from gadms_hf.search.word_scores import split_words, word_gass_scores

SIZES = {"num_train_ids": 2, "num_test_ids": 3, "test_images_per_id": 2}


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (120, 50, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


@pytest.fixture
def model_dir(tmp_path, tiny_model, processor) -> Path:
    folder = tmp_path / "model"
    tiny_model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _gass_row(model, processor, text: str, image_embedding: torch.Tensor) -> tuple[list[str], torch.Tensor]:
    batch = processor(text=[text], return_tensors="pt")
    ids = batch["input_ids"]
    eos = model.eos_positions(ids)
    scores = model.gass(model.text_model, model.text_projection, ids, batch["attention_mask"], image_embedding[None], eos)
    return processor.tokenizer.convert_ids_to_tokens(ids[0, 1:int(eos[0])]), scores[0, 1:int(eos[0])]


def test_word_scores_are_the_models_gass_scores_per_word(tiny_model, processor):
    image = torch.randn(tiny_model.config.projection_dim, generator=torch.Generator().manual_seed(0))
    text = "A windbreaker, don't  t-shirt"
    pieces, scores = _gass_row(tiny_model, processor, text, image)
    assert pieces == ["a</w>", "wind", "breaker</w>", ",</w>", "don</w>", "'t</w>", "t</w>", "-</w>", "shirt</w>"]
    result = word_gass_scores(tiny_model, processor, text, image)
    assert [w.text for w in result.words] == ["A", "windbreaker", "don't", "t", "shirt"]
    expected = [scores[0], max(scores[1], scores[2]), max(scores[4], scores[5]), scores[6], scores[8]]
    assert [w.score for w in result.words] == pytest.approx([float(v) for v in expected], abs=1e-6)
    assert not result.truncated and len(set(w.score for w in result.words)) > 1


def test_words_past_the_token_limit_have_no_score(tiny_model, processor):
    text = " ".join(["red"] * 80) + " hat"
    result = word_gass_scores(tiny_model, processor, text, torch.randn(tiny_model.config.projection_dim))
    assert result.truncated and result.num_tokens == 83 and result.max_tokens == 77
    assert [w.score is None for w in result.words] == [False] * 75 + [True] * 6
    assert split_words("red,  blue.") == [(0, 3), (6, 10)]


def test_folder_search_ranks_like_the_models_own_embeddings(tiny_model, processor, photos):
    engine = SearchEngine(tiny_model, processor, folder_gallery(tiny_model, processor, photos, progress=False), top_k=4)
    text = "a man in a red coat"
    answer = engine.search(text)
    names = sorted(p.name for p in photos.glob("*.png"))
    images = embed_images(tiny_model, [Image.open(photos / n) for n in names], processor, progress=False)
    cosines = images @ embed_texts(tiny_model, [text], processor, progress=False)[0]
    order = torch.argsort(cosines, descending=True, stable=True)[:4].tolist()
    assert [h.name for h in answer.hits] == [names[i] for i in order]
    assert [h.score for h in answer.hits] == pytest.approx([float(cosines[i]) for i in order], abs=1e-5)
    assert all(h.truth is None for h in answer.hits) and answer.captions == [] and answer.notes == []
    assert [w.text for w in answer.words.words] == text.split()
    with pytest.raises(QueryError, match="Type a description"):
        engine.search("   ")
    long = engine.search(" ".join(["red"] * 80))
    assert "80 tokens" not in long.notes[0] and "82 tokens; the model reads 77" in long.notes[0]


def test_corpus_gallery_marks_truth_and_finds_captions(tmp_path, tiny_model, processor):
    gallery = corpus_gallery(tiny_model, processor, "synth-pedes", cache_dir=tmp_path / "cache", progress=False,
                             **SIZES)
    assert len(gallery) == 6 and len(gallery.captions) == 12
    engine = SearchEngine(tiny_model, processor, gallery, top_k=6, num_captions=3)
    caption, person = gallery.captions[0], int(gallery.caption_person_ids[0])
    answer = engine.search(caption)
    assert [h.truth for h in answer.hits] == [int(gallery.person_ids[h.row]) == person for h in answer.hits]
    assert sum(h.truth for h in answer.hits) == 2  # two test images per identity, all 6 shown
    assert all(h.truth is None for h in engine.search("someone nobody wrote").hits)
    row = answer.hits[0].row
    _, captions = engine.explain(caption, row)
    cosines = gallery.caption_embeddings @ gallery.embeddings[row]
    best = torch.argsort(cosines, descending=True, stable=True)[:3].tolist()
    assert [c.text for c in captions] == [gallery.captions[i] for i in best]
    assert [c.truth for c in captions] == [int(gallery.caption_person_ids[i]) == int(gallery.person_ids[row])
                                           for i in best]
    assert len(engine.examples) == 3 and len(set(engine.examples)) == 3


def test_setup_errors_are_sentences(tmp_path, model_dir, photos, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no outputs/pretrain-synth here
    with pytest.raises(SetupError) as error:
        load_engine()
    assert str(error.value) == NO_MODEL and "make demo" in NO_MODEL

    other = tmp_path / "other"
    other.mkdir()
    config = json.loads((model_dir / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(SetupError, match=r"Cannot load the model .*model_type='bert', expected 'gadms'"):
        load_engine(str(other), str(photos))

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SetupError, match=r"has no readable image\. Pass --gallery"):
        load_engine(str(model_dir), str(empty))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"not a photo")
    with pytest.raises(SetupError, match=r"skipped 1 unreadable file\(s\): a\.jpg: UnidentifiedImageError"):
        load_engine(str(model_dir), str(bad))
    with pytest.raises(SetupError, match=r"neither a folder of images nor a corpus split"):
        load_engine(str(model_dir), str(tmp_path / "nowhere"))


def test_a_setup_error_becomes_the_page(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    demo = build_demo()
    shown = [block.value for block in demo.blocks.values() if getattr(block, "elem_id", None) == "gadms-message"]
    assert len(shown) == 1 and "make demo" in shown[0] and "gadms-error" in shown[0]
    assert not any(getattr(block, "elem_id", None) == "gadms-query" for block in demo.blocks.values())
