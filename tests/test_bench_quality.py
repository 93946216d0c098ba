"""Smoke test of scripts/bench_quality.py: a tiny end-to-end run, real SynthPEDES, real trainer and model."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_quality.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_quality"] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def test_auroc_matches_pairwise_definition(bench):
    rng = np.random.default_rng(0)
    positive, negative = rng.integers(0, 5, 40).astype(float), rng.integers(0, 5, 30).astype(float)
    pairs = (positive[:, None] > negative[None, :]).mean() + 0.5 * (positive[:, None] == negative[None, :]).mean()
    assert bench.auroc(positive, negative) == pytest.approx(pairs)
    assert bench.auroc([2.0, 3.0], [0.0, 1.0]) == 1.0
    assert bench.auroc([0.0], [1.0]) == 0.0
    with pytest.raises(ValueError, match="both classes"):
        bench.auroc([], [1.0])


def test_tiny_run_writes_every_recipe(bench, tmp_path):
    output = tmp_path / "quality.json"
    bench.main(["--train-ids", "16", "--test-ids", "6", "--steps", "4", "--seeds", "1", "--batch-size", "8",
                "--auroc-captions", "16", "--threads", "1", "--workdir", str(tmp_path), "--output", str(output)])
    result = json.loads(output.read_text())
    noisy, clean = result["summary"]["noisy"], result["summary"]["clean"]
    assert set(noisy) == {"clip", "irra", "gadms"} and set(clean) == {"irra", "gadms"}
    for block in (noisy, clean):
        for stats in block.values():
            for metric in ("R1", "mAP", "mINP"):
                assert math.isfinite(stats[metric]["mean"]) and 0.0 <= stats[metric]["mean"] <= 100.0
    assert 0.0 <= noisy["gadms"]["auroc"]["mean"] <= 1.0
    gass = next(run["gass"] for run in result["runs"] if "gass" in run)
    assert gass["noise_tokens"] > 0 and gass["clean_tokens"] > 0
    # One initialisation per seed, shared by every recipe and noise rate.
    assert len({run["init_fingerprint"] for run in result["runs"]}) == 1
    assert set(result["targets"]) == {"r1_gain_over_irra", "gass_auroc", "clean_r1_loss"}
