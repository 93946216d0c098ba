#!/usr/bin/env python
"""Retrieval-quality benchmark: CLIP vs IRRA vs GA-DMS on SynthPEDES with planted caption noise.

    python scripts/bench_quality.py --output quality.json --plot docs/quality.png   # 3 seeds (docs/quality.md)
    python scripts/bench_quality.py --quick --threads 2                             # 1 seed, a smoke run
    python scripts/bench_quality.py --merge a.json b.json --output quality.json     # recipe subsets run apart

Every run starts from one shared warm start (the stand-in for pretrained CLIP): `make demo`'s recipe and length
(940 steps; bfloat16 only where the hardware computes it natively) on a SynthPEDES draw of 3,000 other
identities, so that, like CLIP, it grounds what it has learnt to see (here colours, docs/quality.md); kept by
`--warm-cache DIR`. Each seed then draws the heads (MIM, ID) and the data order, the same for every recipe
(checked by a fingerprint of the towers), and fine-tunes on 1,000 identities whose every caption carries
`confusable` noise (a wrong colour or garment, an absent bag or hat) with the paper's objectives at its fixed
scale 50. Same data, same step budget.
Recipes (`GADMSConfig.apply_recipe`): `clip` = InfoNCE; `irra` = SDM + random-15% MLM + ID; `gadms` = SDM on
GASS-noise-suppressed text + GASS-guided MIM + ID; `gadms-oracle` = GA-DMS whose bank holds the planted truth
(the ceiling of the dual masking). Our options, as extra rows: `--strong-noise-prob P` adds `-strong` rows with
`noise_max_prob=P` (the paper's 0.2 hides a token scored 0 only 17.6 % of the time); `--taylor` adds
`gadms-taylor`, our token score (`token_score="occlusion_taylor"`, per caption), noisy and clean;
`--colour-oracle` adds `gadms-oracle-colours`, whose bank knows only the planted wrong colours. Reported per
recipe: mean and std over seeds of Rank-1 / mAP / mINP on the clean test queries (`--split val` for choosing
settings), and R1 minus IRRA's of the same seed; for GA-DMS rows, AUROCs of the bank's token scores for
attribute (positive) vs planted noise tokens, over every clean word, and on colours alone, beside the same for
an occlusion reference (how much the cosine drops when the token is masked). A second block trains IRRA, GA-DMS
(and `--taylor`'s row) at noise 0: what noise costs, and whether the masking costs without noise.

Targets: noise costs IRRA >= 5 R1; GA-DMS R1 >= IRRA R1 + 2 at the noise rate; AUROC >= 0.80; at noise 0
GA-DMS R1 no lower than IRRA's by more than the larger of their stds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import PrinterCallback, set_seed  # noqa: E402

from gadms_hf import build_clip_tokenizer  # noqa: E402
from gadms_hf.data.corpus import gallery_and_queries, load_corpus  # noqa: E402
from gadms_hf.data.synth import NOISE_PROFILES, truth_scores  # noqa: E402
from gadms_hf.evaluation.embedding import evaluate_retrieval  # noqa: E402
from gadms_hf.evaluation.plots import plot_quality_study  # noqa: E402
from gadms_hf.evaluation.quality_study import (  # noqa: E402
    CLEAN_RECIPES,
    COLOURS,
    NOISY_ORDER,
    ORACLE,
    RECIPES,
    SEPARATION_KEYS,
    STRONG,
    TAYLOR,
    base_recipe,
    measured_reasons,
    merge_results,
    study_summary,
    unshared_starts,
)
from gadms_hf.evaluation.token_separation import token_separation  # noqa: E402
from gadms_hf.modeling_gadms import GADMSModel  # noqa: E402
from gadms_hf.training.arguments import (  # noqa: E402
    CPU_REGIME_MODEL,
    DataArguments,
    GADMSTrainingArguments,
    ModelArguments,
    cpu_regime_training,
)
from gadms_hf.training.components import (  # noqa: E402
    build_model,
    build_processor,
    load_training_corpus,
    make_collator,
    make_score_bank,
    prepare_train_dataset,
)
from gadms_hf.training.trainer import GADMSTrainer  # noqa: E402


@dataclass
class Setting:
    """Corpus, budget and rows of one benchmark run."""

    train_ids: int
    test_ids: int
    steps: int
    batch_size: int
    seeds: list[int]
    noise_rate: float
    noise_profile: str
    learning_rate: float
    auroc_captions: int
    clean_row: bool
    warm_ids: int
    warm_steps: int
    warm_learning_rate: float
    oracle: bool
    gass_layers: int | None
    preset: str
    split: str
    strong_noise_prob: float | None
    taylor: bool
    colour_oracle: bool
    recipes: list[str] | None  # None: every recipe the other fields allow


QUICK = dict(train_ids=1000, test_ids=100, steps=200, seeds=1, warm_ids=300, warm_steps=200)
FULL = dict(train_ids=1000, test_ids=100, steps=300, seeds=3, warm_ids=3000, warm_steps=940)
WARM_CORPUS_SEED = 1  # SynthPEDES draw of the warm start; the benchmark's own splits use seed 0
WARM_MODEL_SEED = 1000
# Our option's fields (occlusion_taylor.py): the bank filled with the signed first-order masking effect, per caption.
TAYLOR_OVERRIDES = ",token_score=occlusion_taylor,gass_normalization=sample"
# The warm start's objective whatever the preset: the embedded default's (InfoNCE cannot collapse random towers).
WARM_OVERRIDES = "contrastive_loss=infonce,learn_similarity_scale=True,similarity_scale=20.0"
# The compared recipes start from aligned towers: the paper's contrastive terms at its fixed scale.
RECIPE_LOSS = {"clip": "infonce", "irra": "sdm", "gadms": "sdm", ORACLE: "sdm"}


TOWER_PREFIXES = ("text_model.", "vision_model.", "text_projection.", "visual_projection.")


def init_fingerprint(model: GADMSModel) -> float:
    """A number that changes with any weight of the two towers (to check the shared initialisation)."""
    total = 0.0
    for name, param in model.named_parameters():
        if name.startswith(TOWER_PREFIXES):
            total += float(param.detach().double().abs().sum())
    return total


def shared_init(recipe: str, seed: int, num_identities: int, towers: dict[str, torch.Tensor] | None,
                gass_layers: int | None = None, preset: str = "small",
                strong_noise_prob: float | None = None) -> GADMSModel:
    """The recipe's model: the warm-started towers, and the seed's draw of everything else.

    The CLIP recipe has no MIM head, so building it straight from the seed would draw the heads from a
    shifted random stream; copying makes every shared weight identical across recipes. A `-strong` recipe
    sets `noise_max_prob=strong_noise_prob` (a masking constant: no weight changes).
    """
    set_seed(seed)

    def model_args(name: str) -> ModelArguments:
        overrides = (f"contrastive_loss={RECIPE_LOSS[base_recipe(name)]},learn_similarity_scale=False,"
                     "similarity_scale=50.0")
        if gass_layers is not None:
            overrides += f",gass_num_layers={gass_layers}"
        if TAYLOR in name:
            overrides += TAYLOR_OVERRIDES
        if name.endswith(STRONG):
            if strong_noise_prob is None:
                raise ValueError(f"recipe {name!r} needs strong_noise_prob")
            overrides += f",noise_max_prob={strong_noise_prob}"
        recipe_name = "gadms" if base_recipe(name) == ORACLE else base_recipe(name)
        return ModelArguments(**{**CPU_REGIME_MODEL, "preset": preset}, recipe=recipe_name, config_overrides=overrides)

    reference = build_model(model_args("gadms"), num_identities=num_identities)
    if towers is not None:
        unexpected = reference.load_state_dict(towers, strict=False).unexpected_keys
        if unexpected:
            raise RuntimeError(f"the warm start has weights the GA-DMS model lacks: {unexpected}")
    if recipe in ("gadms", ORACLE):
        return reference
    model = build_model(model_args(recipe), num_identities=num_identities)
    missing = model.load_state_dict(reference.state_dict(), strict=False).missing_keys
    if missing:
        raise RuntimeError(f"recipe {recipe!r} has weights the GA-DMS model lacks: {missing}")
    return model


def oracle_scores(corpus, tokenizer, colours_only: bool = False) -> tuple[np.ndarray, torch.Tensor]:
    """(caption ids, bank rows) of the planted truth (`truth_scores`): what an oracle row's bank holds."""
    rows = truth_scores(tokenizer, corpus["caption"], corpus["noise_spans"], colours_only)
    return np.asarray(corpus["caption_id"]), torch.tensor(rows, dtype=torch.float32)


def train(model: GADMSModel, corpus, steps: int, learning_rate: float, batch_size: int, seed: int,
          output_dir: str, workers: int, oracle: tuple[np.ndarray, torch.Tensor] | None = None) -> GADMSTrainer:
    """`steps` optimiser steps of the model's own recipe with `GADMSTrainer`, warm-up + cosine, in process.

    With `oracle` (`oracle_scores` of the corpus), the collator masks from a bank holding those rows and the
    trainer is given no bank, so GASS (still computed, so the step costs the same) never overwrites it.
    """
    args = GADMSTrainingArguments(
        output_dir=output_dir, max_steps=steps, per_device_train_batch_size=batch_size,
        learning_rate=learning_rate, **cpu_regime_training(), logging_steps=max(1, steps // 5),
        save_strategy="no", report_to="none", dataloader_num_workers=workers, seed=seed,
        disable_tqdm=True, log_level="warning",
    )
    processor = build_processor(ModelArguments(), model.config)
    bank = make_score_bank(model, int(max(corpus["caption_id"])) + 1, args)
    if oracle is not None:
        bank.write(*oracle)
    train_dataset, augmentation = prepare_train_dataset(corpus, model.config, seed, args.random_erasing)
    trainer = GADMSTrainer(
        model=model, args=args, train_dataset=train_dataset,
        data_collator=make_collator(processor, model, bank, seed), processing_class=processor,
        score_bank=None if oracle is not None else bank, epoch_listeners=[augmentation],
    )
    trainer.remove_callback(PrinterCallback)  # one summary line per run instead of the log dicts
    trainer.train()
    trainer.model.eval()
    return trainer


def loss_log(trainer: GADMSTrainer) -> list[dict[str, float]]:
    """Loss components every steps/5 steps: shows whether a recipe was still learning when the budget ran out."""
    return [entry for entry in trainer.state.log_history if "loss" in entry]


def warm_cache_key(setting: Setting) -> str:
    """What the warm start's weights depend on: its settings, the precision and torch's version."""
    fields = {name: getattr(setting, name) for name in ("preset", "warm_ids", "warm_steps", "warm_learning_rate",
                                                         "noise_rate", "noise_profile", "batch_size")}
    fields.update(bf16=bool(cpu_regime_training()["bf16"]), torch=torch.__version__, seed=WARM_MODEL_SEED,
                  corpus_seed=WARM_CORPUS_SEED, overrides=WARM_OVERRIDES,
                  device="cuda" if torch.cuda.is_available() else "cpu")
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def load_warm_cache(cache_dir: str, setting: Setting) -> tuple[dict[str, torch.Tensor], dict] | None:
    """The cached warm start of these settings, or None (its report is written last: present = complete)."""
    stem = os.path.join(cache_dir, f"warm-{warm_cache_key(setting)}")
    if not os.path.exists(stem + ".json"):
        return None
    with open(stem + ".json", encoding="utf-8") as handle:
        report = json.load(handle)
    return load_file(stem + ".safetensors"), {**report, "cached": stem + ".safetensors"}


def save_warm_cache(cache_dir: str, setting: Setting, towers: dict[str, torch.Tensor], report: dict) -> None:
    """Weights, then report, each written to a temporary name and renamed: a killed run leaves no half entry."""
    os.makedirs(cache_dir, exist_ok=True)
    stem = os.path.join(cache_dir, f"warm-{warm_cache_key(setting)}")
    partial = f"{stem}.{os.getpid()}.partial"
    save_file({name: tensor.contiguous() for name, tensor in towers.items()}, partial)
    os.replace(partial, stem + ".safetensors")
    with open(partial, "w", encoding="utf-8") as handle:
        json.dump(report, handle)
    os.replace(partial, stem + ".json")


def warm_start(setting: Setting, workdir: str, workers: int,
               cache_dir: str | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Pretraining shared by every recipe and seed, as `make demo` trains: this benchmark's stand-in for CLIP.

    The paper fine-tunes from pretrained CLIP; from random weights the SDM recipes first collapse the
    embeddings (all cosines equal at the fixed scale 50) and a model at chance gives GASS nothing to read.
    The warm start sees its own SynthPEDES draw (corpus seed `WARM_CORPUS_SEED`: other identities than the
    benchmark's train and test splits) with the benchmark's noise rate, as web pretraining data is noisy.
    With `cache_dir`, a warm start of the same settings is trained once and read back afterwards.
    """
    if cache_dir is not None and (cached := load_warm_cache(cache_dir, setting)) is not None:
        return cached
    start = time.time()
    set_seed(WARM_MODEL_SEED)
    model = build_model(ModelArguments(**{**CPU_REGIME_MODEL, "preset": setting.preset}, recipe="gadms",
                                       config_overrides=WARM_OVERRIDES))
    corpus = load_corpus("synth-pedes", split="train", num_train_ids=setting.warm_ids, num_test_ids=1,
                         noise_rate=setting.noise_rate, noise_profile=setting.noise_profile, seed=WARM_CORPUS_SEED)
    trainer = train(model, corpus, setting.warm_steps, setting.warm_learning_rate, setting.batch_size,
                    WARM_MODEL_SEED, os.path.join(workdir, "warm-start"), workers)
    towers = {k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith(TOWER_PREFIXES)}
    report = {"steps": setting.warm_steps, "identities": setting.warm_ids, "log_history": loss_log(trainer),
              "seconds": time.time() - start}
    if cache_dir is not None:
        save_warm_cache(cache_dir, setting, towers, report)
    return towers, report


def train_and_evaluate(recipe: str, seed: int, noise_rate: float, setting: Setting, corpus, benchmark,
                       towers: dict[str, torch.Tensor] | None, workdir: str, workers: int,
                       oracles: dict[bool, tuple[np.ndarray, torch.Tensor]] | None = None) -> dict[str, Any]:
    """Fine-tune one recipe from the shared start, then evaluate retrieval (and token separation for GA-DMS).

    `oracles` (the corpus's `oracle_scores`, by `colours_only`, computed once per corpus) serve the oracle rows.
    """
    start = time.time()
    model = shared_init(recipe, seed, setting.train_ids, towers, setting.gass_layers, setting.preset,
                        setting.strong_noise_prob)
    fingerprint = init_fingerprint(model)
    trainer = train(model, corpus, setting.steps, setting.learning_rate, setting.batch_size, seed,
                    os.path.join(workdir, f"{recipe}-noise{noise_rate}-seed{seed}"), workers,
                    oracle=oracles[COLOURS in recipe] if base_recipe(recipe) == ORACLE else None)
    processor = trainer.processing_class
    metrics = evaluate_retrieval(model, processor, *benchmark, progress=False)
    row: dict[str, Any] = {
        "recipe": recipe, "seed": seed, "noise_rate": noise_rate, "init_fingerprint": fingerprint,
        "noise_max_prob": model.config.noise_max_prob, "token_score": model.config.token_score,
        "log_history": loss_log(trainer),
        **{name: float(metrics[name]) for name in ("R1", "R5", "R10", "mAP", "mINP")},
    }
    if base_recipe(recipe) == "gadms" and noise_rate > 0:
        row["gass"] = token_separation(model, processor, corpus, setting.auroc_captions)
        for key in SEPARATION_KEYS:
            row[key] = row["gass"][key]
    row["seconds"] = time.time() - start
    return row


def noisy_recipes(setting: Setting) -> tuple[str, ...]:
    """The recipes run at the noise rate, in table order."""
    recipes = RECIPES + ((ORACLE,) if setting.oracle else ())
    if setting.strong_noise_prob is not None:
        recipes += ("gadms" + STRONG,) + ((ORACLE + STRONG,) if setting.oracle else ())
    if setting.colour_oracle:
        recipes += (ORACLE + COLOURS,) + ((ORACLE + COLOURS + STRONG,) if setting.strong_noise_prob is not None else ())
    if setting.taylor:
        recipes += ("gadms" + TAYLOR,) + (("gadms" + TAYLOR + STRONG,) if setting.strong_noise_prob is not None else ())
    if setting.recipes is not None:
        recipes = tuple(recipe for recipe in recipes if recipe in setting.recipes)
    return recipes


def clean_recipes(setting: Setting) -> tuple[str, ...]:
    """The recipes run at noise 0: IRRA, GA-DMS and our option's rows, whichever are among the noisy ones."""
    return CLEAN_RECIPES + tuple(name for name in noisy_recipes(setting) if TAYLOR in name)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"Small corpus and budget: {QUICK}.")
    parser.add_argument("--seeds", type=int, default=None, help="Number of seeds (default 3; --quick 1).")
    parser.add_argument("--train-ids", type=int, default=None, help="SynthPEDES training identities.")
    parser.add_argument("--test-ids", type=int, default=None, help="SynthPEDES test identities.")
    parser.add_argument("--steps", type=int, default=None, help="Optimiser steps per run (same for every recipe).")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=5e-4, help="Fine-tuning learning rate.")
    parser.add_argument("--warm-steps", type=int, default=None,
                        help="Warm-start steps shared by every run (0: every recipe starts from random weights).")
    parser.add_argument("--warm-ids", type=int, default=None, help="Identities of the warm start's own SynthPEDES draw.")
    parser.add_argument("--warm-learning-rate", type=float, default=1e-3)
    parser.add_argument("--noise-rate", type=float, default=1.0, help="Share of train captions with planted noise.")
    parser.add_argument("--noise-profile", choices=NOISE_PROFILES, default="confusable",
                        help="Kind of planted noise: 'default' (accessories, backgrounds, wrong colours) or "
                        "'confusable' (wrong colours, garments and bags or hats, as MLLM captioners hallucinate).")
    parser.add_argument("--auroc-captions", type=int, default=256, help="Noisy train captions scored for AUROC.")
    parser.add_argument("--no-clean-row", action="store_true", help="Skip the IRRA vs GA-DMS runs at noise 0.")
    parser.add_argument("--gass-layers", type=int, default=None,
                        help="GASS layers L (default: the preset's; small: both of its 2 text layers, tiny: 2 of 3, "
                        "the paper's 8 of 12).")
    parser.add_argument("--preset", choices=("small", "tiny"), default="small",
                        help="Model size: 'small' (make demo's) or 'tiny' (the earlier, faster benchmark model).")
    parser.add_argument("--split", choices=("val", "test"), default="test",
                        help="Where retrieval is measured: 'val' to choose settings on, 'test' to report once.")
    parser.add_argument("--strong-noise-prob", type=float, default=None,
                        help="Also run GA-DMS (and its oracle) with noise_max_prob set to this (our option; the "
                        "paper's 0.2 hides a token scored 0 only 17.6%% of the time).")
    parser.add_argument("--taylor", action="store_true",
                        help="Also run GA-DMS with our token score (token_score=occlusion_taylor, scaled per caption), "
                        "noisy and clean, and with --strong-noise-prob its strong row.")
    parser.add_argument("--colour-oracle", action="store_true",
                        help=f"Also run {ORACLE + COLOURS!r}: the oracle bank with only the planted wrong colours at "
                        "0 (what a score that reads colours alone could give), and with --strong-noise-prob its "
                        "strong row.")
    parser.add_argument("--recipes", default=None,
                        help="Comma-separated subset of the noisy rows to run (e.g. irra,gadms-strong); default all.")
    parser.add_argument("--plot", default=None, help="Write a PNG: R1 per recipe over seeds, token-score histograms.")
    parser.add_argument("--no-oracle", action="store_true",
                        help=f"Skip {ORACLE!r}: GA-DMS masking from the planted truth instead of GASS.")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: on a shared 2-core machine more threads wait on each other).")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (0 or 2).")
    parser.add_argument("--warm-cache", default=None,
                        help="Folder for warm starts: trained once per setting (and torch version, precision), "
                        "read back by later runs. Delete it after changing the code that trains them.")
    parser.add_argument("--warm-only", action="store_true",
                        help="Train (or find) the warm start in --warm-cache and stop: run it once before studies that "
                        "share the cache side by side, so that they do not each train it.")
    parser.add_argument("--workdir", default=None, help="Where score banks go (default: a temporary folder).")
    parser.add_argument("--output", default=None, help="Write every run and the summary as JSON here.")
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                        help="Train nothing: merge the --output files of studies with the same settings and warm "
                        "start (e.g. recipe subsets run side by side) into one table, --output and --plot.")
    return parser.parse_args(argv)


def make_setting(args: argparse.Namespace) -> Setting:
    base = QUICK if args.quick else FULL
    setting = Setting(
        train_ids=args.train_ids or base["train_ids"], test_ids=args.test_ids or base["test_ids"],
        steps=args.steps or base["steps"], batch_size=args.batch_size,
        seeds=list(range(args.seeds or base["seeds"])), noise_rate=args.noise_rate,
        noise_profile=args.noise_profile,
        learning_rate=args.learning_rate, auroc_captions=args.auroc_captions, clean_row=not args.no_clean_row,
        warm_ids=args.warm_ids or base["warm_ids"],
        warm_steps=base["warm_steps"] if args.warm_steps is None else args.warm_steps,
        warm_learning_rate=args.warm_learning_rate, oracle=not args.no_oracle,
        gass_layers=args.gass_layers, preset=args.preset, split=args.split,
        strong_noise_prob=args.strong_noise_prob, taylor=args.taylor,
        colour_oracle=args.colour_oracle,
        recipes=None if args.recipes is None else [name.strip() for name in args.recipes.split(",") if name.strip()],
    )
    if setting.strong_noise_prob is not None and not 0.0 <= setting.strong_noise_prob <= 1.0:
        raise ValueError(f"--strong-noise-prob={setting.strong_noise_prob} must be a probability in [0, 1]")
    if setting.recipes is not None:
        known = NOISY_ORDER
        unknown = [name for name in setting.recipes if name not in known]
        if unknown or not setting.recipes:
            raise ValueError(f"--recipes={args.recipes!r}: expected a comma-separated subset of {known}")
        if any(name.endswith(STRONG) for name in setting.recipes) and setting.strong_noise_prob is None:
            raise ValueError("--recipes names a '-strong' row: give --strong-noise-prob too")
        if any(TAYLOR in name for name in setting.recipes) and not setting.taylor:
            raise ValueError("--recipes names a '-taylor' row: give --taylor too")
        if any(COLOURS in name for name in setting.recipes) and not setting.colour_oracle:
            raise ValueError("--recipes names a '-colours' row: give --colour-oracle too")
    if setting.warm_steps < 0:
        raise ValueError(f"--warm-steps={setting.warm_steps} must be >= 0")
    if not 0.0 < setting.noise_rate <= 1.0:
        raise ValueError(f"--noise-rate={setting.noise_rate} must be in (0, 1] (noise 0 is the clean row)")
    for name in ("train_ids", "test_ids", "steps", "batch_size"):
        if getattr(setting, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')}={getattr(setting, name)} must be >= 1")
    return setting


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.merge:  # one table from studies of the same settings run side by side (quality_study.merge_results)
        results = []
        for path in args.merge:
            with open(path, encoding="utf-8") as handle:
                results.append(json.load(handle))
        return report(merge_results(results, args.merge), args.output, args.plot)
    setting = make_setting(args)
    if args.warm_only and (args.warm_cache is None or not setting.warm_steps):
        raise ValueError("--warm-only needs --warm-cache and a warm start (--warm-steps > 0)")
    torch.set_num_threads(args.threads)
    logging.getLogger("gadms_hf").setLevel(logging.WARNING)
    start = time.time()
    sizes = {"synth_num_train_ids": setting.train_ids, "synth_num_test_ids": setting.test_ids,
             "synth_config": f"noise_profile={setting.noise_profile}"}
    # val and test captions carry no planted noise; val has its own identities, as many as test
    held_out = load_corpus("synth-pedes", split=setting.split, num_train_ids=setting.train_ids,
                           num_test_ids=setting.test_ids)
    benchmark = gallery_and_queries(held_out)
    rates = [setting.noise_rate] + ([0.0] if setting.clean_row else [])
    corpora = {rate: load_training_corpus(DataArguments(synth_noise_rate=rate, **sizes)) for rate in rates}
    rows: list[dict[str, Any]] = []
    warm = None
    with tempfile.TemporaryDirectory() as scratch:
        workdir = args.workdir or scratch
        towers = None
        if setting.warm_steps:
            towers, warm = warm_start(setting, workdir, args.workers, args.warm_cache)
            if args.warm_only:
                print(f"  warm start: {setting.warm_steps} steps, in {args.warm_cache}", flush=True)
                return {"setting": vars(setting), "warm_start": warm}
            noisy_corpus = corpora[setting.noise_rate]
            probe = shared_init("gadms", 0, setting.train_ids, towers, setting.gass_layers, setting.preset)
            processor = build_processor(ModelArguments(), probe.config)
            metrics = evaluate_retrieval(probe, processor, *benchmark, progress=False)
            warm.update({name: float(metrics[name]) for name in ("R1", "R5", "R10", "mAP", "mINP")})
            warm["separation"] = token_separation(probe, processor, noisy_corpus, setting.auroc_captions)
            print(f"  warm start: {setting.warm_steps} steps, R1={warm['R1']:.2f} mAP={warm['mAP']:.2f} "
                  f"AUROC={warm['separation']['auroc']:.3f} occlusion AUROC="
                  f"{warm['separation']['occlusion_auroc']:.3f} ("
                  + (f"read from {warm['cached']}" if "cached" in warm else f"{warm['seconds']:.0f} s") + ")",
                  flush=True)
        for rate in rates:
            corpus = corpora[rate]
            oracles = {}
            if rate > 0:
                for colours_only in {COLOURS in name for name in noisy_recipes(setting) if base_recipe(name) == ORACLE}:
                    oracles[colours_only] = oracle_scores(corpus, build_clip_tokenizer(), colours_only)
            for seed in setting.seeds:
                for recipe in noisy_recipes(setting) if rate > 0 else clean_recipes(setting):
                    row = train_and_evaluate(recipe, seed, rate, setting, corpus, benchmark, towers, workdir,
                                             args.workers, oracles)
                    rows.append(row)
                    print(f"  noise={rate:g} seed={seed} {recipe:19s} R1={row['R1']:.2f} mAP={row['mAP']:.2f} "
                          f"mINP={row['mINP']:.2f}" + (f" AUROC={row['auroc']:.3f}" if "auroc" in row else "")
                          + (f" colour AUROC={row['colour_auroc']:.3f}" if row.get("colour_auroc") is not None else "")
                          + f" ({row['seconds']:.0f} s)", flush=True)
    for seed in unshared_starts(rows):
        raise RuntimeError(f"seed {seed}: recipes started from different weights")
    result = {"setting": vars(setting), "warm_start": warm, "runs": rows, "wall_seconds": time.time() - start,
              "torch_threads": args.threads}
    result.update(study_summary(rows, setting.noise_rate, setting.clean_row, warm))
    return report(result, args.output, args.plot)


def report(result: dict[str, Any], output: str | None, plot: str | None) -> dict[str, Any]:
    """Print the table and the targets; write the JSON and the picture where asked."""
    setting = result["setting"]
    print(f"\nSynthPEDES ({setting['noise_profile']} noise), {setting['train_ids']} train / {setting['test_ids']} "
          f"{setting['split']} identities, {setting['steps']} steps x batch {setting['batch_size']}, "
          f"{len(setting['seeds'])} seed(s), mean ± std ({result['wall_seconds']:.0f} s of runs):")
    print(result["table"])
    for name, target in result["targets"].items():
        print(f"  {name}: {target['value']:.3f} (target {target['target']}): {'met' if target['met'] else 'MISSED'}")
    reasons = measured_reasons(result["summary"], result["targets"], setting["noise_rate"])
    print("".join(f"  why, measured: {line}\n" for line in reasons), end="")
    if output:
        with open(output, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)
    if plot:
        plot_quality_study(result, plot)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
