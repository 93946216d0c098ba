"""Retrieval metrics against hand-computed cases and a brute-force reference; embedding on a tiny CLIP."""

from __future__ import annotations

import io
import logging
import sys

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Image, Value
from PIL import Image as PILImage
from transformers import CLIPModel

from gadms_hf.evaluation import ranking
from gadms_hf.evaluation.embedding import embed_images, embed_texts, evaluate_retrieval
from gadms_hf.evaluation.ranking import rank_metrics, retrieve_topk
from gadms_hf.processing_gadms import GADMSProcessor, make_image_processor
from gadms_hf.tokenizer import build_clip_tokenizer

from .conftest import square_clip_model


def brute_force(similarity: np.ndarray, query_ids, gallery_ids, ks=(1, 5, 10)) -> dict[str, float]:
    """docs/method.md §7 written the slow, obvious way: a full stable argsort and Python loops."""
    query_ids, gallery_ids = np.asarray(query_ids), np.asarray(gallery_ids)
    hits = dict.fromkeys(ks, 0)
    ap_total = inp_total = 0.0
    for row, query_id in zip(similarity, query_ids):
        order = np.argsort(-row.astype(np.float64), kind="stable")
        positions = [rank + 1 for rank, g in enumerate(order) if gallery_ids[g] == query_id]
        for k in ks:
            hits[k] += positions[0] <= k
        ap_total += sum((j + 1) / r for j, r in enumerate(positions)) / len(positions)
        inp_total += len(positions) / positions[-1]
    n = len(query_ids)
    result = {f"R{k}": 100.0 * hits[k] / n for k in ks}
    result.update(mAP=100.0 * ap_total / n, mINP=100.0 * inp_total / n)
    return result


def assert_same(actual: dict[str, float], expected: dict[str, float]) -> None:
    assert actual.keys() == expected.keys()
    for key in expected:
        assert actual[key] == pytest.approx(expected[key], abs=1e-9), key


def test_hand_computed_ties_several_correct_and_last_place():
    similarity = np.array(
        [
            [0.5, 0.5, 0.5, 0.5, 0.5, 0.5],  # all tied: gallery order decides -> id 1 at places 2, 3
            [0.9, 0.1, 0.8, 0.3, 0.7, 0.0],  # order 0,2,4,3,1,5 -> id 0 at places 1, 3, 4
            [0.9, 0.8, 0.7, 0.6, 0.5, -0.2],  # id 3 only at gallery 5 -> last place
        ],
        dtype=np.float32,
    )
    gallery_ids = [0, 1, 1, 0, 0, 3]
    query_ids = [1, 0, 3]
    ap = [(1 / 2 + 2 / 3) / 2, (1 / 1 + 2 / 3 + 3 / 4) / 3, 1 / 6]
    inp = [2 / 3, 3 / 4, 1 / 6]
    expected = {
        "R1": 100 / 3,
        "R5": 200 / 3,
        "R10": 100.0,
        "mAP": 100 * np.mean(ap),
        "mINP": 100 * np.mean(inp),
    }
    assert_same(rank_metrics(None, None, query_ids, gallery_ids, similarity=similarity), expected)
    other_ks = {"R2": 200 / 3, "R3": 200 / 3, "mAP": expected["mAP"], "mINP": expected["mINP"]}
    assert_same(rank_metrics(None, None, query_ids, gallery_ids, similarity=similarity, ks=(2, 3)), other_ks)


def test_signed_zeros_tie_and_negative_scores_order():
    # -0.0 and +0.0 are equal scores, so the lower gallery index wins; -0.5 ranks below -0.25
    similarity = torch.tensor([[-0.0, 0.0, -0.5, -0.25]])
    assert rank_metrics(None, None, [7], [7, 1, 2, 3], similarity=similarity)["R1"] == 100.0
    assert rank_metrics(None, None, [7], [1, 7, 2, 3], similarity=similarity)["R1"] == 0.0
    last = rank_metrics(None, None, [7], [1, 2, 7, 3], similarity=similarity)
    assert last["mINP"] == pytest.approx(25.0)
    assert retrieve_topk(None, None, 4, similarity=similarity).tolist() == [[0, 1, 3, 2]]


@pytest.mark.parametrize("kind", ["continuous", "heavy_ties"])
def test_equals_brute_force_on_random_problems(kind, tmp_path):
    rng = np.random.default_rng(0 if kind == "continuous" else 1)
    gallery_ids = rng.integers(0, 60, size=300)
    query_ids = rng.choice(gallery_ids, size=500)  # every query has a match, identities repeat
    if kind == "continuous":
        similarity = rng.standard_normal((500, 300)).astype(np.float32)
    else:
        similarity = (rng.integers(-3, 4, size=(500, 300)) / 3).astype(np.float32)
    expected = brute_force(similarity, query_ids, gallery_ids)
    for chunk_size in (1, 13, 128, 500, 4096):
        assert_same(
            rank_metrics(None, None, query_ids, gallery_ids, similarity=similarity, chunk_size=chunk_size),
            expected,
        )
    assert_same(
        rank_metrics(None, None, query_ids, gallery_ids, similarity=torch.from_numpy(similarity)), expected
    )
    on_disk = np.memmap(tmp_path / "similarity.f32", dtype=np.float32, mode="w+", shape=similarity.shape)
    on_disk[:] = similarity
    assert_same(rank_metrics(None, None, query_ids, gallery_ids, similarity=on_disk, chunk_size=64), expected)
    assert np.array_equal(on_disk, similarity)  # read, never written
    stable_top = np.argsort(-similarity, axis=1, kind="stable")[:, :10]
    assert np.array_equal(
        retrieve_topk(None, None, 10, similarity=similarity, chunk_size=77).numpy(), stable_top
    )


@pytest.mark.parametrize("share", [0.0, 0.25, 1.0])
def test_candidate_and_key_paths_equal_brute_force_with_ties(share, monkeypatch):
    """`_CANDIDATE_SHARE` picks the path per chunk: 0 always the keys, 1 always the candidates."""
    rng = np.random.default_rng(7)
    gallery_ids = rng.integers(0, 40, size=200)
    query_ids = rng.choice(gallery_ids, size=300)
    # a trained model's structure (correct items score higher), on a coarse grid so that many scores tie,
    # with both signed zeros
    matches = gallery_ids[None, :] == query_ids[:, None]
    similarity = (np.round((3 * matches + rng.standard_normal(matches.shape)) * 4) / 4).astype(np.float32)
    zeros = similarity == 0
    similarity[zeros] = np.where(rng.random(zeros.sum()) < 0.5, -0.0, 0.0)
    assert np.signbit(similarity[zeros]).any() and (~np.signbit(similarity[zeros])).any()
    taken = []
    original = ranking._candidate_ranks

    def spy(*args):
        ranks = original(*args)
        taken.append(ranks is not None)
        return ranks

    monkeypatch.setattr(ranking, "_CANDIDATE_SHARE", share)
    monkeypatch.setattr(ranking, "_candidate_ranks", spy)
    expected = brute_force(similarity, query_ids, gallery_ids, ks=(1, 3, 10))
    for chunk_size in (1, 17, 300):
        actual = rank_metrics(
            None, None, query_ids, gallery_ids, similarity=similarity, chunk_size=chunk_size, ks=(1, 3, 10)
        )
        assert_same(actual, expected)
    if share == 0.0:
        assert taken and not any(taken)
    else:  # at the default share, a trained model's scores mostly take the candidate path
        assert all(taken) if share == 1.0 else sum(taken) > len(taken) / 2
    # from embeddings (the scores buffer reused across chunks) and image-to-text
    generator = torch.Generator().manual_seed(1)
    prototypes = torch.randn(40, 32, generator=generator)
    queries = prototypes[query_ids] + torch.randn(300, 32, generator=generator)
    gallery = prototypes[gallery_ids] + torch.randn(200, 32, generator=generator)
    cosine = torch.nn.functional.normalize(queries, dim=-1) @ torch.nn.functional.normalize(gallery, dim=-1).T
    for direction, sim, ids in (("t2i", cosine, (query_ids, gallery_ids)), ("i2t", cosine.T, (gallery_ids, query_ids))):
        expected = brute_force(sim.numpy(), *ids)
        for chunk_size in (29, 1024):
            actual = rank_metrics(
                queries, gallery, query_ids, gallery_ids, chunk_size=chunk_size, direction=direction
            )
            assert_same(actual, expected)


def test_embeddings_equal_cosine_similarity_and_string_ids():
    generator = torch.Generator().manual_seed(3)
    gallery = torch.randn(300, 16, generator=generator) * 5  # not normalised: cosine must normalise
    queries = torch.randn(500, 16, generator=generator)
    gallery_ids = [f"p{i % 50}" for i in range(300)]
    query_ids = [f"p{i % 50}" for i in range(500)]
    cosine = torch.nn.functional.normalize(queries, dim=-1) @ torch.nn.functional.normalize(gallery, dim=-1).T
    expected = brute_force(cosine.numpy(), query_ids, gallery_ids)
    for chunk_size in (7, 1024):
        assert_same(rank_metrics(queries, gallery, query_ids, gallery_ids, chunk_size=chunk_size), expected)
    assert_same(rank_metrics(queries.numpy(), gallery.numpy(), query_ids, gallery_ids), expected)


def test_image_to_text_is_the_transposed_problem():
    rng = np.random.default_rng(5)
    gallery_ids = rng.integers(0, 30, size=120)
    query_ids = rng.permutation(
        np.concatenate([gallery_ids, rng.choice(gallery_ids, size=80)])
    )  # both ways matched
    similarity = rng.standard_normal((200, 120)).astype(np.float32)
    expected = brute_force(similarity.T, gallery_ids, query_ids)
    assert_same(
        rank_metrics(None, None, query_ids, gallery_ids, similarity=similarity, direction="i2t"), expected
    )
    queries, gallery = torch.randn(200, 8), torch.randn(120, 8)
    assert_same(
        rank_metrics(queries, gallery, query_ids, gallery_ids, direction="i2t"),
        rank_metrics(gallery, queries, gallery_ids, query_ids),
    )


def test_unmatched_queries_raise_or_are_excluded(caplog):
    rng = np.random.default_rng(2)
    similarity = rng.standard_normal((6, 4)).astype(np.float32)
    gallery_ids = [0, 0, 1, 2]
    query_ids = [0, 1, 9, 2, 8, 0]
    with pytest.raises(ValueError, match=r"2 of 6 queries have no gallery item .* #2 \(id 9\), #4 \(id 8\)"):
        rank_metrics(None, None, query_ids, gallery_ids, similarity=similarity)
    with caplog.at_level(logging.WARNING, logger="gadms_hf.evaluation.ranking"):
        kept = rank_metrics(None, None, query_ids, gallery_ids, similarity=similarity, skip_unmatched=True)
    assert "2 of 6 queries" in caplog.text
    matched = [0, 1, 3, 5]
    assert_same(kept, brute_force(similarity[matched], np.array(query_ids)[matched], gallery_ids))


def test_bad_input_is_named():
    sim = np.zeros((2, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"shape \(len\(query_ids\), len\(gallery_ids\)\) = \(2, 4\)"):
        rank_metrics(None, None, [0, 1], [0, 1, 1, 0], similarity=sim)
    with pytest.raises(ValueError, match="differ in width"):
        rank_metrics(torch.zeros(2, 4), torch.zeros(3, 5), [0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="both be integers or both be strings"):
        rank_metrics(None, None, [0, 1], ["0", "1", "1"], similarity=sim)
    with pytest.raises(ValueError, match="NaN or inf"):
        rank_metrics(None, None, [0, 1], [0, 1, 1], similarity=np.full((2, 3), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="ks must be positive"):
        rank_metrics(None, None, [0, 1], [0, 1, 1], similarity=sim, ks=(0,))
    with pytest.raises(ValueError, match="direction"):
        rank_metrics(None, None, [0, 1], [0, 1, 1], similarity=sim, direction="both")
    with pytest.raises(ValueError, match="either embeddings or `similarity`"):
        rank_metrics(torch.zeros(2, 4), torch.zeros(3, 4), [0, 1], [0, 1, 1], similarity=sim)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads peak RSS from /proc")
def test_20k_by_20k_stays_under_one_gigabyte():
    def status(field: str) -> float:
        with open("/proc/self/status") as handle:
            return next(int(line.split()[1]) for line in handle if line.startswith(field)) / 1024

    generator = torch.Generator().manual_seed(0)
    gallery_ids = torch.arange(20000) % 2000
    query_ids = gallery_ids[torch.randperm(20000, generator=generator)]
    queries, gallery = (
        torch.randn(20000, 512, generator=generator),
        torch.randn(20000, 512, generator=generator),
    )
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # reset the peak-RSS watermark
    before = status("VmRSS:")
    metrics = rank_metrics(queries, gallery, query_ids, gallery_ids)
    assert status("VmHWM:") - before < 1024
    assert 0.0 <= metrics["R1"] <= metrics["R10"] <= 100.0


# --- embedding with a real (tiny, random) CLIPModel -------------------------------------------------


@pytest.fixture(scope="module")
def tiny_clip() -> CLIPModel:
    return square_clip_model().eval()


@pytest.fixture(scope="module")
def processor() -> GADMSProcessor:
    return GADMSProcessor(make_image_processor(64, 64), build_clip_tokenizer())


def random_images(count: int, seed: int) -> list[PILImage.Image]:
    rng = np.random.default_rng(seed)
    return [
        PILImage.fromarray(rng.integers(0, 256, (80 + i, 40 + i, 3), dtype=np.uint8)) for i in range(count)
    ]


CAPTIONS = [
    "a woman in a red down jacket and black trousers",
    "a man wearing a blue shirt, grey shorts and white sneakers",
    "a person carrying a black shoulder bag",
    "a girl with long hair in a yellow dress",
    "a man in a black coat",
]


def test_embed_images_normalised_batch_invariant_and_restores_mode(tiny_clip, processor):
    images = random_images(5, seed=0)
    tiny_clip.train()
    by_two = embed_images(tiny_clip, images, processor, batch_size=2, device="cpu", progress=False)
    assert tiny_clip.training  # eval mode only for the pass
    tiny_clip.eval()
    by_five = embed_images(tiny_clip, images, processor, batch_size=5, progress=False)
    assert by_two.shape == (5, 16) and by_two.dtype == torch.float32
    assert torch.allclose(by_two.norm(dim=-1), torch.ones(5), atol=1e-5)
    assert torch.allclose(by_two, by_five, atol=1e-5)
    pixels = processor(images=images)["pixel_values"]
    assert torch.allclose(
        embed_images(tiny_clip, pixels, None, batch_size=3, progress=False), by_five, atol=1e-5
    )
    gray = [image.convert("L") for image in images]
    rgb_of_gray = [image.convert("RGB") for image in gray]
    assert torch.allclose(
        embed_images(tiny_clip, gray, processor, progress=False),
        embed_images(tiny_clip, rgb_of_gray, processor, progress=False),
    )
    with pytest.raises(ValueError, match="processor or transform"):
        embed_images(tiny_clip, images, None, progress=False)


def test_embed_images_from_dataset_plain_and_transformed(tiny_clip, processor):
    images = random_images(4, seed=1)
    dataset = Dataset.from_dict({"image": images}, features=Features({"image": Image()}))
    expected = embed_images(tiny_clip, images, processor, progress=False)
    assert torch.allclose(
        embed_images(tiny_clip, dataset, processor, batch_size=3, progress=False), expected, atol=1e-5
    )
    transformed = dataset.with_transform(lambda batch: processor(images=batch["image"]))
    assert torch.allclose(
        embed_images(tiny_clip, transformed, None, batch_size=3, progress=False), expected, atol=1e-5
    )


def test_unreadable_gallery_image_is_reported_not_skipped(tiny_clip, processor):
    def png(image: PILImage.Image) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()

    rows = [{"bytes": png(image), "path": None} for image in random_images(2, seed=4)]
    rows.append({"bytes": b"this is not an image", "path": None})
    gallery = Dataset.from_dict({"image": rows}, features=Features({"image": Image()}))
    with pytest.raises(ValueError, match="could not decode the images of rows 2-3"):
        embed_images(tiny_clip, gallery, processor, batch_size=2, progress=False)


def test_embed_texts_processor_and_tokenizer_agree(tiny_clip, processor):
    by_processor = embed_texts(tiny_clip, CAPTIONS, processor, batch_size=2, progress=False)
    assert by_processor.shape == (5, 16)
    assert torch.allclose(by_processor.norm(dim=-1), torch.ones(5), atol=1e-5)
    by_tokenizer = embed_texts(tiny_clip, CAPTIONS, processor.tokenizer, batch_size=5, progress=False)
    assert torch.allclose(by_processor, by_tokenizer, atol=1e-5)
    assert not torch.allclose(by_processor[0], by_processor[1])
    with pytest.raises(ValueError, match="caption #1 is int"):
        embed_texts(tiny_clip, ["fine", 3], processor, progress=False)


def test_evaluate_retrieval_on_image_dataset(tiny_clip, processor):
    person_ids = [0, 0, 1, 1, 2, 3]
    gallery = Dataset.from_dict(
        {"image": random_images(6, seed=2), "person_id": person_ids},
        features=Features({"image": Image(), "person_id": ClassLabel(num_classes=4)}),
    )
    queries = Dataset.from_dict(
        {"caption": CAPTIONS + ["a boy in green"], "person_id": [0, 1, 2, 3, 0, 1]},
        features=Features({"caption": Value("string"), "person_id": Value("int64")}),
    )
    result = evaluate_retrieval(
        tiny_clip, processor, gallery, queries, batch_size=4, return_topk=3, progress=False
    )
    image_embeds = embed_images(tiny_clip, gallery, processor, progress=False)
    text_embeds = embed_texts(tiny_clip, queries["caption"], processor, progress=False)
    metrics = rank_metrics(text_embeds, image_embeds, queries["person_id"], person_ids)
    assert {key: result[key] for key in metrics} == pytest.approx(metrics)
    assert result["topk_indices"].shape == (6, 3)
    expected_correct = (
        torch.tensor(person_ids)[result["topk_indices"]] == torch.tensor(queries["person_id"])[:, None]
    )
    assert torch.equal(result["topk_correct"], expected_correct)
    assert result["R1"] == pytest.approx(100 * expected_correct[:, 0].float().mean().item())
    i2t = evaluate_retrieval(
        tiny_clip, processor, gallery, queries, direction="i2t", return_topk=2, progress=False
    )
    assert i2t["topk_indices"].shape == (6, 2)
    assert i2t["mAP"] == pytest.approx(
        rank_metrics(image_embeds, text_embeds, person_ids, queries["person_id"])["mAP"]
    )
    with pytest.raises(ValueError, match=r"queries lacks column\(s\) \['caption'\]"):
        evaluate_retrieval(
            tiny_clip, processor, gallery, queries.rename_column("caption", "text"), progress=False
        )
