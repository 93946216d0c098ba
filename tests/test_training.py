"""GADMSTrainer and examples/run_pretrain.py: logging, score bank, checkpoints, resume, 2 processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from gadms_hf import GADMSConfig, GADMSModel
from gadms_hf.data.builders.synth_pedes import load_synth_pedes
from gadms_hf.data.score_bank import TokenScoreBank
from gadms_hf.training.arguments import GADMSTrainingArguments
from gadms_hf.training.components import make_collator, prepare_train_dataset
from gadms_hf.training.trainer import GADMSTrainer, warmup_cosine

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "run_pretrain.py"
TINY_RUN = [
    "--preset",
    "tiny",
    "--synth_num_train_ids",
    "8",
    "--synth_num_test_ids",
    "4",
    "--eval_benchmarks",
    "synth-pedes",
    "--per_device_train_batch_size",
    "8",
    "--learning_rate",
    "1e-3",
    "--logging_steps",
    "1",
    "--report_to",
    "none",
    "--dataloader_num_workers",
    "0",
    "--seed",
    "7",
    "--warmup_steps",
    "2",
]


def _env(tmp_path: Path) -> dict:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_DATASETS_CACHE=str(tmp_path / "ds-cache"),
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
    )
    return env


@pytest.fixture(scope="module")
def synth_train(tmp_path_factory):
    cache = tmp_path_factory.mktemp("synth")
    return load_synth_pedes("train", cache_dir=str(cache), num_train_ids=6, num_test_ids=2, images_per_id=2)


def _trainer(tmp_path, synth_train, processor, **overrides) -> GADMSTrainer:
    torch.manual_seed(0)
    config = GADMSConfig.tiny()  # pretraining: no ID head
    model = GADMSModel(config)
    bank = TokenScoreBank.create(tmp_path / "bank", int(max(synth_train["caption_id"])) + 1)
    args = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=6,
        max_steps=4,
        logging_steps=1,
        save_strategy="steps",
        save_steps=2,
        report_to="none",
        dataloader_num_workers=0,
        learning_rate=1e-3,
        seed=0,
    )
    args.update(overrides)
    dataset, augmentation = prepare_train_dataset(synth_train, config, seed=0)
    return GADMSTrainer(
        model=model,
        args=GADMSTrainingArguments(**args),
        train_dataset=dataset,
        data_collator=make_collator(processor, model, bank, seed=0),
        score_bank=bank,
        epoch_listeners=[augmentation],
    )


def test_trainer_logs_components_and_fills_the_bank(tmp_path, synth_train, processor):
    trainer = _trainer(tmp_path, synth_train, processor)
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 4
    for entry in logged:
        assert {"sdm_loss", "mim_loss"} <= set(entry) and "id_loss" not in entry
        assert entry["loss"] == pytest.approx(entry["sdm_loss"] + 0.3 * entry["mim_loss"], rel=2e-3)
    bank = trainer.score_bank.read(list(range(len(trainer.score_bank))))
    written = ~torch.isclose(bank, torch.tensor(0.85), atol=1e-3).all(dim=1)
    assert written.sum() >= 12  # 4 steps x 6 captions, some may repeat across epochs
    assert bank[written][:, 0].abs().max() == 0  # start token never scored
    assert bank.max() <= 1 and bank.min() >= 0
    for step in (2, 4):  # every checkpoint holds the bank as it was at that step
        saved = TokenScoreBank.open(tmp_path / "out" / f"checkpoint-{step}", readonly=True)
        assert len(saved) == len(trainer.score_bank)
    final = TokenScoreBank.open(tmp_path / "out" / "checkpoint-4", readonly=True)
    torch.testing.assert_close(final.read(list(range(len(final)))), bank)


def test_optimizer_groups_and_schedule(tmp_path, synth_train, processor):
    trainer = _trainer(
        tmp_path,
        synth_train,
        processor,
        new_module_lr_factor=5.0,
        bias_lr_factor=2.0,
        bias_weight_decay=0.0,
        weight_decay=4e-5,
        learning_rate=1e-5,
    )
    optimizer = trainer.create_optimizer()
    assert isinstance(optimizer, torch.optim.Adam)
    groups = {(round(g["lr"], 12), g["weight_decay"]): len(g["params"]) for g in optimizer.param_groups}
    assert set(groups) == {(1e-5, 4e-5), (2e-5, 0.0), (5e-5, 4e-5), (1e-4, 0.0)}
    head_params = {id(p) for p in trainer.model.cross_modal.parameters()}
    for group in optimizer.param_groups:
        assert all((id(p) in head_params) == (group["lr"] >= 5e-5) for p in group["params"])
    assert warmup_cosine(0, 10, 100, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(5, 10, 100, 0.1) == pytest.approx(0.55)
    assert warmup_cosine(10, 10, 100, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(55, 10, 100, 0.1) == pytest.approx(0.5)
    assert warmup_cosine(100, 10, 100, 0.1) == pytest.approx(0.0)


def _run(args: list[str], tmp_path: Path, launcher: list[str] | None = None, timeout: int = 300):
    command = (launcher or [sys.executable]) + [str(SCRIPT), *args]
    result = subprocess.run(
        command, env=_env(tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def _losses(output_dir: Path) -> dict[int, dict]:
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return {e["step"]: e for e in state["log_history"] if "loss" in e}


def test_sigkill_after_checkpoint_then_resume_matches_uninterrupted(tmp_path):
    common = TINY_RUN + ["--max_steps", "6", "--save_strategy", "steps", "--save_steps", "3"]
    straight = tmp_path / "straight"
    _run(common + ["--output_dir", str(straight)], tmp_path)

    killed = tmp_path / "killed"
    pause = textwrap.dedent(
        f"""
        import runpy, sys, time
        from transformers import TrainerCallback
        import gadms_hf.training.trainer as trainer_module

        class PauseAfterCheckpoint(TrainerCallback):
            def on_save(self, args, state, control, **kwargs):
                print("CHECKPOINT", state.global_step, flush=True)
                time.sleep(600)

        original = trainer_module.GADMSTrainer.__init__
        def patched(self, *args, **kwargs):
            original(self, *args, **kwargs)
            self.add_callback(PauseAfterCheckpoint())
        trainer_module.GADMSTrainer.__init__ = patched
        sys.argv = ["run_pretrain.py", *{common + ["--output_dir", str(killed)]!r}]
        runpy.run_path({str(SCRIPT)!r}, run_name="__main__")
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", pause],
        env=_env(tmp_path),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 300
    for line in process.stdout:
        if line.startswith("CHECKPOINT 3") or time.time() > deadline:
            break
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert (killed / "checkpoint-3" / "trainer_state.json").is_file()
    assert not (killed / "checkpoint-6").exists()
    bank_at_3 = TokenScoreBank.open(killed / "checkpoint-3", readonly=True)
    reference_3 = TokenScoreBank.open(straight / "checkpoint-3", readonly=True)
    rows = list(range(len(bank_at_3)))
    torch.testing.assert_close(bank_at_3.read(rows), reference_3.read(rows))

    resumed = _run(common + ["--output_dir", str(killed)], tmp_path)  # finds checkpoint-3 by itself
    assert "checkpoint-3" in resumed.stdout + resumed.stderr or (killed / "checkpoint-6").is_dir()
    expected, got = _losses(straight), _losses(killed)
    assert sorted(got) == [1, 2, 3, 4, 5, 6]
    for step in (4, 5, 6):
        for key in ("loss", "sdm_loss", "mim_loss"):
            assert got[step][key] == pytest.approx(expected[step][key], rel=1e-4, abs=1e-4), (step, key)
    final_rows = TokenScoreBank.open(killed / "_score_bank", readonly=True).read(rows)
    torch.testing.assert_close(
        final_rows, TokenScoreBank.open(straight / "_score_bank", readonly=True).read(rows)
    )


@pytest.mark.multiprocess
def test_two_processes_share_the_bank(tmp_path):
    """torchrun, 2 CPU processes (gloo): every caption's row lands in the shared bank and checkpoint,
    whichever rank scored it."""
    out = tmp_path / "ddp"
    args = TINY_RUN + [
        "--synth_config",
        "images_per_id=4",
        "--num_train_epochs",
        "1",
        "--per_device_train_batch_size",
        "4",
        "--save_strategy",
        "epoch",
        "--output_dir",
        str(out),
    ]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    result = _run(args, tmp_path, launcher=launcher, timeout=400)
    assert "R1" in result.stdout
    state = json.loads((out / "trainer_state.json").read_text())
    steps = state["global_step"]
    checkpoint = out / f"checkpoint-{steps}"
    saved = TokenScoreBank.open(checkpoint, readonly=True)
    rows = saved.read(list(range(len(saved))))
    # 8 ids x 4 images x 2 captions = 64 captions, 2 ranks x 4 per step: each caption scored once
    assert len(saved) == 64 and steps == 8
    initial = torch.isclose(rows, torch.tensor(0.85), atol=1e-3).all(dim=1)
    assert not initial.any(), f"{int(initial.sum())} captions never reached the bank"
    torch.testing.assert_close(
        TokenScoreBank.open(out / "_score_bank", readonly=True).read(list(range(64))), rows
    )
    assert np.isfinite(
        state["log_history"][-2]["train_loss"]
        if "train_loss" in state["log_history"][-2]
        else state["log_history"][-1]["train_loss"]
    )


def test_streamed_webperson_pretraining_sizes_and_fills_the_bank(tmp_path):
    """The WebPerson path: Hub-form Parquet shards, streamed; the bank is sized from the Parquet footers."""
    from gadms_hf.data.builders.webperson import WebPerson

    from .test_builders import WEB_IMAGES, make_webperson_hub, make_webperson_raw

    hub = make_webperson_hub(tmp_path / "hub", shards=2)
    assert WebPerson(data_dir=str(hub), cache_dir=str(tmp_path / "c1")).num_images() == len(WEB_IMAGES)
    raw = make_webperson_raw(tmp_path / "raw")
    assert WebPerson(data_dir=str(raw), cache_dir=str(tmp_path / "c2")).num_images() == len(WEB_IMAGES)

    out = tmp_path / "stream"
    args = ["--dataset_name", "webperson", "--data_dir", str(hub), "--streaming", "--max_steps", "2", "--preset", "tiny",
            "--per_device_train_batch_size", "2", "--logging_steps", "1", "--report_to", "none",
            "--save_strategy", "no", "--dataloader_num_workers", "0", "--eval_benchmarks", "none",
            "--output_dir", str(out)]
    _run(args, tmp_path)
    bank = TokenScoreBank.open(out / "_score_bank", readonly=True)
    assert len(bank) == 2 * len(WEB_IMAGES)
    rows = bank.read(list(range(len(bank))))
    written = ~torch.isclose(rows, torch.tensor(0.85), atol=1e-3).all(dim=1)
    assert int(written.sum()) == 4  # 2 steps x 2 captions, in stream order
    assert {"sdm_loss", "mim_loss"} <= set(_losses(out)[2])


def test_an_image_broken_during_training_is_skipped_and_logged(tmp_path, processor):
    from gadms_hf.data.corpus import load_corpus

    from .test_builders import make_cuhk, truncate

    root = make_cuhk(tmp_path / "cuhk")
    corpus = load_corpus("cuhk-pedes", data_dir=root, split="train", cache_dir=tmp_path / "cache")
    truncate(root / "imgs" / "cam_a/0002.jpg")  # after the build: the cached corpus still lists it
    trainer = _trainer(tmp_path, corpus, processor, per_device_train_batch_size=4, max_steps=2,
                       save_strategy="no")
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 2 and all(np.isfinite(entry["loss"]) for entry in logged)
    # 2 steps x 4 rows = the whole split, so both captions of the broken image came up
    assert logged[-1]["unreadable_images"] == 2
