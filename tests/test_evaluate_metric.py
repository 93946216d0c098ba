"""The `evaluate` module gives exactly `rank_metrics`'s numbers, loaded offline from its file."""

from __future__ import annotations

import sys
from pathlib import Path

import evaluate
import numpy as np
import pytest

import gadms_hf.evaluation.ranking as ranking
from gadms_hf.evaluation.ranking import rank_metrics

METRIC_PATH = str(Path(ranking.__file__).parent / "metric" / "gadms_retrieval.py")


def random_problem(seed: int, num_queries: int = 150, gallery_size: int = 60, dim: int = 12):
    rng = np.random.default_rng(seed)
    gallery_ids = rng.integers(0, 20, size=gallery_size)
    query_ids = rng.choice(gallery_ids, size=num_queries)
    queries = rng.standard_normal((num_queries, dim)).astype(np.float32)
    gallery = rng.standard_normal((gallery_size, dim)).astype(np.float32)
    return queries, gallery, query_ids, gallery_ids


def test_embeddings_configuration_equals_rank_metrics():
    queries, gallery, query_ids, gallery_ids = random_problem(0)
    metric = evaluate.load(METRIC_PATH, keep_in_memory=True)
    result = metric.compute(
        predictions=queries, references=query_ids, gallery_embeddings=gallery, gallery_ids=gallery_ids
    )
    expected = rank_metrics(queries, gallery, query_ids, gallery_ids)
    assert result == pytest.approx(expected, abs=1e-9)
    assert 0.0 < expected["R10"] < 100.0  # a non-trivial problem
    # one implementation: the loaded script calls the package's function, it does not copy it
    assert sys.modules[type(metric).__module__].rank_metrics is rank_metrics


def test_similarity_configuration_with_string_ids_batches_and_ks():
    rng = np.random.default_rng(1)
    gallery_ids = [f"person-{i}" for i in rng.integers(0, 15, size=40)]
    query_ids = [gallery_ids[i] for i in rng.integers(0, 40, size=90)]
    similarity = rng.standard_normal((90, 40)).astype(np.float32)
    expected = rank_metrics(None, None, query_ids, gallery_ids, similarity=similarity, ks=(1, 3))
    metric = evaluate.load(METRIC_PATH, "similarity", keep_in_memory=True)
    for start in range(0, 90, 25):  # streamed, as an evaluation loop would
        metric.add_batch(predictions=similarity[start : start + 25], references=query_ids[start : start + 25])
    assert metric.compute(gallery_ids=gallery_ids, ks=[1, 3]) == pytest.approx(expected, abs=1e-9)
    assert set(expected) == {"R1", "R3", "mAP", "mINP"}


def test_wrong_use_is_explained():
    queries, gallery, query_ids, gallery_ids = random_problem(2, num_queries=5, gallery_size=6)
    with pytest.raises(ValueError, match="gallery_embeddings is required"):
        evaluate.load(METRIC_PATH, keep_in_memory=True).compute(
            predictions=queries, references=query_ids, gallery_ids=gallery_ids
        )
    with pytest.raises(ValueError, match="gallery_ids is required"):
        evaluate.load(METRIC_PATH, keep_in_memory=True).compute(
            predictions=queries, references=query_ids, gallery_embeddings=gallery
        )
    with pytest.raises(ValueError, match="unknown configuration 'cosine'"):
        evaluate.load(METRIC_PATH, "cosine")
