"""How a training script ends: trainer -> resume -> train -> save -> test once -> model card -> push.

`examples/run_pretrain.py` and `examples/run_finetune.py` assemble different runs (`components.py`: no
ID head or one, LoRA or not) but must end them the same way: resume from the last complete checkpoint,
select on the validation split while training, test each benchmark once on the model selected for it,
record what was tested, and put in the model card only what was measured on the published weights.
One function does all of it, so a change to any step reaches both scripts.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import Any

import datasets
from torch import nn

from ..data.collator import GADMSCollator
from ..data.score_bank import TokenScoreBank
from ..evaluation.benchmarks import format_metrics_table
from ..evaluation.callback import RetrievalEvalCallback
from ..processing_gadms import GADMSProcessor
from .arguments import DataArguments, GADMSTrainingArguments, ModelArguments
from .checkpoints import last_complete_checkpoint
from .components import Corpus, prepare_train_dataset
from .model_card import describe_weights, write_model_card
from .selection import evaluate_test_once
from .trainer import GADMSTrainer

Benchmarks = dict[str, tuple[datasets.Dataset, datasets.Dataset]]


def run_training(
    model: nn.Module,
    processor: GADMSProcessor,
    collator: GADMSCollator,
    bank: TokenScoreBank | None,
    train_corpus: Corpus,
    *,
    selection: Benchmarks,
    selection_splits: dict[str, str],
    benchmarks: Benchmarks,
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: GADMSTrainingArguments,
    start: float,
    stage: str,
    headline: str,
    details: str = "",
    name_every_model: bool = False,
    record: Mapping[str, Any] | None = None,
    merge_lora: bool = False,
) -> dict[str, dict[str, float]]:
    """Train the assembled run, save it, test it, write its card and push it; returns the test metrics.

    Args:
        model, processor, collator, bank, train_corpus: the run's parts (`components.py`); `model` may be
            a PEFT model (then `merge_lora=True`).
        selection, selection_splits: name -> (gallery, queries) to select the best model on while training
            (empty: no selection), and what split each is (`selection.load_selection_benchmarks`).
        benchmarks: name -> (gallery, queries) tested once, after training.
        model_args, data_args, training_args: the script's arguments, for the trainer and the card.
        start: `time.time()` when the script started: the reported wall time counts the set-up too.
        stage: the card's training stage ("pretraining" or "fine-tuning").
        headline: what the printed results follow ("after pretraining"); `details` ends its parenthesis.
        name_every_model: also print "<benchmark>: final model" lines, not only the selected models'.
        record: more fields for `<output_dir>/retrieval_metrics.json`.
        merge_lora: save the adapters and the merged model; the trainer then holds (and pushes) the merge.
    """
    train_dataset, augmentation = prepare_train_dataset(train_corpus, model.config, training_args.seed,
                                                        training_args.random_erasing)
    trainer = GADMSTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        data_collator=collator,
        processing_class=processor,
        score_bank=bank,
        epoch_listeners=[augmentation],
    )
    callback = None
    if selection:
        callback = RetrievalEvalCallback(trainer, selection, processor, eval_steps=int(training_args.eval_steps),
                                         batch_size=training_args.per_device_eval_batch_size,
                                         split=selection_splits)
        trainer.add_callback(callback)
    resume = training_args.resume_from_checkpoint
    if resume is None:
        resume = last_complete_checkpoint(training_args.output_dir)
    if resume and trainer.is_world_process_zero():
        print(f"resuming from {resume}")
    train_result = trainer.train(resume_from_checkpoint=resume)
    if merge_lora:
        _merge_lora(trainer, processor, training_args)
    else:
        trainer.save_model()
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()

    results = {}
    if trainer.is_world_process_zero():
        results, evaluated = evaluate_test_once(trainer, processor, benchmarks, callback,
                                                training_args.per_device_eval_batch_size)
        table = format_metrics_table(results) if results else "(no benchmark data: nothing evaluated)"
        wall = time.time() - start
        step = trainer.state.global_step
        print(f"\nText-to-image retrieval {headline} ({wall:.0f} s wall, {step} steps{details}):")
        print(table)
        for name, which in evaluated.items():
            if name_every_model or which != "final model":
                print(f"{name}: {which}")
        with open(os.path.join(training_args.output_dir, "retrieval_metrics.json"), "w", encoding="utf-8") as f:
            json.dump({"results": results, "split": data_args.eval_split, "evaluated_model": evaluated,
                       "wall_seconds": wall, "steps": step, **(record or {})}, f, indent=2)
        # The card describes the model in output_dir: only results measured on that model belong in it.
        final_results = {name: metrics for name, metrics in results.items() if evaluated[name] == "final model"}
        write_model_card(training_args.output_dir, trainer.model.config, model_args, data_args, training_args,
                         final_results, train_result.metrics, stage=stage,
                         weights=describe_weights(step, step, callback))
        print(f"model saved to {training_args.output_dir} (AutoModel.from_pretrained loads it)")
    if training_args.push_to_hub:
        trainer.push_to_hub(finetuned_from=model_args.model_name_or_path, dataset=data_args.dataset_name)
    return results


def _merge_lora(trainer: GADMSTrainer, processor: GADMSProcessor, training_args: GADMSTrainingArguments) -> None:
    """Save the adapters and the merged model (main process), and give the trainer the merged model."""
    from .lora import merge_and_save  # peft is needed only with LoRA

    peft_model = trainer.model
    merged = merge_and_save(peft_model, processor, training_args.output_dir) if training_args.should_save \
        else peft_model.merge_and_unload()
    # From here on the trainer holds the merged model, so push_to_hub uploads it, not the adapter.
    trainer.model = trainer.model_wrapped = merged


__all__ = ["run_training"]
