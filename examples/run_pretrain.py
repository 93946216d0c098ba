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

import logging
import time

from transformers import HfArgumentParser, set_seed

from gadms_hf.data.builders.webperson import WebPerson
from gadms_hf.model_source import check_model_source
from gadms_hf.training.arguments import (
    CPU_REGIME_MODEL,
    DataArguments,
    GADMSTrainingArguments,
    ModelArguments,
    cpu_regime_training,
)
from gadms_hf.training.components import (
    build_model,
    build_processor,
    load_eval_benchmarks,
    load_training_corpus,
    make_collator,
    make_score_bank,
    report_cut_captions,
    setup_logging,
)
from gadms_hf.training.run import run_training
from gadms_hf.training.script_args import exit_on_bad_input, parse_script_args
from gadms_hf.training.selection import load_selection_benchmarks

logger = logging.getLogger("gadms_hf")

# The embedded default: everything generated locally, 8 to 11 minutes on 2 CPU cores (README "Embedded
# default" says why each value is what it is; every flag overrides it).
EMBEDDED_DEFAULT = {
    **CPU_REGIME_MODEL,
    **cpu_regime_training(),
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
        train_corpus = load_training_corpus(data_args)
        selection, selection_splits = {}, {}
        if training_args.eval_steps:
            selection, train_corpus, selection_splits = load_selection_benchmarks(
                data_args, train_corpus, training_args.seed, training_args.output_dir, training_args.should_save)
        model = build_model(model_args, num_identities=0)  # pretraining: no ID head (docs/method.md §6)
        processor = build_processor(model_args, model.config)
        num_captions = _num_captions(train_corpus, data_args)
        bank = make_score_bank(model, num_captions, training_args)
        benchmarks = load_eval_benchmarks(data_args)
        report_cut_captions({f"{data_args.dataset_name} train": train_corpus,
                             **{f"{name} {data_args.selection_split}": pair[1] for name, pair in selection.items()},
                             **{f"{name} {data_args.eval_split}": pair[1] for name, pair in benchmarks.items()}},
                            processor.tokenizer)

    return run_training(model, processor, make_collator(processor, model, bank, training_args.seed), bank,
                        train_corpus, selection=selection, selection_splits=selection_splits, benchmarks=benchmarks,
                        model_args=model_args, data_args=data_args, training_args=training_args, start=start,
                        stage="pretraining", headline="after pretraining")


def _num_captions(corpus, data_args: DataArguments) -> int:
    """Score-bank rows: one per caption id. A stream is sized from its source without being read."""
    if not data_args.streaming:
        return int(max(corpus["caption_id"])) + 1
    if data_args.dataset_name != "webperson":
        raise ValueError(f"--streaming is supported for webperson, not {data_args.dataset_name!r}")
    return 2 * WebPerson(data_dir=data_args.data_dir).num_images()


if __name__ == "__main__":
    main()
