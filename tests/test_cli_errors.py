"""What a new user hits: each command-line mistake ends with one line naming the culprit, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], tmp_path: Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1",
               HF_DATASETS_CACHE=str(tmp_path / "ds-cache"), TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, *args], env=env, cwd=cwd or ROOT, capture_output=True, text=True,
                          timeout=300)


def _assert_clean_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode not in (0, None), result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr[-3000:])


@pytest.mark.parametrize("value", ["0", "-4"])
def test_bad_batch_size_is_refused_before_the_corpus_is_built(tmp_path, value):
    result = _run([str(ROOT / "examples" / "run_pretrain.py"), "--per_device_train_batch_size", value,
                   "--output_dir", str(tmp_path / "out")], tmp_path)
    _assert_clean_error(result, f"--per_device_train_batch_size={value}", "positive")
    assert not (tmp_path / "ds-cache").exists()  # nothing was generated or built first


def test_output_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "taken").write_text("a file")
    result = _run([str(ROOT / "examples" / "run_finetune.py"), "--output_dir", str(tmp_path / "taken")], tmp_path)
    _assert_clean_error(result, f"--output_dir {tmp_path / 'taken'} is a file")


def test_relative_model_path_that_does_not_exist_says_so(tmp_path):
    (tmp_path / "outputs").mkdir()
    model = ["--model_name_or_path", "outputs/nope"]
    commands = {"run_pretrain.py": [*model, "--output_dir", str(tmp_path / "out")],
                "run_eval.py": [*model, "--output_dir", str(tmp_path / "out")],
                "search.py": ["query", *model, "--images", str(tmp_path), "--text", "a man"]}
    for script, args in commands.items():
        result = _run([str(ROOT / "examples" / script), *args], tmp_path, cwd=tmp_path)
        _assert_clean_error(result, "outputs/nope", "does not exist", "Hub id")
        assert "huggingface.co" not in result.stderr


def test_search_with_images_that_are_not_a_folder_says_so(tmp_path, tiny_model, processor):
    tiny_model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    result = _run([str(ROOT / "examples" / "search.py"), "index", "--model_name_or_path", str(tmp_path / "model"),
                   "--images", str(tmp_path / "no-photos")], tmp_path)
    _assert_clean_error(result, f"--images {tmp_path / 'no-photos'} is not a folder")


def test_run_eval_with_nothing_to_evaluate_fails(tmp_path, tiny_model, processor):
    tiny_model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    result = _run([str(ROOT / "examples" / "run_eval.py"), "--model_name_or_path", str(tmp_path / "model"),
                   "--benchmark", "cuhk-pedes", "--data_dir", str(tmp_path / "no-data"),
                   "--output_dir", str(tmp_path / "eval")], tmp_path)
    _assert_clean_error(result, "nothing evaluated", "reid_raw.json")
    assert not (tmp_path / "eval" / "eval_results.json").exists()


def test_curate_webperson_help_lists_the_subcommands(tmp_path):
    result = _run([str(ROOT / "scripts" / "curate_webperson.py"), "--help"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "templates" in result.stdout and "curate" in result.stdout
    assert "error: the first argument" not in result.stdout + result.stderr
    wrong = _run([str(ROOT / "scripts" / "curate_webperson.py"), "curat"], tmp_path)
    assert wrong.returncode == 2 and "'curat'" in wrong.stderr and "templates" in wrong.stderr


def test_convert_refuses_a_file_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.pth").write_text("hello, these are notes\n")
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "noise.safetensors").write_bytes(os.urandom(64))
    for name in ("notes.pth", "empty.pth", "noise.safetensors"):
        result = _run([str(ROOT / "scripts" / "convert_authors_checkpoint.py"), "--checkpoint",
                       str(tmp_path / name), "--output_dir", str(tmp_path / f"out-{name}")], tmp_path)
        _assert_clean_error(result, str(tmp_path / name), "not a")
        assert not (tmp_path / f"out-{name}").exists()
