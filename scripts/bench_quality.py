#!/usr/bin/env python
"""Retrieval-quality benchmark: CLIP vs IRRA vs GA-DMS on SynthPEDES with planted caption noise.

    python scripts/bench_quality.py --quick --output quality.json   # ~8 min on 2 shared CPU cores
    python scripts/bench_quality.py --output quality.json           # full run: 500 ids, 400 steps, 3 seeds

Each seed gives one initialisation shared by the three recipes (same architecture, ID head included, so the
same random stream builds the same weights; the script checks it), the same data and the same step budget.
Recipes (`GADMSConfig.apply_recipe`): `clip` = InfoNCE; `irra` = SDM + random-15% MLM + ID; `gadms` = SDM on
GASS-noise-suppressed text + GASS-guided MIM + ID. The ID head has one class per training identity, as in
fine-tuning. Reported per recipe: mean and sample std over seeds of Rank-1 / mAP / mINP on the clean test
queries, and for GA-DMS the AUROC of its GASS token scores for telling the words of noisy training captions
that are real (positive) from the planted noise words (negative). A second block trains IRRA and GA-DMS at
noise rate 0, to see whether GASS costs anything when there is no noise.

Targets: GA-DMS R1 >= IRRA R1 + 2 at the noise rate; AUROC >= 0.80; at noise 0 GA-DMS R1 no lower than IRRA's
by more than the larger of their stds.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
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
from transformers import PrinterCallback, set_seed  # noqa: E402

from gadms_hf.data.corpus import gallery_and_queries, load_corpus  # noqa: E402
from gadms_hf.data.synthetic import token_noise_flags  # noqa: E402
from gadms_hf.evaluation.retrieval import evaluate_retrieval  # noqa: E402
from gadms_hf.modeling_gadms import GADMSModel  # noqa: E402
from gadms_hf.processing_gadms import GADMSProcessor  # noqa: E402
from gadms_hf.training.arguments import DataArguments, GADMSTrainingArguments, ModelArguments  # noqa: E402
from gadms_hf.training.pipeline import (  # noqa: E402
    build_model,
    build_processor,
    load_training_corpus,
    make_collator,
    make_score_bank,
    prepare_train_dataset,
)
from gadms_hf.training.trainer import GADMSTrainer  # noqa: E402

RECIPES = ("clip", "irra", "gadms")
CLEAN_RECIPES = ("irra", "gadms")
METRICS = ("R1", "mAP", "mINP")
TARGET_R1_GAIN = 2.0
TARGET_AUROC = 0.80


@dataclass
class Setting:
    """Corpus size and training budget of one benchmark run."""

    train_ids: int
    test_ids: int
    steps: int
    batch_size: int
    seeds: list[int]
    noise_rate: float
    learning_rate: float
    auroc_captions: int
    clean_row: bool


QUICK = dict(train_ids=150, test_ids=50, steps=150, seeds=1)
FULL = dict(train_ids=500, test_ids=100, steps=400, seeds=3)


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count 1/2).

    Mann-Whitney U from average ranks: AUROC = (sum of positive ranks - n_p (n_p + 1) / 2) / (n_p n_n).
    """
    positive, negative = np.asarray(positive, dtype=np.float64), np.asarray(negative, dtype=np.float64)
    if positive.size == 0 or negative.size == 0:
        raise ValueError(f"AUROC needs both classes, got {positive.size} positives and {negative.size} negatives")
    values = np.concatenate([positive, negative])
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(values.size, dtype=np.float64)
    sorted_values = values[order]
    start = 0
    while start < values.size:  # average rank (1-based) over each run of tied values
        end = start
        while end + 1 < values.size and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    n_pos, n_neg = positive.size, negative.size
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


@torch.no_grad()
def gass_noise_auroc(model: GADMSModel, processor: GADMSProcessor, corpus, max_captions: int,
                     batch_size: int = 64) -> dict[str, float]:
    """AUROC of GASS scores, real words (positive) vs planted noise words (negative), on noisy train captions.

    Only word positions 1..eos-1 count: the start/end tokens and padding carry no word.
    """
    noisy = [i for i, spans in enumerate(corpus["noise_spans"]) if spans][:max_captions]
    if not noisy:
        raise ValueError("the training corpus has no caption with planted noise (noise_rate=0?): no AUROC")
    model.eval()
    device = next(model.parameters()).device
    clean_scores, noise_scores = [], []
    for begin in range(0, len(noisy), batch_size):
        rows = corpus.select(noisy[begin:begin + batch_size])[:]
        batch = processor(text=list(rows["caption"]), images=list(rows["image"]), return_tensors="pt")
        batch = {key: value.to(device) for key, value in batch.items()}
        image_embeds = model.get_image_features(pixel_values=batch["pixel_values"]).pooler_output
        ids = batch["input_ids"]
        eos = model.eos_positions(ids)
        scores = model.gass(model.text_model, model.text_projection, ids, batch["attention_mask"], image_embeds,
                            eos).float().cpu().numpy()
        for i, (caption, spans) in enumerate(zip(rows["caption"], rows["noise_spans"])):
            flags = np.asarray(token_noise_flags(processor.tokenizer, caption, spans), dtype=bool)
            end = int(eos[i])
            clean_scores.append(scores[i, 1:end][~flags[1:end]])
            noise_scores.append(scores[i, 1:end][flags[1:end]])
    clean, noise = np.concatenate(clean_scores), np.concatenate(noise_scores)
    return {"auroc": auroc(clean, noise), "clean_tokens": int(clean.size), "noise_tokens": int(noise.size),
            "captions": len(noisy), "mean_clean_score": float(clean.mean()), "mean_noise_score": float(noise.mean())}


def init_fingerprint(model: GADMSModel) -> float:
    """A number that changes with any weight of the two towers (to check the shared initialisation)."""
    total = 0.0
    for name, param in model.named_parameters():
        if name.startswith(("text_model", "vision_model", "text_projection", "visual_projection")):
            total += float(param.detach().double().abs().sum())
    return total


def shared_init(recipe: str, seed: int, num_identities: int) -> GADMSModel:
    """The recipe's model with the seed's GA-DMS initialisation copied in.

    The CLIP recipe has no MIM head, so building it straight from the seed would draw the projections from
    a shifted random stream; copying makes every shared weight identical across recipes.
    """
    set_seed(seed)
    reference = build_model(ModelArguments(preset="tiny", recipe="gadms"), num_identities=num_identities)
    if recipe == "gadms":
        return reference
    model = build_model(ModelArguments(preset="tiny", recipe=recipe), num_identities=num_identities)
    missing = model.load_state_dict(reference.state_dict(), strict=False).missing_keys
    if missing:
        raise RuntimeError(f"recipe {recipe!r} has weights the GA-DMS model lacks: {missing}")
    return model


def train_and_evaluate(recipe: str, seed: int, noise_rate: float, setting: Setting, corpus, benchmark,
                       workdir: str, threads_workers: int) -> dict[str, Any]:
    """Train one recipe from the seed's initialisation, then evaluate retrieval (and GASS AUROC for GA-DMS)."""
    start = time.time()
    model = shared_init(recipe, seed, setting.train_ids)
    fingerprint = init_fingerprint(model)
    output_dir = os.path.join(workdir, f"{recipe}-noise{noise_rate}-seed{seed}")
    args = GADMSTrainingArguments(
        output_dir=output_dir, max_steps=setting.steps, per_device_train_batch_size=setting.batch_size,
        learning_rate=setting.learning_rate, weight_decay=4e-5, warmup_steps=0.1,
        logging_steps=max(1, setting.steps // 5),
        save_strategy="no", report_to="none", dataloader_num_workers=threads_workers, seed=seed,
        disable_tqdm=True, log_level="warning",
    )
    processor = build_processor(ModelArguments(preset="tiny"), model.config)
    bank = make_score_bank(model, int(max(corpus["caption_id"])) + 1, args)
    train_dataset, augmentation = prepare_train_dataset(corpus, model.config, seed)
    trainer = GADMSTrainer(
        model=model, args=args, train_dataset=train_dataset,
        data_collator=make_collator(processor, model, bank, seed), processing_class=processor,
        score_bank=bank, epoch_listeners=[augmentation],
    )
    trainer.remove_callback(PrinterCallback)  # one summary line per run instead of the log dicts
    train_result = trainer.train()
    model = trainer.model.eval()
    gallery, queries = benchmark
    metrics = evaluate_retrieval(model, processor, gallery, queries, progress=False)
    row: dict[str, Any] = {
        "recipe": recipe, "seed": seed, "noise_rate": noise_rate, "init_fingerprint": fingerprint,
        "train_loss": float(train_result.metrics.get("train_loss", math.nan)),
        # loss components every steps/5 steps: shows whether a recipe was still learning when the budget ran out
        "log_history": [entry for entry in trainer.state.log_history if "loss" in entry],
        **{name: float(metrics[name]) for name in ("R1", "R5", "R10", "mAP", "mINP")},
    }
    if recipe == "gadms" and noise_rate > 0:
        row["gass"] = gass_noise_auroc(model, processor, corpus, setting.auroc_captions)
        row["auroc"] = row["gass"]["auroc"]
    row["seconds"] = time.time() - start
    return row


def summarise(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def aggregate(rows: list[dict[str, Any]], noise_rate: float, recipes: tuple[str, ...]) -> dict[str, dict]:
    """recipe -> metric -> {mean, std, min, max, n} over seeds."""
    out = {}
    for recipe in recipes:
        mine = [r for r in rows if r["recipe"] == recipe and r["noise_rate"] == noise_rate]
        keys = METRICS + (("auroc",) if recipe == "gadms" and noise_rate > 0 else ())
        out[recipe] = {key: summarise([r[key] for r in mine]) for key in keys}
    return out


def check_targets(noisy: dict[str, dict], clean: dict[str, dict] | None) -> dict[str, dict[str, Any]]:
    gain = noisy["gadms"]["R1"]["mean"] - noisy["irra"]["R1"]["mean"]
    targets = {
        "r1_gain_over_irra": {"value": gain, "target": f">= {TARGET_R1_GAIN}", "met": gain >= TARGET_R1_GAIN},
        "gass_auroc": {"value": noisy["gadms"]["auroc"]["mean"], "target": f">= {TARGET_AUROC}",
                       "met": noisy["gadms"]["auroc"]["mean"] >= TARGET_AUROC},
    }
    if clean is not None:
        loss = clean["irra"]["R1"]["mean"] - clean["gadms"]["R1"]["mean"]
        spread = max(clean["irra"]["R1"]["std"], clean["gadms"]["R1"]["std"])
        targets["clean_r1_loss"] = {"value": loss, "target": f"<= spread ({spread:.2f})", "met": loss <= spread}
    return targets


def format_table(noisy: dict[str, dict], clean: dict[str, dict] | None, noise_rate: float) -> str:
    def cell(stats: dict[str, float], digits: int = 2) -> str:
        return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"

    lines = ["| noise | recipe | R1 | mAP | mINP | GASS AUROC |", "|---:|---|---:|---:|---:|---:|"]
    for block, rate in ((noisy, noise_rate), (clean, 0.0)):
        for recipe, stats in (block or {}).items():
            auc = cell(stats["auroc"], 3) if "auroc" in stats else "-"
            lines.append(f"| {rate:g} | {recipe} | " + " | ".join(cell(stats[m]) for m in METRICS) + f" | {auc} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"Small corpus and budget: {QUICK}.")
    parser.add_argument("--seeds", type=int, default=None, help="Number of seeds (default 3; --quick 1).")
    parser.add_argument("--train-ids", type=int, default=None, help="SynthPEDES training identities.")
    parser.add_argument("--test-ids", type=int, default=None, help="SynthPEDES test identities.")
    parser.add_argument("--steps", type=int, default=None, help="Optimiser steps per run (same for every recipe).")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--noise-rate", type=float, default=0.5, help="Share of train captions with planted noise.")
    parser.add_argument("--auroc-captions", type=int, default=256, help="Noisy train captions scored for AUROC.")
    parser.add_argument("--no-clean-row", action="store_true", help="Skip the IRRA vs GA-DMS runs at noise 0.")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: on a shared 2-core machine more threads wait on each other).")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (0 or 2).")
    parser.add_argument("--workdir", default=None, help="Where score banks go (default: a temporary folder).")
    parser.add_argument("--output", default=None, help="Write every run and the summary as JSON here.")
    return parser.parse_args(argv)


def make_setting(args: argparse.Namespace) -> Setting:
    base = QUICK if args.quick else FULL
    setting = Setting(
        train_ids=args.train_ids or base["train_ids"], test_ids=args.test_ids or base["test_ids"],
        steps=args.steps or base["steps"], batch_size=args.batch_size,
        seeds=list(range(args.seeds or base["seeds"])), noise_rate=args.noise_rate,
        learning_rate=args.learning_rate, auroc_captions=args.auroc_captions, clean_row=not args.no_clean_row,
    )
    if not 0.0 < setting.noise_rate <= 1.0:
        raise ValueError(f"--noise-rate={setting.noise_rate} must be in (0, 1] (noise 0 is the clean row)")
    for name in ("train_ids", "test_ids", "steps", "batch_size"):
        if getattr(setting, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')}={getattr(setting, name)} must be >= 1")
    return setting


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    setting = make_setting(args)
    torch.set_num_threads(args.threads)
    logging.getLogger("gadms_hf").setLevel(logging.WARNING)
    start = time.time()
    sizes = {"synth_num_train_ids": setting.train_ids, "synth_num_test_ids": setting.test_ids}
    test_split = load_corpus("synth-pedes", split="test", num_train_ids=setting.train_ids,
                             num_test_ids=setting.test_ids)
    benchmark = gallery_and_queries(test_split)  # test captions carry no planted noise
    rates = [setting.noise_rate] + ([0.0] if setting.clean_row else [])
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as scratch:
        workdir = args.workdir or scratch
        for rate in rates:
            corpus = load_training_corpus(DataArguments(synth_noise_rate=rate, **sizes), seed=0)
            for seed in setting.seeds:
                for recipe in RECIPES if rate > 0 else CLEAN_RECIPES:
                    row = train_and_evaluate(recipe, seed, rate, setting, corpus, benchmark, workdir, args.workers)
                    rows.append(row)
                    print(f"  noise={rate:g} seed={seed} {recipe:5s} R1={row['R1']:.2f} mAP={row['mAP']:.2f} "
                          f"mINP={row['mINP']:.2f}" + (f" AUROC={row['auroc']:.3f}" if "auroc" in row else "")
                          + f" ({row['seconds']:.0f} s)", flush=True)
    for seed in setting.seeds:
        prints = {r["init_fingerprint"] for r in rows if r["seed"] == seed}
        if len(prints) != 1:
            raise RuntimeError(f"seed {seed}: recipes started from different weights ({sorted(prints)})")
    noisy = aggregate(rows, setting.noise_rate, RECIPES)
    clean = aggregate(rows, 0.0, CLEAN_RECIPES) if setting.clean_row else None
    targets = check_targets(noisy, clean)
    wall = time.time() - start
    table = format_table(noisy, clean, setting.noise_rate)
    print(f"\nSynthPEDES, {setting.train_ids} train / {setting.test_ids} test identities, {setting.steps} steps x "
          f"batch {setting.batch_size}, {len(setting.seeds)} seed(s), mean ± std ({wall:.0f} s wall):")
    print(table)
    for name, target in targets.items():
        print(f"  {name}: {target['value']:.3f} (target {target['target']}): {'met' if target['met'] else 'MISSED'}")
    result = {"setting": vars(setting), "runs": rows, "summary": {"noisy": noisy, "clean": clean},
              "targets": targets, "table": table, "wall_seconds": wall, "torch_threads": args.threads}
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
