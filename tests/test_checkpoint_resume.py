"""Checkpoints appear complete or not at all: a run SIGKILLed inside a save resumes from the last complete one.

Each kill test runs `examples/run_pretrain.py` in a child process whose test-side patch blocks right after one
step of the checkpoint save and says so on stdout; the test then SIGKILLs it, reruns the same command and
compares with an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch

from gadms_hf.data.score_bank import TokenScoreBank
from gadms_hf.training.checkpoints import last_complete_checkpoint

from .test_training import _trainer, synth_train  # noqa: F401  (synth_train: module fixture)

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "run_pretrain.py"
RUN = [
    "--preset", "tiny",
    "--synth_num_train_ids", "4", "--synth_num_test_ids", "2", "--per_device_train_batch_size", "4",
    "--learning_rate", "1e-3", "--logging_steps", "1", "--report_to", "none", "--dataloader_num_workers", "0",
    "--seed", "7", "--warmup_steps", "1", "--max_steps", "3", "--save_strategy", "steps", "--save_steps", "1",
]  # fmt: skip
KILLED_STEP = 2  # the save of checkpoint-2 is interrupted; checkpoint-1 is complete

# Where the child blocks, each right after the named part of the save has been written.
KILL_POINTS = {
    "bank_copied": ("gadms_hf.data.score_bank", "TokenScoreBank", "save", "directory"),
    "weights_written": ("gadms_hf.training.trainer", "GADMSTrainer", "save_model", "output_dir"),
    "state_not_written": ("gadms_hf.training.trainer", "GADMSTrainer", "_save_rng_state", "output_dir"),
    "state_written": ("transformers.trainer_callback", "TrainerState", "save_to_json", "json_path"),
}

CHILD = """
import importlib, os, runpy, sys, time

module, cls, method, arg = {point!r}
owner = getattr(importlib.import_module(module), cls)
original = getattr(owner, method)

def blocking(self, *args, **kwargs):
    result = original(self, *args, **kwargs)
    target = str(kwargs.get(arg, args[0] if args else ""))
    folder = os.path.dirname(target) if target.endswith(".json") else target
    if os.path.basename(folder.rstrip(os.sep)) == "checkpoint-{step}":
        print("\\nINSIDE_SAVE", folder, flush=True)  # own line: progress bars share stdout
        time.sleep(600)
    return result

setattr(owner, method, blocking)
sys.argv = ["run_pretrain.py", *{argv!r}]
runpy.run_path({script!r}, run_name="__main__")
"""


def _env(cache: Path) -> dict:
    return dict(
        os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_DATASETS_CACHE=str(cache),
        PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
    )  # fmt: skip


def _run(output_dir: Path, cache: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *RUN, "--output_dir", str(output_dir)],
        env=_env(cache), cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def _kill_inside_save(point: str, output_dir: Path, cache: Path) -> None:
    code = CHILD.format(
        point=KILL_POINTS[point], step=KILLED_STEP, argv=[*RUN, "--output_dir", str(output_dir)], script=str(SCRIPT)
    )
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)], env=_env(cache), cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    watchdog = threading.Timer(300, child.kill)  # never wait for the child's own 600 s sleep
    watchdog.start()
    lines = []
    for line in child.stdout:
        lines.append(line)
        if line.startswith("INSIDE_SAVE"):
            break
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    watchdog.cancel()
    assert child.returncode == -signal.SIGKILL
    assert lines and lines[-1].startswith("INSIDE_SAVE"), "".join(lines)[-3000:]


def _logged(output_dir: Path) -> dict[int, dict]:
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return {entry["step"]: entry for entry in state["log_history"] if "loss" in entry}


def _bank(folder: Path) -> torch.Tensor:
    bank = TokenScoreBank.open(folder, readonly=True)
    return bank.read(list(range(len(bank))))


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> tuple[Path, Path]:
    """An uninterrupted run (and the datasets cache every run of this module shares)."""
    root = tmp_path_factory.mktemp("straight")
    _run(root / "out", root / "cache")
    return root / "out", root / "cache"


def _check_resumed_like_straight(point: str, tmp_path: Path, straight: tuple[Path, Path]) -> None:
    reference, cache = straight
    out = tmp_path / "killed"
    _kill_inside_save(point, out, cache)
    assert not (out / f"checkpoint-{KILLED_STEP}").exists()  # never visible half-written
    assert last_complete_checkpoint(str(out)) == str(out / "checkpoint-1")

    resumed = _run(out, cache)  # the same command again
    assert f"resuming from {out / 'checkpoint-1'}" in resumed.stdout
    expected, got = _logged(reference), _logged(out)
    assert sorted(got) == [1, 2, 3]
    for step in (2, 3):
        for key in ("loss", "sdm_loss", "mim_loss"):
            assert got[step][key] == pytest.approx(expected[step][key], rel=1e-4, abs=1e-4), (point, step, key)
    torch.testing.assert_close(_bank(out / "_score_bank"), _bank(reference / "_score_bank"))
    torch.testing.assert_close(_bank(out / "checkpoint-3"), _bank(reference / "checkpoint-3"))
    assert sorted(p.name for p in out.iterdir() if "checkpoint" in p.name) == [f"checkpoint-{s}" for s in (1, 2, 3)]


def test_sigkill_inside_a_save_resumes_from_the_last_complete_checkpoint(tmp_path, straight):
    _check_resumed_like_straight("weights_written", tmp_path, straight)


@pytest.mark.slow
@pytest.mark.parametrize("point", ["bank_copied", "state_not_written", "state_written"])
def test_sigkill_at_every_point_of_a_save(point, tmp_path, straight):
    _check_resumed_like_straight(point, tmp_path, straight)


def test_rerunning_a_finished_command_trains_no_extra_step(tmp_path, straight):
    reference, cache = straight
    out = tmp_path / "again"
    shutil.copytree(reference, out)
    _run(out, cache)
    assert not (out / "checkpoint-4").exists()
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    assert _logged(out) == _logged(reference)


def test_last_complete_checkpoint_skips_unfinished_folders(tmp_path):
    for step in (1, 2, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
    for step in (1, 2):
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-10" / "model.safetensors").write_bytes(b"")  # an old-style half-written one
    (tmp_path / "checkpoint-7.txt").write_text("not a checkpoint")
    assert last_complete_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-2")
    assert last_complete_checkpoint(str(tmp_path / "nothing-here")) is None


def test_rotation_keeps_the_newest_complete_checkpoints(tmp_path, synth_train, processor):  # noqa: F811
    trainer = _trainer(tmp_path, synth_train, processor, save_steps=1, save_total_limit=2)
    trainer.train()
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-3", "checkpoint-4"]
    for step in (3, 4):
        assert (out / f"checkpoint-{step}" / "trainer_state.json").is_file()
        assert len(TokenScoreBank.open(out / f"checkpoint-{step}", readonly=True)) == len(trainer.score_bank)
