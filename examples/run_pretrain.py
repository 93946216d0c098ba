#!/usr/bin/env python
"""GA-DMS pretraining (and direct-transfer evaluation) with the transformers Trainer.

    python examples/run_pretrain.py                      # embedded default: SynthPEDES + tiny model, CPU
    accelerate launch examples/run_pretrain.py \\
        --model_name_or_path openai/clip-vit-base-patch16 --dataset_name Kaichengalex/WebPerson-5M \\
        --streaming --max_steps 150000 --per_device_train_batch_size 128 --learning_rate 1e-5 \\
        --eval_benchmarks cuhk-pedes icfg-pedes rstpreid --eval_data_dir /data/benchmarks --output_dir out
    python examples/run_pretrain.py config.yaml --max_steps 1   # arguments from a file, flags on top

Every argument not given keeps the embedded default's value (`--help` shows it); a config file
comes first and flags after it override it.
`--help` lists every argument.
"""

from __future__ import annotations

import json
import logging
import os
import time

from transformers import HfArgumentParser, set_seed

from gadms_hf.data.builders.webperson import WebPerson
from gadms_hf.evaluation.callback import RetrievalEvalCallback
from gadms_hf.training.arguments import (
    CPU_REGIME_MODEL,
    CPU_REGIME_TRAINING,
    DataArguments,
    GADMSTrainingArguments,
    ModelArguments,
)
from gadms_hf.training.checkpoints import last_complete_checkpoint
from gadms_hf.training.model_card import describe_weights, write_model_card
from gadms_hf.training.pipeline import (
    build_model,
    build_processor,
    check_model_source,
    format_metrics_table,
    load_eval_benchmarks,
    load_training_corpus,
    make_collator,
    make_score_bank,
    prepare_train_dataset,
    report_cut_captions,
    setup_logging,
)
from gadms_hf.training.script_args import exit_on_bad_input, parse_script_args
from gadms_hf.training.selection import evaluate_test_once, load_selection_benchmarks
from gadms_hf.training.trainer import GADMSTrainer

logger = logging.getLogger("gadms_hf")

# The embedded default: everything generated locally, about 8 minutes on 2 CPU cores (README "Embedded
# default" says why each value is what it is; every flag overrides it).
EMBEDDED_DEFAULT = {
    **CPU_REGIME_MODEL,
    **CPU_REGIME_TRAINING,
    "dataset_name": "synth-pedes",
    "eval_benchmarks": ["synth-pedes"],
    "recipe": "gadms",
    "output_dir": "outputs/pretrain-synth",
    "num_train_epochs": 5,
    "per_device_train_batch_size": 64,
    "learning_rate": 1e-3,
    "logging_steps": 50,
    "save_strategy": "no",
    "report_to": "none",
    "dataloader_num_workers": 1,
    "seed": 42,
}


def parse_args() -> tuple[ModelArguments, DataArguments, GADMSTrainingArguments]:
    parser = HfArgumentParser((ModelArguments, DataArguments, GADMSTrainingArguments))
    return parse_script_args(parser, EMBEDDED_DEFAULT)


def main() -> dict:
    start = time.time()
    with exit_on_bad_input("run_pretrain.py"):
        model_args, data_args, training_args = parse_args()
        setup_logging(training_args)
        set_seed(training_args.seed)
        if data_args.streaming and training_args.max_steps <= 0:
            raise ValueError("--streaming needs --max_steps > 0 (a stream has no length)")
        if model_args.model_name_or_path is not None:
            check_model_source(model_args.model_name_or_path)
        train_corpus = load_training_corpus(data_args, training_args.seed)
        selection, selection_splits = {}, {}
        if training_args.eval_steps:
            selection, train_corpus, selection_splits = load_selection_benchmarks(
                data_args, train_corpus, training_args.seed, training_args.output_dir, training_args.should_save)
        model = build_model(model_args, num_identities=0)  # pretraining: no ID head (SPEC section 6)
        processor = build_processor(model_args, model.config)
        num_captions = _num_captions(train_corpus, data_args)
        bank = make_score_bank(model, num_captions, training_args)
        benchmarks = load_eval_benchmarks(data_args)
        report_cut_captions({f"{data_args.dataset_name} train": train_corpus,
                             **{f"{name} {data_args.selection_split}": pair[1] for name, pair in selection.items()},
                             **{f"{name} {data_args.eval_split}": pair[1] for name, pair in benchmarks.items()}},
                            processor.tokenizer)

    train_dataset, augmentation = prepare_train_dataset(train_corpus, model.config, training_args.seed,
                                                        training_args.random_erasing)
    trainer = GADMSTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        data_collator=make_collator(processor, model, bank, training_args.seed),
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
        print(f"\nText-to-image retrieval after pretraining ({wall:.0f} s wall, {trainer.state.global_step} steps):")
        print(table)
        for name, which in evaluated.items():
            if which != "final model":
                print(f"{name}: {which}")
        with open(os.path.join(training_args.output_dir, "retrieval_metrics.json"), "w", encoding="utf-8") as f:
            json.dump({"results": results, "split": data_args.eval_split, "evaluated_model": evaluated,
                       "wall_seconds": wall, "steps": trainer.state.global_step}, f, indent=2)
        # The card describes the model in output_dir: only results measured on that model belong in it.
        final_results = {name: metrics for name, metrics in results.items() if evaluated[name] == "final model"}
        step = trainer.state.global_step
        write_model_card(training_args.output_dir, model.config, model_args, data_args, training_args, final_results,
                         train_result.metrics, weights=describe_weights(step, step, callback))
        print(f"model saved to {training_args.output_dir} (AutoModel.from_pretrained loads it)")
    if training_args.push_to_hub:
        trainer.push_to_hub(finetuned_from=model_args.model_name_or_path, dataset=data_args.dataset_name)
    return results


def _num_captions(corpus, data_args: DataArguments) -> int:
    """Score-bank rows: one per caption id. A stream is sized from its source without being read."""
    if not data_args.streaming:
        return int(max(corpus["caption_id"])) + 1
    if data_args.dataset_name != "webperson":
        raise ValueError(f"--streaming is supported for webperson, not {data_args.dataset_name!r}")
    return 2 * WebPerson(data_dir=data_args.data_dir).num_images()


if __name__ == "__main__":
    main()
