"""A curated folder is a training corpus: curate a few photos, then pretrain on the output as the README says."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gadms_hf.curation import run_curation
from gadms_hf.data.builders.webperson import WebPerson

from .test_curation_pipeline import curate_argv, parse, tiny_vlm  # noqa: F401  (tiny_vlm: module fixture)

ROOT = Path(__file__).resolve().parents[1]
CURATE = ROOT / "scripts" / "curate_webperson.py"
PRETRAIN = ROOT / "examples" / "run_pretrain.py"


@pytest.fixture
def photos(tmp_path) -> Path:
    assets = Path(importlib.util.find_spec("ultralytics").origin).parent / "assets"
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("bus.jpg", "zidane.jpg"):
        shutil.copy(assets / name, folder / name)
    return folder


def _env(tmp_path: Path) -> dict:
    return dict(
        os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_DATASETS_CACHE=str(tmp_path / "ds-cache"),
        OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1",
    )  # fmt: skip


def test_curated_folder_pretrains(tiny_vlm, photos, tmp_path):  # noqa: F811
    curated = tmp_path / "my_webperson"
    report = run_curation(*parse(curate_argv(photos, curated, tiny_vlm)))
    assert report["dataset"]["persons_kept"] == 2 and not report["warnings"]
    assert (curated / "curation_report.json").is_file()  # the report stays where the README says
    assert WebPerson(data_dir=str(curated), cache_dir=str(tmp_path / "c")).num_images() == 2

    out = tmp_path / "pretrain"
    command = [
        sys.executable, str(PRETRAIN), "--dataset_name", "webperson", "--data_dir", str(curated), "--preset", "tiny",
        "--max_steps", "2", "--per_device_train_batch_size", "2", "--logging_steps", "1", "--save_strategy", "no",
        "--report_to", "none", "--dataloader_num_workers", "0", "--output_dir", str(out),
    ]  # fmt: skip
    result = subprocess.run(command, env=_env(tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert {"sdm_loss", "mim_loss"} <= set(state["log_history"][1])


def test_curation_that_keeps_no_person_says_so(tiny_vlm, photos, tmp_path):  # noqa: F811
    curated = tmp_path / "empty"
    argv = curate_argv(photos, curated, tiny_vlm)
    argv = argv[: argv.index("--min_confidence")]  # the paper's thresholds: random detections all fail
    report = run_curation(*parse(argv))
    assert report["dataset"]["persons_kept"] == 0
    (warning,) = report["warnings"]
    assert "no person was kept" in warning and "no_person 2" in warning
    assert json.loads((curated / "curation_report.json").read_text())["warnings"] == [warning]

    result = subprocess.run(
        [sys.executable, str(CURATE), "curate", *argv], env=_env(tmp_path), cwd=ROOT, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "no person was kept" in errors[0] and "Traceback" not in result.stderr
