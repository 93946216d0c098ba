"""Smoke test of scripts/bench_quality.py: a tiny end-to-end run, real SynthPEDES, real trainer and model."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gadms_hf.data.synth import COLOUR_WORDS, colour_noise_spans
from gadms_hf.evaluation.plots import quality_study_scorers
from gadms_hf.evaluation.quality_study import aggregate, format_table
from gadms_hf.evaluation.token_separation import auroc, spearman

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_quality.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_quality"] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def test_auroc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    positive, negative = rng.integers(0, 5, 40).astype(float), rng.integers(0, 5, 30).astype(float)
    pairs = (positive[:, None] > negative[None, :]).mean() + 0.5 * (positive[:, None] == negative[None, :]).mean()
    assert auroc(positive, negative) == pytest.approx(pairs)
    assert auroc([2.0, 3.0], [0.0, 1.0]) == 1.0
    assert auroc([0.0], [1.0]) == 0.0
    with pytest.raises(ValueError, match="both classes"):
        auroc([], [1.0])


def test_spearman_against_definition():
    assert spearman([1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 35.0, 90.0]) == pytest.approx(1.0)
    assert spearman([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) == 0.0
    x = np.array([0.0, 0.0, 1.0, 2.0, 2.0, 5.0])  # ties get average ranks: 1.5 1.5 3 4.5 4.5 6
    y = np.array([1.0, 3.0, 2.0, 5.0, 4.0, 6.0])
    ranks = np.array([1.5, 1.5, 3.0, 4.5, 4.5, 6.0])
    assert spearman(x, y) == pytest.approx(np.corrcoef(ranks, np.argsort(np.argsort(y)) + 1.0)[0, 1])


def test_oracle_scores_are_zero_exactly_on_planted_noise(bench):
    from gadms_hf.data.corpus import load_corpus
    from gadms_hf.tokenizer import build_clip_tokenizer

    tokenizer = build_clip_tokenizer()
    corpus = load_corpus("synth-pedes", split="train", num_train_ids=6, num_test_ids=2, noise_rate=1.0)
    caption_ids, rows = bench.oracle_scores(corpus, tokenizer)
    assert rows.shape == (len(corpus), 77) and list(caption_ids) == corpus["caption_id"]
    for row, caption, spans in zip(rows, corpus["caption"], corpus["noise_spans"]):
        ids = tokenizer(caption, padding="max_length", max_length=77, truncation=True)["input_ids"]
        zeroed = [token for token, score in zip(ids, row.tolist()) if score == 0.0]
        assert tokenizer.decode(zeroed).split() == " ".join(caption[a:b] for a, b in spans).lower().split()
        assert set(row.tolist()) <= {0.0, 1.0}
    # The colour oracle zeroes the planted wrong colour words and nothing else (a subset of the full oracle's).
    corpus = load_corpus("synth-pedes", split="train", num_train_ids=6, num_test_ids=2, noise_rate=1.0,
                         noise_profile="confusable")
    _, full = bench.oracle_scores(corpus, tokenizer)
    _, colours = bench.oracle_scores(corpus, tokenizer, colours_only=True)
    assert torch.all(colours >= full) and (colours == 0).sum() < (full == 0).sum()
    wrong = 0
    for row, caption, spans in zip(colours, corpus["caption"], corpus["noise_spans"]):
        ids = tokenizer(caption, padding="max_length", max_length=77, truncation=True)["input_ids"]
        zeroed = tokenizer.decode([token for token, score in zip(ids, row.tolist()) if score == 0.0]).split()
        assert zeroed == [caption[a:b].lower() for a, b in colour_noise_spans(caption, spans)]
        assert all(word in COLOUR_WORDS for word in zeroed)
        wrong += len(zeroed)
    assert wrong > 0


def test_tiny_run_writes_every_recipe(bench, tmp_path):
    output = tmp_path / "quality.json"
    bench.main(["--train-ids", "16", "--test-ids", "6", "--steps", "4", "--seeds", "1", "--batch-size", "8",
                "--warm-steps", "3", "--warm-ids", "8", "--auroc-captions", "16", "--threads", "1",
                "--noise-rate", "0.5", "--noise-profile", "default",
                "--workdir", str(tmp_path), "--output", str(output)])
    result = json.loads(output.read_text())
    noisy, clean = result["summary"]["noisy"], result["summary"]["clean"]
    assert set(noisy) == {"clip", "irra", "gadms", "gadms-oracle"} and set(clean) == {"irra", "gadms"}
    for block in (noisy, clean):
        for stats in block.values():
            for metric in ("R1", "mAP", "mINP"):
                assert math.isfinite(stats[metric]["mean"]) and 0.0 <= stats[metric]["mean"] <= 100.0
    for key in ("auroc", "auroc_all_words", "occlusion_auroc"):
        assert 0.0 <= noisy["gadms"][key]["mean"] <= 1.0
    gass = next(run["gass"] for run in result["runs"] if "gass" in run)
    assert -1.0 <= gass["gass_occlusion_spearman"] <= 1.0
    assert gass["noise_tokens"] > 0 and gass["attribute_tokens"] > 0 and gass["other_tokens"] > 0
    # The colour-only AUROCs exist exactly when both sides (true and wrong colour words) were scored.
    both_sides = gass["colour_tokens"] > 0 and gass["wrong_colour_tokens"] > 0
    for key in ("colour_auroc", "colour_occlusion_auroc"):
        assert (gass[key] is not None) == both_sides and (gass[key] is None or 0.0 <= gass[key] <= 1.0)
    # One initialisation (the warm start's towers), shared by every recipe and noise rate ...
    assert len({run["init_fingerprint"] for run in result["runs"]}) == 1
    # ... which the warm start trained.
    # The oracle's bank still holds the planted truth after training (GASS never overwrote it), while
    # GA-DMS's own bank was rewritten by GASS.
    from gadms_hf.data.corpus import load_corpus
    from gadms_hf.data.score_bank import TokenScoreBank
    from gadms_hf.tokenizer import build_clip_tokenizer

    corpus = load_corpus("synth-pedes", split="train", num_train_ids=16, num_test_ids=6, noise_rate=0.5)
    caption_ids, truth = bench.oracle_scores(corpus, build_clip_tokenizer())
    oracle_bank = TokenScoreBank.open(tmp_path / "gadms-oracle-noise0.5-seed0" / "_score_bank", readonly=True)
    assert np.array_equal(oracle_bank.read(caption_ids).float().numpy(), truth.numpy())
    gadms_bank = TokenScoreBank.open(tmp_path / "gadms-noise0.5-seed0" / "_score_bank", readonly=True)
    assert not np.array_equal(gadms_bank.read(caption_ids).float().numpy(), truth.numpy())
    warm = result["warm_start"]
    assert warm["steps"] == 3 and warm["log_history"] and 0.0 <= warm["separation"]["auroc"] <= 1.0
    assert "warm start" in result["table"]
    assert set(result["targets"]) == {"r1_gain_over_irra", "gass_auroc", "noise_cost_irra", "clean_r1_loss"}
    cost = result["targets"]["noise_cost_irra"]
    assert cost["value"] == clean["irra"]["R1"]["mean"] - noisy["irra"]["R1"]["mean"]


def test_confusable_profile_and_each_recipes_contrastive_term(bench, tmp_path, capsys):
    """The new noise profile runs end to end; the warm start trains GA-DMS with InfoNCE (make demo's objective)
    and the compared recipes fine-tune with the paper's terms: InfoNCE for CLIP, SDM for IRRA and GA-DMS."""
    output = tmp_path / "quality.json"
    bench.main(["--train-ids", "16", "--test-ids", "6", "--steps", "2", "--seeds", "1", "--batch-size", "8",
                "--warm-steps", "2", "--warm-ids", "8", "--auroc-captions", "16", "--threads", "1",
                "--noise-profile", "confusable", "--no-oracle", "--no-clean-row",
                "--workdir", str(tmp_path), "--output", str(output)])
    assert "SynthPEDES (confusable noise)" in capsys.readouterr().out
    result = json.loads(output.read_text())
    assert result["setting"]["noise_profile"] == "confusable" and result["summary"]["clean"] is None
    assert set(result["summary"]["noisy"]) == {"clip", "irra", "gadms"}
    warm_log = result["warm_start"]["log_history"]
    assert warm_log and all({"infonce_loss", "mim_loss"} <= set(entry) for entry in warm_log)
    for run in result["runs"]:
        term = "infonce_loss" if run["recipe"] == "clip" else "sdm_loss"
        assert run["log_history"] and all(term in entry for entry in run["log_history"]), run["recipe"]
    gass = next(run["gass"] for run in result["runs"] if "gass" in run)
    assert gass["noise_tokens"] > 0 and gass["attribute_tokens"] > 0


def test_strong_suppression_rows_on_val_with_plot(bench, tmp_path, capsys):
    """Our option adds GA-DMS and oracle rows whose alignment copy uses the given noise_max_prob (the others
    keep the paper's 0.2); `--split val` measures on the val split; `--plot` writes the study's picture."""
    output, picture = tmp_path / "quality.json", tmp_path / "quality.png"
    bench.main(["--train-ids", "16", "--test-ids", "6", "--steps", "2", "--seeds", "1", "--batch-size", "8",
                "--warm-steps", "2", "--warm-ids", "8", "--auroc-captions", "16", "--threads", "1",
                "--no-clean-row", "--strong-noise-prob", "1.0", "--split", "val", "--colour-oracle",
                "--workdir", str(tmp_path), "--output", str(output), "--plot", str(picture)])
    result = json.loads(output.read_text())
    assert list(result["summary"]["noisy"]) == ["clip", "irra", "gadms", "gadms-oracle", "gadms-strong",
                                                "gadms-oracle-strong", "gadms-oracle-colours",
                                                "gadms-oracle-colours-strong"]
    probs = {run["recipe"]: run["noise_max_prob"] for run in result["runs"]}
    assert probs == {"clip": 0.2, "irra": 0.2, "gadms": 0.2, "gadms-oracle": 0.2, "gadms-strong": 1.0,
                     "gadms-oracle-strong": 1.0, "gadms-oracle-colours": 0.2, "gadms-oracle-colours-strong": 1.0}
    # the colour oracle's bank holds the colour truth after training (GASS never overwrote it)
    from gadms_hf.data.corpus import load_corpus
    from gadms_hf.data.score_bank import TokenScoreBank
    from gadms_hf.tokenizer import build_clip_tokenizer

    corpus = load_corpus("synth-pedes", split="train", num_train_ids=16, num_test_ids=6, noise_rate=1.0,
                         noise_profile="confusable")
    caption_ids, truth = bench.oracle_scores(corpus, build_clip_tokenizer(), colours_only=True)
    bank = TokenScoreBank.open(tmp_path / "gadms-oracle-colours-noise1.0-seed0" / "_score_bank", readonly=True)
    assert np.array_equal(bank.read(caption_ids).float().numpy(), truth.numpy())
    assert result["setting"]["split"] == "val" and "16 train / 6 val identities" in capsys.readouterr().out
    assert "auroc" in result["summary"]["noisy"]["gadms-strong"]
    from PIL import Image

    with Image.open(picture) as image:
        assert image.format == "PNG"
    assert quality_study_scorers(result["runs"]) == [("gadms", "GASS")]  # -strong rows share GASS: one panel
    with pytest.raises(ValueError, match="--strong-noise-prob=1.5"):
        bench.make_setting(bench.parse_args(["--strong-noise-prob", "1.5"]))
    with pytest.raises(ValueError, match="give --strong-noise-prob too"):
        bench.make_setting(bench.parse_args(["--recipes", "irra,gadms-strong"]))
    with pytest.raises(ValueError, match="subset of"):
        bench.make_setting(bench.parse_args(["--recipes", "irra,sdm"]))
    assert bench.noisy_recipes(bench.make_setting(bench.parse_args(
        ["--recipes", "gadms-oracle-strong,irra", "--strong-noise-prob", "1"]))) == ("irra", "gadms-oracle-strong")
    assert bench.noisy_recipes(bench.make_setting(bench.parse_args(
        ["--colour-oracle", "--strong-noise-prob", "1", "--no-oracle"])))[-2:] == (
        "gadms-oracle-colours", "gadms-oracle-colours-strong")
    with pytest.raises(ValueError, match="give --colour-oracle too"):
        bench.make_setting(bench.parse_args(["--recipes", "irra,gadms-oracle-colours"]))


def test_warm_cache_our_token_score_rows_and_merge(bench, tmp_path, capsys):
    """`--warm-cache` trains the warm start once and reads it back (same towers, no half-written entry);
    `--taylor` adds GA-DMS with our token score, noisy and clean, with its own target rows; `--merge` makes one
    study of recipe subsets run apart, and refuses files that do not belong together."""
    cache, outputs = tmp_path / "cache", [tmp_path / "first.json", tmp_path / "second.json"]
    common = ["--train-ids", "16", "--test-ids", "6", "--steps", "2", "--seeds", "1", "--batch-size", "8",
              "--warm-steps", "2", "--warm-ids", "8", "--auroc-captions", "16", "--threads", "1", "--no-oracle",
              "--warm-cache", str(cache), "--workdir", str(tmp_path)]
    argv = [*common, "--taylor", "--recipes", "irra,gadms-taylor"]
    first = bench.main([*argv, "--output", str(outputs[0])])
    assert "(read from " not in capsys.readouterr().out
    assert sorted(path.suffix for path in cache.iterdir()) == [".json", ".safetensors"]
    second = bench.main([*common, "--recipes", "clip", "--no-clean-row", "--output", str(outputs[1])])
    assert "(read from " in capsys.readouterr().out and second["warm_start"]["cached"]
    assert second["runs"][0]["init_fingerprint"] == first["runs"][0]["init_fingerprint"]
    assert second["warm_start"]["R1"] == first["warm_start"]["R1"]
    assert list(first["summary"]["noisy"]) == ["irra", "gadms-taylor"]
    assert list(first["summary"]["clean"]) == ["irra", "gadms", "gadms-taylor"]
    scores = {(run["recipe"], run["noise_rate"]): run["token_score"] for run in first["runs"]}
    assert scores[("gadms-taylor", 1.0)] == scores[("gadms-taylor", 0.0)] == "occlusion_taylor"
    assert scores[("gadms", 0.0)] == "gass"
    assert 0.0 <= first["summary"]["noisy"]["gadms-taylor"]["auroc"]["mean"] <= 1.0
    assert {"r1_gain_over_irra:gadms-taylor", "score_auroc:gadms-taylor", "clean_r1_loss",
            "clean_r1_loss:gadms-taylor", "noise_cost_irra"} == set(first["targets"])
    setting = bench.make_setting(bench.parse_args(argv))
    longer = bench.make_setting(bench.parse_args([*argv, "--warm-steps", "3"]))
    assert bench.warm_cache_key(setting) != bench.warm_cache_key(longer)
    with pytest.raises(ValueError, match="give --taylor too"):
        bench.make_setting(bench.parse_args(["--recipes", "irra,gadms-taylor"]))

    merged_path = tmp_path / "merged.json"
    picture = tmp_path / "merged.png"
    merged = bench.main(["--merge", str(outputs[1]), str(outputs[0]), "--output", str(merged_path),
                         "--plot", str(picture)])
    from PIL import Image

    with Image.open(picture) as image:
        assert image.format == "PNG"
    # no noisy GA-DMS row here: the one histogram panel is our score's
    assert quality_study_scorers(merged["runs"]) == [("gadms-taylor", "ours, occlusion_taylor")]
    assert list(merged["summary"]["noisy"]) == ["clip", "irra", "gadms-taylor"]
    assert list(merged["summary"]["clean"]) == ["irra", "gadms", "gadms-taylor"]
    assert merged["summary"]["noisy"]["clip"] == second["summary"]["noisy"]["clip"]
    assert merged["summary"]["clean"] == first["summary"]["clean"]
    assert json.loads(merged_path.read_text())["table"] == merged["table"] and "| 1 | clip |" in merged["table"]
    with pytest.raises(ValueError, match="also in"):
        bench.main(["--merge", str(outputs[0]), str(outputs[0])])
    other = json.loads(outputs[1].read_text())
    other["setting"]["steps"] = 3
    outputs[1].write_text(json.dumps(other))
    with pytest.raises(ValueError, match="second.json: setting steps=3 differs"):
        bench.main(["--merge", str(outputs[0]), str(outputs[1])])
    other["setting"].update(steps=2, strong_noise_prob=0.5)
    outputs[1].write_text(json.dumps(other))
    first_file = json.loads(outputs[0].read_text())
    first_file["setting"]["strong_noise_prob"] = 1.0
    outputs[0].write_text(json.dumps(first_file))
    with pytest.raises(ValueError, match=r"different noise_max_prob values \[0.5, 1.0\]"):
        bench.main(["--merge", str(outputs[0]), str(outputs[1])])
    # the merged setting says what its rows hold together, not what the first file asked for
    assert merged["setting"]["taylor"] and merged["setting"]["clean_row"] and merged["setting"]["recipes"] is None
    with pytest.raises(ValueError, match="--warm-only needs --warm-cache"):
        bench.main(["--warm-only"])
    warm_only = bench.main([*common, "--warm-only"])
    assert warm_only["warm_start"]["cached"] and "runs" not in warm_only


def test_missing_colour_auroc_is_summarised_over_the_runs_that_have_one(bench):
    """A run whose scored captions held no wrong colour has colour AUROCs of None: the table says over how many
    runs the rest were averaged, and shows '-' where no run had one; a missing R1 is still an error."""
    def run(seed: int, colour: float | None) -> dict:
        return {"recipe": "gadms", "seed": seed, "noise_rate": 1.0, "R1": 10.0 + seed, "mAP": 20.0, "mINP": 5.0,
                "auroc": 0.6, "auroc_all_words": 0.55, "occlusion_auroc": 0.65, "colour_auroc": colour,
                "colour_occlusion_auroc": None}

    noisy = aggregate([run(0, 0.7), run(1, None), run(2, 0.8)], 1.0, ("gadms",))
    assert noisy["gadms"]["R1"]["n"] == 3 and noisy["gadms"]["colour_auroc"]["n"] == 2
    assert noisy["gadms"]["colour_auroc"]["mean"] == pytest.approx(0.75)
    assert "colour_occlusion_auroc" not in noisy["gadms"]
    line = format_table(noisy, None, 1.0, None).splitlines()[-1]
    assert line.endswith("| 0.750 ± 0.071 (n=2) | - |"), line
    warm = {"R1": 5.0, "mAP": 9.0, "mINP": 3.0,
            "separation": {"auroc": 0.5, "auroc_all_words": 0.5, "occlusion_auroc": 0.5, "colour_auroc": None,
                           "colour_occlusion_auroc": 0.6}}
    assert "| 0.500 | - | 0.600 |" in format_table(noisy, None, 1.0, warm).splitlines()[2]
    broken = run(0, 0.7)
    broken["auroc"] = None
    with pytest.raises(TypeError):
        aggregate([broken], 1.0, ("gadms",))


def test_paired_gains_subtract_irra_of_the_same_seed():
    """The per-seed difference cancels what a seed does to every recipe alike; rows without an IRRA twin of
    their seed are left out, and IRRA itself gets no row."""
    from gadms_hf.evaluation.quality_study import paired_gains, study_summary

    def run(recipe: str, seed: int, r1: float, rate: float = 1.0) -> dict:
        return {"recipe": recipe, "seed": seed, "noise_rate": rate, "R1": r1, "mAP": r1, "mINP": r1}

    rows = [run("irra", 0, 50.0), run("irra", 1, 60.0), run("clip", 0, 53.0), run("clip", 1, 61.0),
            run("clip", 2, 99.0), run("irra", 0, 70.0, 0.0), run("gadms", 0, 69.0, 0.0)]
    gains = paired_gains(rows, 1.0, ("clip", "irra"))
    assert list(gains) == ["clip"] and gains["clip"]["per_seed"] == [3.0, 1.0]
    assert gains["clip"]["mean"] == 2.0 and gains["clip"]["std"] == pytest.approx(2 ** 0.5)
    summary = study_summary(rows, 1.0, True, None)
    assert summary["summary"]["paired_gain_over_irra"]["0.0"]["gadms"]["per_seed"] == [-1.0]
    assert "| 1 | clip | +3.00, +1.00 | +2.00 ± 1.41 |" in summary["table"]
    assert "| 0 | gadms | -1.00 | -1.00 ± 0.00 |" in summary["table"]


def test_missed_targets_come_with_the_reason_the_rows_measure():
    """The printout explains a missed gain from the oracle rows and a missed AUROC from the occlusion reference,
    with their numbers, and says nothing it did not measure."""
    from gadms_hf.evaluation.quality_study import measured_reasons

    def stat(mean: float) -> dict:
        return {"mean": mean, "std": 0.5, "n": 3}

    summary = {"noisy": {"irra": {"R1": stat(55.0)}, "gadms": {"R1": stat(54.5), "occlusion_auroc": stat(0.63)}},
               "paired_gain_over_irra": {"1.0": {"gadms-oracle-strong": stat(4.25),
                                                 "gadms-oracle-colours-strong": stat(-1.9)}}}
    missed = {"r1_gain_over_irra": {"met": False}, "gass_auroc": {"met": False}}
    lines = measured_reasons(summary, missed, 1.0)
    assert "gains +4.25 ± 0.50 R1" in lines[0] and "gains -1.90 ± 0.50: the noise that costs" in lines[1]
    assert "AUROC 0.630 only" in lines[2] and len(lines) == 3
    assert measured_reasons(summary, {"r1_gain_over_irra": {"met": True}, "gass_auroc": {"met": True}}, 1.0) == []
    del summary["paired_gain_over_irra"]  # the oracle rows were not run: no claim about them
    assert measured_reasons(summary, missed, 1.0) == [lines[2]]
