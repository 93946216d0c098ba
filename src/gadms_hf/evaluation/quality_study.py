"""A retrieval-quality study's results (`scripts/bench_quality.py`): recipe rows, targets, the table, merging.

The study trains one row per (recipe, seed, noise rate) from a shared start; what turns those rows into a
result lives here, apart from the training, so that studies split over processes or machines
(`--recipes` subsets, each with its own `--output`) merge into the one table a single run would print
(`merge_results`), and so that tests read the aggregation without training anything.
"""

from __future__ import annotations

import statistics
from typing import Any

RECIPES = ("clip", "irra", "gadms")
# GA-DMS with the score bank filled once with the planted truth (0 on noise tokens, 1 elsewhere) and never
# updated: the most the paper's dual masking can give when the token scores are perfect.
ORACLE = "gadms-oracle"
CLEAN_RECIPES = ("irra", "gadms")
# Our option (docs/method.md §5): the same recipe with a stronger suppression in the alignment copy. The paper's
# noise_max_prob 0.2 hides a token scored 0 only 0.2 / (1 + e^-2) = 17.6 % of the time.
STRONG = "-strong"
# The oracle bank with only the planted wrong colours at 0: the most a score that reads colours (the one kind of
# word a small CPU model grounds) could give.
COLOURS = "-colours"
# Our option (occlusion_taylor.py): the bank filled with the signed first-order masking effect, scaled per caption.
TAYLOR = "-taylor"
METRICS = ("R1", "mAP", "mINP")
TARGET_R1_GAIN = 2.0
TARGET_AUROC = 0.80
TARGET_NOISE_COST = 5.0
SEPARATION_KEYS = ("auroc", "auroc_all_words", "occlusion_auroc", "colour_auroc", "colour_occlusion_auroc")
OPTIONAL_KEYS = ("colour_auroc", "colour_occlusion_auroc")  # None when the scored captions hold no wrong colour

# Every row a study can hold, in table order.
NOISY_ORDER = RECIPES + (ORACLE, "gadms" + STRONG, ORACLE + STRONG, ORACLE + COLOURS, ORACLE + COLOURS + STRONG,
                         "gadms" + TAYLOR, "gadms" + TAYLOR + STRONG)
# Settings that must agree for studies to merge (everything that changes what a row means).
MERGE_KEYS = ("train_ids", "test_ids", "steps", "batch_size", "seeds", "noise_rate", "noise_profile",
              "learning_rate", "auroc_captions", "warm_ids", "warm_steps", "warm_learning_rate", "gass_layers",
              "preset", "split")


def base_recipe(recipe: str) -> str:
    """`gadms-taylor-strong` -> `gadms`, `gadms-oracle-colours` -> `gadms-oracle`: the recipe a row runs."""
    return recipe.removesuffix(STRONG).removesuffix(TAYLOR).removesuffix(COLOURS)


def summarise(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def aggregate(rows: list[dict[str, Any]], noise_rate: float, recipes: tuple[str, ...]) -> dict[str, dict]:
    """recipe -> metric -> {mean, std, min, max, n} over seeds."""
    out = {}
    for recipe in recipes:
        mine = [r for r in rows if r["recipe"] == recipe and r["noise_rate"] == noise_rate]
        keys = METRICS + (SEPARATION_KEYS if base_recipe(recipe) == "gadms" and noise_rate > 0 else ())
        # a colour AUROC is None where the scored captions held no wrong colour: summarise the runs that have one
        # (the cell then shows how many); every other key must be in every run
        values = {key: [r[key] for r in mine if key not in OPTIONAL_KEYS or r[key] is not None] for key in keys}
        out[recipe] = {key: summarise(found) for key, found in values.items() if found}
    return out


def check_targets(noisy: dict[str, dict], clean: dict[str, dict] | None) -> dict[str, dict[str, Any]]:
    """Each target whose recipes ran: value, target and whether it is met."""
    def r1(block: dict[str, dict] | None, recipe: str) -> float | None:
        return block[recipe]["R1"]["mean"] if block and recipe in block else None

    def row(value: float, target: float, text: str | None = None) -> dict[str, Any]:
        return {"value": value, "target": text or f">= {target}", "met": value >= target}

    targets = {}
    if r1(noisy, "gadms") is not None and r1(noisy, "irra") is not None:
        targets["r1_gain_over_irra"] = row(r1(noisy, "gadms") - r1(noisy, "irra"), TARGET_R1_GAIN)
    if "gadms" in noisy:
        targets["gass_auroc"] = row(noisy["gadms"]["auroc"]["mean"], TARGET_AUROC)
    ours = [name for name in noisy if name != "gadms" and base_recipe(name) == "gadms"]  # our options' rows
    for name in ours:
        if r1(noisy, "irra") is not None:
            targets[f"r1_gain_over_irra:{name}"] = row(r1(noisy, name) - r1(noisy, "irra"), TARGET_R1_GAIN)
        if "auroc" in noisy[name]:
            targets[f"score_auroc:{name}"] = row(noisy[name]["auroc"]["mean"], TARGET_AUROC)
    if r1(clean, "irra") is not None and r1(noisy, "irra") is not None:
        targets["noise_cost_irra"] = row(r1(clean, "irra") - r1(noisy, "irra"), TARGET_NOISE_COST)
    for name in ("gadms", *ours):
        if clean is None or name not in clean:
            continue
        loss = r1(clean, "irra") - r1(clean, name)
        spread = max(clean["irra"]["R1"]["std"], clean[name]["R1"]["std"])
        key = "clean_r1_loss" + ("" if name == "gadms" else f":{name}")
        targets[key] = {"value": loss, "target": f"<= spread ({spread:.2f})", "met": loss <= spread}
    return targets


def format_table(noisy: dict[str, dict], clean: dict[str, dict] | None, noise_rate: float,
                 warm: dict[str, Any] | None) -> str:
    """Markdown: one line per (noise rate, recipe), mean ± std over seeds; the warm start on top."""
    def cell(stats: dict[str, float], digits: int = 2) -> str:
        return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"

    # "score": the bank's token score, GASS for gadms and the oracle-free rows, ours for the -taylor rows
    lines = ["| noise | recipe | R1 | mAP | mINP | score AUROC attr/noise | score AUROC all words | occlusion AUROC "
             "| score AUROC colours | occlusion AUROC colours |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    if warm is not None:
        separation = warm["separation"]
        lines.append(f"| {noise_rate:g} | warm start (before fine-tuning) | {warm['R1']:.2f} | {warm['mAP']:.2f} | "
                     f"{warm['mINP']:.2f} | " + " | ".join("-" if separation.get(k) is None else f"{separation[k]:.3f}"
                                                           for k in SEPARATION_KEYS) + " |")
    for block, rate in ((noisy, noise_rate), (clean, 0.0)):
        for recipe, stats in (block or {}).items():
            runs = stats["R1"]["n"]
            aucs = [("-" if key not in stats else cell(stats[key], 3)
                     + (f" (n={stats[key]['n']})" if stats[key]["n"] < runs else "")) for key in SEPARATION_KEYS]
            lines.append(f"| {rate:g} | {recipe} | " + " | ".join(cell(stats[m]) for m in METRICS) + " | "
                         + " | ".join(aucs) + " |")
    return "\n".join(lines)


def study_summary(rows: list[dict[str, Any]], noise_rate: float, clean_row: bool,
                  warm: dict[str, Any] | None) -> dict[str, Any]:
    """Summary, targets and markdown table of a study's rows, recipes in `NOISY_ORDER`."""
    def present(rate: float, order: tuple[str, ...]) -> tuple[str, ...]:
        found = {row["recipe"] for row in rows if row["noise_rate"] == rate}
        return tuple(name for name in order if name in found)

    noisy_order = present(noise_rate, NOISY_ORDER)
    clean_order = present(0.0, CLEAN_RECIPES + NOISY_ORDER[len(RECIPES):]) if clean_row else ()
    noisy = aggregate(rows, noise_rate, noisy_order)
    clean = aggregate(rows, 0.0, clean_order) if clean_row else None
    paired = {noise_rate: paired_gains(rows, noise_rate, noisy_order), 0.0: paired_gains(rows, 0.0, clean_order)}
    table = format_table(noisy, clean, noise_rate, warm)
    lines = [f"| {rate:g} | {recipe} | " + ", ".join(f"{d:+.2f}" for d in gain["per_seed"])
             + f" | {gain['mean']:+.2f} ± {gain['std']:.2f} |"
             for rate, gains in paired.items() for recipe, gain in gains.items()]
    if lines:
        table += "\n\nR1 minus IRRA's R1 of the same seed (same start, heads and data order):\n\n" + "\n".join(
            ["| noise | recipe | per seed | mean ± std |", "|---:|---|---|---:|", *lines])
    return {"summary": {"noisy": noisy, "clean": clean, "paired_gain_over_irra": {str(k): v for k, v in paired.items()}},
            "targets": check_targets(noisy, clean), "table": table}


def paired_gains(rows: list[dict[str, Any]], noise_rate: float, recipes: tuple[str, ...]) -> dict[str, dict]:
    """recipe -> R1 minus IRRA's R1 of the same seed, per seed and summarised: every recipe of a seed shares
    the start, the heads and the data order, so the seed-to-seed spread (several R1 points here) cancels."""
    irra = {row["seed"]: row["R1"] for row in rows if row["recipe"] == "irra" and row["noise_rate"] == noise_rate}
    out = {}
    for recipe in recipes:
        mine = sorted((row["seed"], row["R1"]) for row in rows
                      if row["recipe"] == recipe and row["noise_rate"] == noise_rate and row["seed"] in irra)
        if recipe != "irra" and mine:
            gains = [r1 - irra[seed] for seed, r1 in mine]
            out[recipe] = {"per_seed": gains, **summarise(gains)}
    return out


def measured_reasons(summary: dict[str, Any], targets: dict[str, dict], noise_rate: float) -> list[str]:
    """Why missed targets were missed, read off this study's own rows (the oracle rows and the occlusion
    reference), so that the printout says it with numbers; nothing where the rows to say it were not run."""
    gains = summary.get("paired_gain_over_irra", {}).get(str(noise_rate), {})
    lines = []
    if any(key.startswith("r1_gain_over_irra") and not t["met"] for key, t in targets.items()):
        full, colours = gains.get(ORACLE + STRONG), gains.get(ORACLE + COLOURS + STRONG)
        if full is not None:
            lines.append(f"with the planted truth as scores ({ORACLE + STRONG}) the masking gains "
                         f"{full['mean']:+.2f} ± {full['std']:.2f} R1 over IRRA: the ceiling of any token score at this suppression")
        if colours is not None:
            lines.append(f"knowing only the wrong colours ({ORACLE + COLOURS + STRONG}) it gains "
                         f"{colours['mean']:+.2f} ± {colours['std']:.2f}"
                         + (": the noise that costs R1 is in words beyond colours, which a model that grounds "
                            "only colours cannot flag" if full is not None and colours["mean"] < TARGET_R1_GAIN
                            <= full["mean"] else ""))
    for name, stats in summary["noisy"].items():
        missed = targets.get("gass_auroc" if name == "gadms" else f"score_auroc:{name}", {"met": True})
        if not missed["met"] and stats["occlusion_auroc"]["mean"] < TARGET_AUROC:
            lines.append(f"{name}: the model's own occlusion drop separates attribute words from noise with "
                         f"AUROC {stats['occlusion_auroc']['mean']:.3f} only; no score read from it can reach "
                         f"{TARGET_AUROC}")
    return lines


def unshared_starts(rows: list[dict[str, Any]]) -> list[int]:
    """Seeds whose rows do not all start from the same towers (their `init_fingerprint`s differ)."""
    seeds = sorted({row["seed"] for row in rows})
    return [seed for seed in seeds if len({row["init_fingerprint"] for row in rows if row["seed"] == seed}) != 1]


def merge_results(results: list[dict[str, Any]], names: list[str] | None = None) -> dict[str, Any]:
    """One study from several `--output` JSONs of the same settings and warm start (e.g. recipe subsets run
    side by side): their runs together, summarised as one run of them all would be.

    Raises a ValueError naming the file and the setting that differs, or the row two files both hold.
    """
    names = names or [f"result {i}" for i in range(len(results))]
    if not results:
        raise ValueError("nothing to merge")
    first = results[0]
    for name, result in zip(names[1:], results[1:]):
        for key in MERGE_KEYS:
            if result["setting"][key] != first["setting"][key]:
                raise ValueError(f"{name}: setting {key}={result['setting'][key]!r} differs from "
                                 f"{names[0]}'s {first['setting'][key]!r}")
        warm, other = first.get("warm_start"), result.get("warm_start")
        if (warm is None) != (other is None) or (warm and (warm["R1"], warm["mAP"]) != (other["R1"], other["mAP"])):
            raise ValueError(f"{name}: its warm start differs from {names[0]}'s (not one shared start)")
    rows, seen = [], {}
    for name, result in zip(names, results):
        for row in result["runs"]:
            key = (row["recipe"], row["seed"], row["noise_rate"])
            if key in seen:
                raise ValueError(f"{name}: run {key} is also in {seen[key]}")
            seen[key] = name
            rows.append(row)
    for seed in unshared_starts(rows):
        raise ValueError(f"seed {seed}: the merged runs started from different weights")
    strong = {result["setting"].get("strong_noise_prob") for result in results} - {None}
    if len(strong) > 1:
        raise ValueError(f"the files' -strong rows use different noise_max_prob values {sorted(strong)}")
    # the row-selection fields become what the merged rows hold together
    setting = {**first["setting"], "strong_noise_prob": strong.pop() if strong else None, "recipes": None,
               **{key: any(r["setting"].get(key) for r in results)
                  for key in ("clean_row", "oracle", "taylor", "colour_oracle")}}
    merged = {"setting": setting, "warm_start": first.get("warm_start"), "runs": rows,
              "wall_seconds": sum(result["wall_seconds"] for result in results), "merged_from": names,
              "torch_threads": first.get("torch_threads")}
    return {**merged, **study_summary(rows, setting["noise_rate"], setting["clean_row"], merged["warm_start"])}


__all__ = [
    "CLEAN_RECIPES", "COLOURS", "METRICS", "NOISY_ORDER", "ORACLE", "RECIPES", "SEPARATION_KEYS", "STRONG", "TAYLOR",
    "aggregate", "base_recipe", "check_targets", "format_table", "measured_reasons", "merge_results", "paired_gains",
    "study_summary", "summarise", "unshared_starts",
]
