"""examples/run_finetune.py and training/lora.py: SDM + ID + MIM fine-tuning, the IRRA switch, LoRA."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub.utils import filter_repo_objects
from transformers import AutoModel

from gadms_hf import GADMSConfig, GADMSModel
from gadms_hf.data.builders.synth_pedes import load_synth_pedes
from gadms_hf.data.score_bank import TokenScoreBank
from gadms_hf.training.arguments import (
    DataArguments,
    FinetuneArguments,
    GADMSTrainingArguments,
    ModelArguments,
    parse_overrides,
)
from gadms_hf.training.components import make_collator, prepare_train_dataset
from gadms_hf.training.lora import ADAPTER_SUBDIR, apply_lora, merge_and_save
from gadms_hf.training.trainer import GADMSTrainer

from .conftest import CAPTIONS, random_images

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "run_finetune.py"
NUM_TRAIN_IDS = 8
TINY_RUN = [
    "--preset", "tiny",
    "--synth_num_train_ids", str(NUM_TRAIN_IDS),
    "--synth_num_test_ids", "4",
    "--per_device_train_batch_size", "8",
    "--max_steps", "4",
    "--learning_rate", "1e-3",
    "--logging_steps", "1",
    "--report_to", "none",
    "--dataloader_num_workers", "0",
    "--seed", "7",
]  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine run several times faster without intra-op threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def datasets_cache(tmp_path_factory) -> Path:
    """One SynthPEDES build shared by the script runs and the in-process tests."""
    return tmp_path_factory.mktemp("ds-cache")


@pytest.fixture(scope="module")
def synth_train(datasets_cache):
    return load_synth_pedes("train", cache_dir=str(datasets_cache), num_train_ids=NUM_TRAIN_IDS, num_test_ids=4)


def _run(args: list[str], cache: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_DATASETS_CACHE=str(cache),
               OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    result = subprocess.run([sys.executable, str(SCRIPT), *TINY_RUN, *args], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def _train_logs(output_dir: Path) -> list[dict]:
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    return [entry for entry in history if "loss" in entry]


def test_finetune_script_trains_sdm_id_mim_and_saves_a_loadable_model(tmp_path, datasets_cache, synth_train):
    out = tmp_path / "ft"
    result = _run(["--output_dir", str(out), "--save_strategy", "no"], datasets_cache)

    logs = _train_logs(out)
    assert [entry["step"] for entry in logs] == [1, 2, 3, 4]
    for entry in logs:  # fine-tuning default: SDM + ID + 1.0 MIM
        assert entry["loss"] == pytest.approx(entry["sdm_loss"] + entry["id_loss"] + entry["mim_loss"], rel=2e-3)
    train_ids = max(synth_train["person_id"]) + 1
    assert train_ids == NUM_TRAIN_IDS

    model = AutoModel.from_pretrained(out)
    assert type(model) is GADMSModel
    assert model.config.num_identities == train_ids and model.classifier.out_features == train_ids
    assert model.config.mim_loss_weight == 1.0 and model.config.use_gass and model.config.masking == "gass"
    assert (out / "_score_bank" / "score_bank.npy").is_file()

    record = json.loads((out / "retrieval_metrics.json").read_text())
    metrics = record["results"]["synth-pedes"]
    assert set(metrics) >= {"R1", "R5", "R10", "mAP", "mINP"} and record["num_identities"] == train_ids
    assert 0 <= metrics["R1"] <= metrics["R5"] <= metrics["R10"] <= 100
    assert f"| synth-pedes | {metrics['R1']:.2f} | {metrics['R5']:.2f} |" in result.stdout
    card = (out / "README.md").read_text()
    assert "Stage: fine-tuning" in card and f"{metrics['mAP']:.2f}" in card


def test_no_gass_runs_the_irra_recipe_and_evaluates_during_training(tmp_path, datasets_cache):
    out = tmp_path / "irra"
    _run(["--output_dir", str(out), "--no_gass", "--eval_steps", "2", "--save_strategy", "no",
          "--config_overrides", "mim_loss_weight=0.5"], datasets_cache)

    assert not list(out.glob("*score_bank*")), "the IRRA recipe must not create a GASS score bank"
    config = GADMSConfig.from_pretrained(out)
    assert not config.use_gass and config.masking == "random" and config.mim_loss_weight == 0.5
    logs = _train_logs(out)
    assert logs and all("mim_loss" in entry and "id_loss" in entry for entry in logs)
    for entry in logs:
        expected = entry["sdm_loss"] + entry["id_loss"] + 0.5 * entry["mim_loss"]
        assert entry["loss"] == pytest.approx(expected, rel=2e-3)
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    evaluated = [entry for entry in history if "eval_synth-pedes_R1" in entry]
    assert [entry["step"] for entry in evaluated] == [2, 4]  # on the selection split
    best = json.loads((out / "_best_synth-pedes" / "retrieval_metrics.json").read_text())
    record = json.loads((out / "retrieval_metrics.json").read_text())
    assert record["results"]["synth-pedes"] == best["test"]  # test: once, on the selected model
    assert "_best_synth-pedes" in record["evaluated_model"]["synth-pedes"]


def _hub_upload(output_dir: Path) -> list[str]:
    """The files `Trainer.push_to_hub` uploads from `output_dir`: its ignore patterns, huggingface_hub's matching."""
    files = [path.relative_to(output_dir).as_posix() for path in output_dir.rglob("*") if path.is_file()]
    return sorted(filter_repo_objects(files, ignore_patterns=["_*", "checkpoint-*"]))


def test_lora_script_saves_adapters_and_a_merged_model(tmp_path, datasets_cache):
    out = tmp_path / "lora"
    _run(["--output_dir", str(out), "--lora_r", "4", "--save_strategy", "steps", "--save_steps", "2",
          "--eval_steps", "2"], datasets_cache)

    # the Hub gets one model: the merged final weights, not the adapters nor the best-so-far copies
    uploaded = _hub_upload(out)
    assert [name for name in uploaded if name.endswith(".safetensors")] == ["model.safetensors"]
    assert not [name for name in uploaded if "adapter" in name or "best" in name]
    best = AutoModel.from_pretrained(out / "_best_synth-pedes")  # a whole model, merged, not an adapter
    assert type(best) is GADMSModel and not any(type(m).__module__.startswith("peft.") for m in best.modules())
    record = json.loads((out / "_best_synth-pedes" / "retrieval_metrics.json").read_text())
    card = (out / "README.md").read_text()
    assert "the weights at step 4 of 4" in card and "`val` split" in card  # selected on val, not test
    assert f"{record['R1']:.2f} at step {record['step']}" in card

    for folder in (out / ADAPTER_SUBDIR, out / "checkpoint-2"):
        assert (folder / "adapter_model.safetensors").is_file() and (folder / "adapter_config.json").is_file()
        assert not (folder / "model.safetensors").exists()
    assert not (out / "adapter_config.json").exists()
    adapter = json.loads((out / ADAPTER_SUBDIR / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and adapter["lora_alpha"] == 8
    assert sorted(adapter["modules_to_save"]) == ["classifier", "cross_modal"]
    # with --eval_steps, identities held out for selection (SynthPEDES without a val split) are not trained on
    selection = json.loads((out / "selection_split.json").read_text())["synth-pedes"]
    trained_ids = NUM_TRAIN_IDS - len(selection.get("person_ids", []))
    model = AutoModel.from_pretrained(out)
    assert type(model) is GADMSModel and model.config.num_identities == trained_ids
    assert not any(type(module).__module__.startswith("peft.") for module in model.modules())
    assert json.loads((out / "retrieval_metrics.json").read_text())["lora_r"] == 4
    best = AutoModel.from_pretrained(out / "_best_synth-pedes")  # the selected model, saved merged
    assert type(best) is GADMSModel and not (out / "_best_synth-pedes" / "adapter_config.json").exists()
    assert not any(type(module).__module__.startswith("peft.") for module in best.modules())


def _lora_trainer(tmp_path: Path, synth_train, processor, output: str, **overrides) -> GADMSTrainer:
    torch.manual_seed(0)
    model = GADMSModel(GADMSConfig.tiny(num_identities=NUM_TRAIN_IDS, mim_loss_weight=1.0))
    bank = TokenScoreBank.create(tmp_path / f"bank-{output}", int(max(synth_train["caption_id"])) + 1)
    collator = make_collator(processor, model, bank, seed=0)
    peft_model = apply_lora(model, r=4, dropout=0.0)
    dataset, augmentation = prepare_train_dataset(synth_train, model.config, seed=0)
    args = dict(output_dir=str(tmp_path / output), per_device_train_batch_size=8, max_steps=4, logging_steps=1,
                save_strategy="steps", save_steps=2, report_to="none", dataloader_num_workers=0,
                learning_rate=5e-3, seed=0)
    args.update(overrides)
    return GADMSTrainer(model=peft_model, args=GADMSTrainingArguments(**args), train_dataset=dataset,
                        data_collator=collator, processing_class=processor, score_bank=bank,
                        epoch_listeners=[augmentation])


def _lora_state(model) -> dict[str, torch.Tensor]:
    return {name: param.detach().clone() for name, param in model.named_parameters() if param.requires_grad}


def test_lora_trains_with_gass_resumes_and_merges_exactly(tmp_path, synth_train, processor):
    trainer = _lora_trainer(tmp_path, synth_train, processor, "straight")
    peft_model = trainer.model
    trainable = [name for name, param in peft_model.named_parameters() if param.requires_grad]
    assert any(".lora_A." in name for name in trainable) and any(".lora_B." in name for name in trainable)
    assert all(".lora_" in name or ".modules_to_save." in name for name in trainable)
    for head in ("cross_modal", "classifier"):  # new heads: every parameter of their trained copy
        copy = getattr(peft_model.base_model.model, head).modules_to_save["default"]
        assert all(param.requires_grad for param in copy.parameters())
    lora_layers = [name for name in trainable if name.endswith("lora_A.default.weight")]
    assert len(lora_layers) == 4 * 3 * 2  # q/k/v/out of 3 layers in each tower, none in the MIM head
    assert not any("cross_modal" in name for name in lora_layers)
    assert trainer.args.remove_unused_columns is False  # the collator still gets raw captions

    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 4 and all({"sdm_loss", "mim_loss", "id_loss"} <= set(entry) for entry in logs)
    rows = trainer.score_bank.read(list(range(len(trainer.score_bank))))
    written = ~torch.isclose(rows, torch.tensor(0.85), atol=1e-3).all(dim=1)
    assert written.sum() >= 16 and torch.isfinite(rows).all()  # GASS ran through the LoRA layers
    assert any(param.abs().max() > 0 for name, param in peft_model.named_parameters() if ".lora_B." in name)
    final = _lora_state(peft_model)

    # The Trainer checkpoints adapters and resumes from them: same weights as the uninterrupted run.
    checkpoint = tmp_path / "straight" / "checkpoint-2"
    assert (checkpoint / "adapter_model.safetensors").is_file()
    resumed = _lora_trainer(tmp_path, synth_train, processor, "resumed")
    resumed.train(resume_from_checkpoint=str(checkpoint))
    for name, value in _lora_state(resumed.model).items():
        torch.testing.assert_close(value, final[name], rtol=1e-4, atol=1e-6, msg=name)

    batch = processor(text=CAPTIONS, images=random_images(len(CAPTIONS), 96, 32), return_tensors="pt")
    raw = synth_train.select_columns(["caption", "person_id", "caption_id"])
    train_batch = trainer.data_collator([{**raw[i], "pixel_values": batch["pixel_values"][i]} for i in range(4)])
    train_batch.pop("caption_ids")

    def embed_and_score(model) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        model.eval()
        with torch.no_grad():
            text = model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            image = model.get_image_features(pixel_values=batch["pixel_values"])
        model.train()
        scores = model(**train_batch).gass_scores
        return text.pooler_output, image.pooler_output, scores

    peft_outputs = embed_and_score(peft_model)
    assert torch.isfinite(peft_outputs[2]).all() and peft_outputs[2].max() > 0

    out = tmp_path / "merged"
    merge_and_save(peft_model, processor, out)
    assert (out / ADAPTER_SUBDIR / "adapter_model.safetensors").is_file()
    assert (out / ADAPTER_SUBDIR / "adapter_config.json").is_file()
    merged = AutoModel.from_pretrained(out)
    assert type(merged) is GADMSModel
    assert not any(type(module).__module__.startswith("peft.") for module in merged.modules())
    assert not any("lora" in key or "modules_to_save" in key for key in merged.state_dict())
    for got, expected in zip(embed_and_score(merged), peft_outputs):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_lora_rejects_unknown_targets_and_stray_adapters(tmp_path, tiny_model, processor):
    with pytest.raises(ValueError, match=r"\['qproj'\].*choose from"):
        apply_lora(tiny_model, r=2, target_modules=["qproj", "v_proj"])
    with pytest.raises(ValueError, match="r=0"):
        apply_lora(tiny_model, r=0)
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(ValueError, match="would load that adapter"):
        merge_and_save(apply_lora(tiny_model, r=2), processor, tmp_path)


def test_finetune_defaults_and_argument_errors():
    spec = importlib.util.spec_from_file_location("run_finetune", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    model_args = ModelArguments(config_overrides="gass_normalization=sample")
    data_args = DataArguments(dataset_name="cuhk-pedes", data_dir="/data/CUHK-PEDES")
    script.apply_finetune_defaults(model_args, data_args, FinetuneArguments(no_gass=True))
    assert model_args.recipe == "irra"
    assert parse_overrides(model_args.config_overrides) == {"gass_normalization": "sample", "mim_loss_weight": 1.0}
    assert data_args.eval_benchmarks == ["cuhk-pedes"] and data_args.eval_data_dir == "/data/CUHK-PEDES"
    with pytest.raises(ValueError, match="'webperson': fine-tuning needs one of"):
        script.apply_finetune_defaults(ModelArguments(), DataArguments(dataset_name="webperson"), FinetuneArguments())
    assert FinetuneArguments(lora_target_modules=["q_proj,v_proj", "fc1"]).lora_target_modules == [
        "q_proj", "v_proj", "fc1"
    ]
    with pytest.raises(ValueError, match="--lora_r=-1"):
        FinetuneArguments(lora_r=-1)


def test_fine_tuning_a_fine_tuned_model_with_other_identities_gets_a_fresh_id_head(tmp_path, caplog):
    import logging

    from gadms_hf.training.components import build_model

    torch.manual_seed(0)
    GADMSModel(GADMSConfig.tiny(num_identities=NUM_TRAIN_IDS)).save_pretrained(tmp_path / "fine-tuned")
    saved = GADMSModel.from_pretrained(tmp_path / "fine-tuned")
    with caplog.at_level(logging.INFO, logger="gadms_hf"):
        model = build_model(ModelArguments(model_name_or_path=str(tmp_path / "fine-tuned")), num_identities=5)
    assert model.classifier.out_features == 5 and model.config.num_identities == 5
    assert f"fresh ID head: 5 identities (the checkpoint's head had {NUM_TRAIN_IDS})" in caplog.text
    for name, value in saved.state_dict().items():  # everything but the head is the checkpoint's
        if not name.startswith("classifier."):
            torch.testing.assert_close(model.state_dict()[name], value, msg=name)
    same = build_model(ModelArguments(model_name_or_path=str(tmp_path / "fine-tuned")), num_identities=NUM_TRAIN_IDS)
    torch.testing.assert_close(same.classifier.weight, saved.classifier.weight)
