"""Model selection on a validation split (never test), the test split evaluated once at the end."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest

from gadms_hf.data.holdout import hold_out_identities
from gadms_hf.training.arguments import DataArguments
from gadms_hf.training.selection import SELECTION_RECORD, load_selection_benchmarks

from .test_builders import make_cuhk, make_rstp, write_image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _tmp_datasets_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def _rows(num_people: int, per_person: int) -> datasets.Dataset:
    person = np.repeat(np.arange(num_people), per_person)
    return datasets.Dataset.from_dict({
        "caption": [f"caption {i}" for i in range(len(person))], "person_id": person.tolist(),
        "image_id": list(range(len(person))), "caption_id": list(range(len(person))),
    })


def test_holdout_is_seeded_disjoint_and_reindexed():
    data = _rows(20, 3)
    rest, held, ids = hold_out_identities(data, fraction=0.2, seed=5)
    assert len(ids) == 4 and ids == sorted(ids)
    assert set(held["person_id"]) == set(ids) and not set(ids) & set(data.select(rest["caption_id"])["person_id"])
    assert sorted(rest["person_id"]) == sorted(np.repeat(np.arange(16), 3).tolist())  # contiguous for the ID head
    assert rest.num_rows + held.num_rows == data.num_rows
    assert hold_out_identities(data, fraction=0.2, seed=5)[2] == ids  # the seed decides
    assert hold_out_identities(data, fraction=0.2, seed=6)[2] != ids
    assert len(hold_out_identities(_rows(8, 2), fraction=0.05, seed=0)[2]) == 2  # at least two to rank
    with pytest.raises(ValueError, match=r"2 of 2 identities.*--holdout_fraction"):
        hold_out_identities(_rows(2, 2), fraction=0.5, seed=0)


def make_icfg_like(root: Path, num_people: int = 10) -> Path:
    """ICFG-PEDES layout (train and test only), two images per identity."""
    entries = [("train", 100 + p, f"train/{p:04d}/{k}.jpg") for p in range(num_people) for k in range(2)]
    entries += [("test", 900, "test/0900/a.jpg"), ("test", 901, "test/0901/b.jpg")]
    for seed, (_, _, rel) in enumerate(entries):
        write_image(root / "imgs" / rel, seed)
    annotations = [{"split": s, "captions": [f"caption of {p}"], "file_path": p, "id": i} for s, i, p in entries]
    (root / "ICFG-PEDES.json").write_text(json.dumps(annotations))
    return root


def test_selection_uses_val_where_the_corpus_has_one(tmp_path):
    make_cuhk(tmp_path / "bench" / "CUHK-PEDES")
    make_rstp(tmp_path / "bench" / "RSTPReid")
    args = DataArguments(dataset_name="synth-pedes", eval_benchmarks=["cuhk-pedes", "rstpreid"],
                         eval_data_dir=str(tmp_path / "bench"))
    benchmarks, train, splits = load_selection_benchmarks(args, None, seed=0, output_dir=str(tmp_path / "out"))
    assert train is None and splits == {"cuhk-pedes": "val", "rstpreid": "val"}
    gallery, queries = benchmarks["cuhk-pedes"]
    assert queries["caption"] == ["an old man with a cane.", "grey hair, cane."]  # CUHK-PEDES's val entry
    assert benchmarks["rstpreid"][1]["caption"] == ["first of 0008_c1.jpg", "second of 0008_c1.jpg"]
    record = json.loads((tmp_path / "out" / SELECTION_RECORD).read_text())
    assert record == {"cuhk-pedes": {"split": "val"}, "rstpreid": {"split": "val"}}


def test_a_corpus_without_val_holds_out_training_identities_and_records_them(tmp_path, caplog):
    root = make_icfg_like(tmp_path / "ICFG-PEDES")
    args = DataArguments(dataset_name="icfg-pedes", data_dir=str(root), eval_benchmarks=["icfg-pedes"],
                         eval_data_dir=str(root), holdout_fraction=0.2)
    from gadms_hf.data.corpus import load_corpus

    train = load_corpus("icfg-pedes", data_dir=root, split="train")
    with caplog.at_level(logging.WARNING):
        benchmarks, rest, splits = load_selection_benchmarks(args, train, seed=3, output_dir=str(tmp_path / "out"))
    assert splits == {"icfg-pedes": "val (identities held out of train)"}
    record = json.loads((tmp_path / "out" / SELECTION_RECORD).read_text())["icfg-pedes"]
    held = record["person_ids"]
    assert record["split"] == "train, identities held out" and record["seed"] == 3 and len(held) == 2
    assert record["trained_on_the_rest"] is True
    gallery, queries = benchmarks["icfg-pedes"]
    assert set(gallery["person_id"]) == set(held) and gallery.num_rows == 4
    # the fine-tuning corpus loses exactly those identities, and its ids stay contiguous
    assert rest.num_rows == train.num_rows - 4 and sorted(set(rest["person_id"])) == list(range(8))
    assert not set(rest["image_path"]) & set(train.filter(lambda r: r["person_id"] in held)["image_path"])
    assert "2 of 10 training identities of icfg-pedes held out" in caplog.text
    assert "removed from training" in caplog.text
    again, _, _ = load_selection_benchmarks(args, train, seed=3, output_dir=str(tmp_path / "again"))
    assert again["icfg-pedes"][0]["image_id"] == gallery["image_id"]  # seeded: the same identities


def test_selecting_on_test_warns_loudly(caplog, tmp_path):
    from gadms_hf.evaluation.callback import RetrievalEvalCallback
    from gadms_hf.processing_gadms import GADMSProcessor, make_image_processor
    from gadms_hf.tokenizer import build_clip_tokenizer

    from .test_eval_callback import benchmark, make_trainer
    from .test_eval_callback import processor as _processor_fixture  # noqa: F401  (fixture)

    processor = GADMSProcessor(make_image_processor(64, 64), build_clip_tokenizer())
    trainer = make_trainer(tmp_path, processor, max_steps=1)
    with caplog.at_level(logging.WARNING):
        RetrievalEvalCallback(trainer, {"x": benchmark(1)}, split="val")
    assert not caplog.records
    with caplog.at_level(logging.WARNING):
        RetrievalEvalCallback(trainer, {"x": benchmark(1)}, split="test")
    assert "selecting the best model on the TEST split" in caplog.text
    assert "not a test result" in caplog.text


def test_finetune_selects_on_val_and_evaluates_test_once(tmp_path):
    root = make_cuhk(tmp_path / "CUHK-PEDES")
    out = tmp_path / "ft"
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_DATASETS_CACHE=str(tmp_path / "cache"),
               OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    command = [sys.executable, str(ROOT / "examples" / "run_finetune.py"), "--dataset_name", "cuhk-pedes",
               "--data_dir", str(root), "--max_steps", "2", "--eval_steps", "1", "--per_device_train_batch_size", "4",
               "--dataloader_num_workers", "0", "--output_dir", str(out)]
    result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]

    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    selection = [entry for entry in history if "eval_cuhk-pedes_R1" in entry]
    assert [entry["step"] for entry in selection] == [1, 2]
    best = json.loads((out / "_best_cuhk-pedes" / "retrieval_metrics.json").read_text())
    assert best["split"] == "val" and best["step"] in (1, 2)
    assert set(best["test"]) >= {"R1", "R5", "R10", "mAP", "mINP"}
    record = json.loads((out / "retrieval_metrics.json").read_text())
    assert record["results"]["cuhk-pedes"] == best["test"]  # the selected model's test metrics, computed once
    assert record["split"] == "test" and "_best_cuhk-pedes" in record["evaluated_model"]["cuhk-pedes"]
    assert json.loads((out / SELECTION_RECORD).read_text()) == {"cuhk-pedes": {"split": "val"}}
    assert "selected on val R1 at step" in result.stdout
