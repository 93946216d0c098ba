"""RetrievalEvalCallback inside a real `transformers.Trainer` run on a tiny random CLIPModel."""

from __future__ import annotations

import json

import numpy as np
import pytest
from datasets import Dataset, Features, Image, Value
from PIL import Image as PILImage
from transformers import CLIPModel, Trainer, TrainingArguments

from gadms_hf.evaluation.callback import RetrievalEvalCallback
from gadms_hf.evaluation.embedding import evaluate_retrieval
from gadms_hf.processing_gadms import GADMSProcessor, make_image_processor
from gadms_hf.tokenizer import build_clip_tokenizer

from .conftest import square_clip_model

COLOURS = ["red", "blue", "green", "yellow", "black", "white"]
RGB = {
    "red": (200, 30, 30),
    "blue": (30, 30, 200),
    "green": (30, 160, 30),
    "yellow": (210, 200, 30),
    "black": (20, 20, 20),
    "white": (240, 240, 240),
}


def pedestrians(num_people: int, per_person: int, seed: int) -> Dataset:
    """One image and one caption per row; a person = one shirt colour, jittered per image."""
    rng = np.random.default_rng(seed)
    rows = {"image": [], "caption": [], "person_id": []}
    for person in range(num_people):
        colour = COLOURS[person % len(COLOURS)]
        for _ in range(per_person):
            pixels = np.full((64, 64, 3), 128, dtype=np.int16)
            pixels[10:40, 16:48] = RGB[colour]
            pixels += rng.integers(-20, 21, size=pixels.shape, dtype=np.int16)
            rows["image"].append(PILImage.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)))
            rows["caption"].append(f"a person in a {colour} shirt")
            rows["person_id"].append(person)
    features = Features({"image": Image(), "caption": Value("string"), "person_id": Value("int64")})
    return Dataset.from_dict(rows, features=features)


@pytest.fixture(scope="module")
def processor() -> GADMSProcessor:
    return GADMSProcessor(make_image_processor(64, 64), build_clip_tokenizer())


def tiny_clip() -> CLIPModel:
    return square_clip_model()


def make_trainer(tmp_path, processor, max_steps: int) -> Trainer:
    def collate(rows: list[dict]) -> dict:
        batch = processor(text=[row["caption"] for row in rows], images=[row["image"] for row in rows])
        return {**batch, "return_loss": True}

    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=max_steps,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        remove_unused_columns=False,
        use_cpu=True,
        dataloader_num_workers=0,
    )
    return Trainer(
        model=tiny_clip(),
        args=args,
        train_dataset=pedestrians(4, 4, seed=0),
        data_collator=collate,
        processing_class=processor,
    )


def benchmark(seed: int) -> tuple[Dataset, Dataset]:
    data = pedestrians(3, 2, seed=seed)
    return data.select_columns(["image", "person_id"]), data.select_columns(["caption", "person_id"])


def test_logs_metrics_and_keeps_best_model_per_benchmark(tmp_path, processor):
    trainer = make_trainer(tmp_path, processor, max_steps=5)
    benchmarks = {"synth": benchmark(1), "synth-b": benchmark(2)}
    trainer.add_callback(RetrievalEvalCallback(trainer, benchmarks, eval_steps=2, batch_size=4))
    trainer.train()

    history = trainer.state.log_history
    for name in benchmarks:
        entries = [entry for entry in history if f"eval_{name}_R1" in entry]
        assert [entry["step"] for entry in entries] == [2, 4, 5]  # every 2 steps, then at train end
        for entry in entries:
            for key in ("R1", "R5", "R10", "mAP", "mINP"):
                assert 0.0 <= entry[f"eval_{name}_{key}"] <= 100.0
        best_dir = tmp_path / f"_best_{name}"  # "_*": the Trainer's Hub upload skips it
        record = json.loads((best_dir / "retrieval_metrics.json").read_text())
        assert record["split"] == "val"  # the default: selection never looks at test
        scores = [entry[f"eval_{name}_R1"] for entry in entries]
        assert record["R1"] == max(scores)
        assert record["step"] == entries[scores.index(max(scores))]["step"]  # a tie is no improvement
        assert (best_dir / "model.safetensors").is_file() and (best_dir / "processor_config.json").is_file()
        # the saved weights are the ones that scored `record`
        reloaded = CLIPModel.from_pretrained(best_dir)
        again = evaluate_retrieval(reloaded, processor, *benchmarks[name], progress=False)
        assert again["mAP"] == pytest.approx(record["mAP"], abs=1e-6)
        assert reloaded.config.projection_dim == 16


def test_without_eval_steps_evaluates_once_at_train_end(tmp_path, processor):
    trainer = make_trainer(tmp_path, processor, max_steps=2)
    trainer.add_callback(RetrievalEvalCallback(trainer, {"synth": benchmark(1)}, save_best=False))
    trainer.train()
    entries = [entry for entry in trainer.state.log_history if "eval_synth_mINP" in entry]
    assert [entry["step"] for entry in entries] == [2]
    assert not (tmp_path / "_best_synth").exists()


def test_scores_are_kept_per_step_with_the_split_they_come_from(tmp_path, processor):
    trainer = make_trainer(tmp_path, processor, max_steps=3)
    callback = RetrievalEvalCallback(trainer, {"synth": benchmark(1)}, eval_steps=2, split="val")
    trainer.add_callback(callback)
    trainer.train()
    assert sorted(callback.history) == [2, 3]
    for step, scores in callback.history.items():
        logged = next(e for e in trainer.state.log_history if e.get("step") == step and "eval_synth_R1" in e)
        assert scores["synth"]["mAP"] == logged["eval_synth_mAP"]
    best_step = max(callback.history, key=lambda step: (callback.history[step]["synth"]["R1"], -step))
    assert callback.best_steps == {"synth": best_step}
    assert json.loads((tmp_path / "_best_synth" / "retrieval_metrics.json").read_text())["split"] == "val"


def test_bad_configuration_is_named(tmp_path, processor):
    trainer = make_trainer(tmp_path, processor, max_steps=1)
    gallery, queries = benchmark(1)
    with pytest.raises(ValueError, match=r"benchmarks\['x'\] queries lacks column\(s\) \['caption'\]"):
        RetrievalEvalCallback(trainer, {"x": (gallery, queries.rename_column("caption", "text"))})
    with pytest.raises(ValueError, match="names a folder"):
        RetrievalEvalCallback(trainer, {"a/b": (gallery, queries)})
    with pytest.raises(ValueError, match="metric_for_best must be one of"):
        RetrievalEvalCallback(trainer, {"x": (gallery, queries)}, metric_for_best="R20")
    with pytest.raises(ValueError, match="benchmarks is empty"):
        RetrievalEvalCallback(trainer, {})
