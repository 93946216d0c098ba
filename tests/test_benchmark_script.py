"""scripts/benchmark.py: the --quick path on a reduced setting produces every row with finite ratios, and the
measuring tools it relies on are right. No timing is asserted (the machine is shared and noisy)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "benchmark.py"
ROWS = ["train_step", "gass", "mim_memory", "embed_text", "embed_image", "ranking", "data_loader",
        "bank_disk", "bank_memory"]
REDUCED = ["--quick", "--warmup", "0", "--repeats", "2", "--batch-size", "2", "--embed-batch", "2",
           "--mim-batch", "2", "--ranking-repeats", "1", "--ranking-size", "240", "120", "40",
           "--loader-samples", "8", "--loader-epochs", "1", "--bank-captions", "5000"]


@pytest.fixture(scope="module")
def benchmark():
    spec = importlib.util.spec_from_file_location("gadms_benchmark_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the module's annotations through sys.modules
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[dict, str]:
    output = tmp_path_factory.mktemp("benchmark") / "bench.json"
    done = subprocess.run([sys.executable, str(SCRIPT), *REDUCED, "--output", str(output)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(output.read_text()), done.stdout


def test_every_row_has_finite_ratios(run):
    report, _ = run
    rows = {row["name"]: row for row in report["rows"]}
    assert list(rows) == ROWS
    for name, row in rows.items():
        assert math.isfinite(row["ratio"]) and row["ratio"] >= 0, name
        assert all(math.isfinite(x) for x in row["spread"]), name
        assert math.isfinite(row["value"]) and row["value"] >= 0, name
        assert isinstance(row["met"], bool) and row["target"].split()[0] in ("<=", ">="), name
    assert set(rows["train_step"]["details"]["seconds"]) == {"gadms", "sdm_mim", "sdm"}
    assert rows["train_step"]["details"]["flop_ratio"] > 1  # GA-DMS does strictly more work than SDM alone
    assert rows["gass"]["details"]["flop_ratio"] > 1


def test_comparisons_compute_the_same_thing(run):
    rows = {row["name"]: row for row in run[0]["rows"]}
    # GADMSModel and CLIPModel share weights and positions: identical embeddings, so the timing is fair
    assert rows["embed_text"]["details"]["max_abs_difference"] < 1e-5
    assert rows["embed_image"]["details"]["max_abs_difference"] < 1e-5
    # rank_metrics and the argsort reference agree on every metric
    assert rows["ranking"]["details"]["max_metric_difference"] < 1e-6
    assert 0 < rows["ranking"]["details"]["metrics"]["R1"] <= 100
    # the head on labelled positions only never needs more memory than full logits
    peaks = rows["mim_memory"]["details"]["peak_mib"]
    assert 0 < peaks["labelled"] < peaks["every_position"]
    bank = rows["bank_disk"]
    assert bank["details"]["file_bytes"] == pytest.approx(bank["value"] * 5000)
    assert bank["value"] >= 154  # 77 float16 scores per caption, plus the amortised header


def test_table_and_metadata(run):
    report, stdout = run
    assert stdout.startswith("| row | value | ratio [IQR] |")
    for name in ROWS:
        assert f"| {name} |" in stdout
    machine = report["machine"]
    assert machine["nproc"] >= 1 and machine["cpu_model"] and machine["date"]
    assert "--quick" in machine["command"]
    assert report["settings"]["torch_threads"] == 1 and report["settings"]["preset"] == "quick"
    assert report["settings"]["batch_size"] == 2 and report["settings"]["workers"] == 2


def test_arguments(benchmark):
    settings, output = benchmark.parse_args(["--quick", "--batch-size", "4"])
    assert settings.batch_size == 4 and settings.repeats == benchmark.PRESETS["quick"]["repeats"]
    assert settings.ranking_size == (6156, 3074, 1000) and output is None
    full, _ = benchmark.parse_args([])
    assert full.preset == "full" and full.bank_captions == 10_000_000
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--ranking-size", "10", "5", "6"])  # more identities than gallery items
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--repeats", "0"])


def test_tensor_bytes_counts_new_storage_only(benchmark):
    base = torch.zeros(1000)
    with benchmark.TensorBytes() as tracker:
        a = torch.ones(1000)  # 4,000 new bytes
        view = a[:10]  # a view: no new storage
        base.add_(1)  # in place on an older tensor: nothing new
        b = a * 2  # 4,000 more
        del a, view, b
        c = torch.ones(500)  # freed storage is subtracted, so the peak stays at 8,000
    assert tracker.peak == 8000
    assert tracker.live == 2000
    del c


def test_ratio_statistics(benchmark):
    # per-repetition ratios 2, 2, 3: median 2, quartiles (inclusive) 2 and 2.5
    ratio, (low, high) = benchmark.ratio_spread([2.0, 4.0, 6.0], [1.0, 2.0, 2.0])
    assert (ratio, low, high) == pytest.approx((2.0, 2.0, 2.5))
    assert benchmark.check(1.2, "<= 1.30") and not benchmark.check(1.4, "<= 1.30")
    assert benchmark.check(5.0, ">= 5") and not benchmark.check(4.9, ">= 5")
