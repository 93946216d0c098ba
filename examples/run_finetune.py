#!/usr/bin/env python
"""GA-DMS fine-tuning on one person-retrieval benchmark (SDM + ID + MIM), optionally with LoRA.

    python examples/run_finetune.py                      # embedded default: SynthPEDES + tiny model, CPU
    accelerate launch examples/run_finetune.py \\
        --dataset_name cuhk-pedes --data_dir /data/CUHK-PEDES --model_name_or_path outputs/pretrain \\
        --num_train_epochs 60 --per_device_train_batch_size 128 --learning_rate 1e-5 --output_dir out
    python examples/run_finetune.py ... --no_gass        # the IRRA recipe: SDM + ID + random 15% MLM
    python examples/run_finetune.py ... --lora_r 16      # LoRA on both towers' attention projections
    python examples/run_finetune.py config.yaml --max_steps 1   # arguments from a file, flags on top

`--model_name_or_path` is a GA-DMS model (e.g. from run_pretrain.py), a transformers CLIP
checkpoint (converted with GADMSModel.from_clip), or unset (a fresh `--preset` model). The ID
head gets one class per training identity (a fresh head when the checkpoint's has another
number). Fine-tuning weighs MIM 1.0 unless `--config_overrides mim_loss_weight=...` says
otherwise. With `--eval_steps N` the model is evaluated every N steps on the benchmark's `val`
split (ICFG-PEDES: training identities held out, recorded in selection_split.json) and the best
one kept in `<output_dir>/_best_<benchmark>/`; the test split is evaluated once, at the end, on
that model (without `--eval_steps`, on the final model). With LoRA the adapters are saved to
`<output_dir>/_adapter` and the merged model to `<output_dir>`; only the merged model is uploaded
by `--push_to_hub` (folders starting with `_` are not).
Every argument not given keeps the embedded default's value (`--help` shows it); a config file
comes first and flags after it override it.
`--help` lists every argument.
"""

from __future__ import annotations

import logging
import time

from transformers import HfArgumentParser, set_seed

from gadms_hf.model_source import check_model_source
from gadms_hf.training.arguments import (
    CPU_REGIME_MODEL,
    DataArguments,
    FinetuneArguments,
    GADMSTrainingArguments,
    ModelArguments,
    cpu_regime_training,
    parse_overrides,
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

BENCHMARKS = ("cuhk-pedes", "icfg-pedes", "rstpreid", "synth-pedes")
# docs/method.md §6: fine-tuning optimises SDM + ID + MIM at full weight (pretraining uses 0.3 MIM).
FINETUNE_CONFIG_DEFAULTS = {"mim_loss_weight": 1.0}

# The embedded default: everything generated locally, about a minute on 2 CPU cores, in the regime of
# run_pretrain.py's (the `small` preset, bfloat16 where the CPU computes it natively, eager attention, no
# random erasing). From random weights the preset keeps its InfoNCE term (SDM would collapse the towers);
# fine-tuning run_pretrain.py's model (--model_name_or_path outputs/pretrain-synth, README "Fine-tuning")
# trains with the paper's SDM + ID + MIM.
EMBEDDED_DEFAULT = {
    **CPU_REGIME_MODEL,
    **cpu_regime_training(),
    "dataset_name": "synth-pedes",
    "synth_num_train_ids": 100,
    "synth_num_test_ids": 50,
    "recipe": "gadms",
    "output_dir": "outputs/finetune-synth",
    "num_train_epochs": 8,
    "per_device_train_batch_size": 32,
    "learning_rate": 1e-3,
    "logging_steps": 25,
    "save_strategy": "no",
    "report_to": "none",
    "dataloader_num_workers": 1,
    "seed": 42,
}

Arguments = tuple[ModelArguments, DataArguments, FinetuneArguments, GADMSTrainingArguments]


def parse_args() -> Arguments:
    parser = HfArgumentParser((ModelArguments, DataArguments, FinetuneArguments, GADMSTrainingArguments))
    return parse_script_args(parser, EMBEDDED_DEFAULT)


def apply_finetune_defaults(model_args: ModelArguments, data_args: DataArguments, ft_args: FinetuneArguments) -> None:
    """Resolve the fine-tuning meaning of the shared arguments, in place (so the model card records it)."""
    if data_args.dataset_name not in BENCHMARKS:
        raise ValueError(f"--dataset_name={data_args.dataset_name!r}: fine-tuning needs one of {BENCHMARKS}")
    if data_args.streaming:
        raise ValueError("--streaming is not supported for fine-tuning: the ID head is sized from the whole split")
    if ft_args.no_gass and model_args.recipe == "gadms":
        model_args.recipe = "irra"
    overrides = parse_overrides(model_args.config_overrides)
    missing = [f"{key}={value}" for key, value in FINETUNE_CONFIG_DEFAULTS.items() if key not in overrides]
    model_args.config_overrides = ",".join(filter(None, [model_args.config_overrides, *missing]))
    if not data_args.eval_benchmarks:
        data_args.eval_benchmarks = [data_args.dataset_name]
    if data_args.eval_data_dir is None:
        data_args.eval_data_dir = data_args.data_dir


def main() -> dict:
    start = time.time()
    with exit_on_bad_input("run_finetune.py"):
        model_args, data_args, ft_args, training_args = parse_args()
        setup_logging(training_args)
        apply_finetune_defaults(model_args, data_args, ft_args)
        set_seed(training_args.seed)
        if model_args.model_name_or_path is not None:
            check_model_source(model_args.model_name_or_path)

        train_corpus = load_training_corpus(data_args)
        selection, selection_splits = {}, {}
        if training_args.eval_steps:  # before the ID head is sized: held-out identities leave the training set
            selection, train_corpus, selection_splits = load_selection_benchmarks(
                data_args, train_corpus, training_args.seed, training_args.output_dir, training_args.should_save)
        ids = train_corpus.select_columns(["person_id", "caption_id"]).with_format("numpy")[:]
        num_identities = int(ids["person_id"].max()) + 1
        num_captions = int(ids["caption_id"].max()) + 1
        logger.info("fine-tuning on %s: %d captions, %d identities (ID head classes)",
                    data_args.dataset_name, len(train_corpus), num_identities)
        # The CLIP recipe has no ID loss, so no classifier (an unused head would break DDP).
        model = build_model(model_args, num_identities=0 if model_args.recipe == "clip" else num_identities)
        processor = build_processor(model_args, model.config)
        bank = make_score_bank(model, num_captions, training_args)
        collator = make_collator(processor, model, bank, training_args.seed)
        if ft_args.lora_r:
            from gadms_hf.training.lora import apply_lora

            model = apply_lora(model, ft_args.lora_r, ft_args.lora_alpha, ft_args.lora_dropout,
                               ft_args.lora_target_modules)
        benchmarks = load_eval_benchmarks(data_args)
        report_cut_captions({f"{data_args.dataset_name} train": train_corpus,
                             **{f"{name} {data_args.selection_split}": pair[1] for name, pair in selection.items()},
                             **{f"{name} {data_args.eval_split}": pair[1] for name, pair in benchmarks.items()}},
                            processor.tokenizer)

    lora = f", LoRA r={ft_args.lora_r}" if ft_args.lora_r else ""
    return run_training(model, processor, collator, bank, train_corpus, selection=selection,
                        selection_splits=selection_splits, benchmarks=benchmarks, model_args=model_args,
                        data_args=data_args, training_args=training_args, start=start, stage="fine-tuning",
                        headline=f"on the {data_args.eval_split} split after fine-tuning",
                        details=f", recipe {model_args.recipe}{lora}", name_every_model=True,
                        record={"num_identities": num_identities, "recipe": model_args.recipe,
                                "lora_r": ft_args.lora_r},
                        merge_lora=bool(ft_args.lora_r))


if __name__ == "__main__":
    main()
