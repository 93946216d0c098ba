"""examples/run_eval.py: table, JSON/Markdown, pictures, and missing benchmark data reported, not fatal."""

import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def test_run_eval_reports_missing_data_and_writes_results(tmp_path, tiny_model, processor):
    tiny_model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_DATASETS_CACHE=str(tmp_path / "cache"),
               OMP_NUM_THREADS="1")
    command = [sys.executable, str(ROOT / "examples" / "run_eval.py"), "--model_name_or_path",
               str(tmp_path / "model"), "--benchmark", "all", "--data_dir", str(tmp_path / "no-data"),
               "--plots", str(tmp_path / "plots"), "--output_dir", str(tmp_path / "eval")]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| synth-pedes |" in result.stdout
    assert "skipped cuhk-pedes: missing" in result.stdout and "reid_raw.json" in result.stdout
    assert "ICFG-PEDES.json" in result.stdout and "data_captions.json" in result.stdout
    saved = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    assert set(saved["results"]) == {"synth-pedes"} and len(saved["skipped"]) == 3
    metrics = saved["results"]["synth-pedes"]
    assert 0 <= metrics["R1"] <= metrics["R5"] <= metrics["R10"] <= 100
    assert "| synth-pedes |" in (tmp_path / "eval" / "eval_results.md").read_text()
    for name in ("retrieval_grid.png", "gass_heatmap.png"):
        with Image.open(tmp_path / "plots" / name) as picture:
            assert picture.width > 300 and picture.height > 200
