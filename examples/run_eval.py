#!/usr/bin/env python
"""Text-to-image retrieval evaluation of a GA-DMS model on the benchmarks.

    python examples/run_eval.py --model_name_or_path outputs/pretrain-synth --benchmark synth-pedes \\
        --plots docs
    python examples/run_eval.py --model_name_or_path user/gadms --benchmark all --data_dir /data/benchmarks

Prints R1/R5/R10/mAP/mINP per benchmark (the paper's order) and writes eval_results.json and
eval_results.md. A benchmark whose files are missing is reported (which files) and skipped; when
nothing could be evaluated the script fails (exit status 1).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field

import torch
from transformers import AutoModel, AutoProcessor, HfArgumentParser

import gadms_hf  # noqa: F401  (registers the Auto classes)
from gadms_hf.data.corpus import CORPORA, gallery_and_queries, load_corpus
from gadms_hf.data.synth import token_noise_flags
from gadms_hf.evaluation.benchmarks import BENCHMARK_FOLDERS, benchmark_dir, format_metrics_table
from gadms_hf.evaluation.embedding import evaluate_retrieval
from gadms_hf.evaluation.plots import plot_gass_heatmap, plot_retrieval_grid
from gadms_hf.model_source import loading_model_from
from gadms_hf.training.script_args import exit_on_bad_input

logger = logging.getLogger("gadms_hf")
PAPER_ORDER = ("cuhk-pedes", "icfg-pedes", "rstpreid", "synth-pedes")


@dataclass
class EvalArguments:
    model_name_or_path: str = field(
        default="outputs/pretrain-synth", metadata={"help": "GA-DMS model directory or Hub id."}
    )
    benchmark: str = field(
        default="synth-pedes", metadata={"help": "cuhk-pedes, icfg-pedes, rstpreid, synth-pedes, or all."}
    )
    data_dir: str | None = field(
        default=None,
        metadata={"help": f"Benchmark folder, or a root holding {', '.join(BENCHMARK_FOLDERS.values())}/."},
    )
    split: str = field(default="test", metadata={"help": "Split to evaluate."})
    batch_size: int = field(default=64, metadata={"help": "Embedding batch size."})
    output_dir: str | None = field(default=None, metadata={"help": "Where results go (default: the model dir)."})
    plots: str | None = field(default=None, metadata={"help": "Write retrieval_grid.png (+ gass_heatmap.png)."})
    num_plot_queries: int = field(default=4, metadata={"help": "Queries / captions shown in each picture."})
    synth_num_test_ids: int | None = field(default=None, metadata={"help": "SynthPEDES test identities."})


def load_split(name: str, args: EvalArguments):
    """(gallery, queries), or a message saying which files are missing."""
    if name == "synth-pedes":
        kwargs = {} if args.synth_num_test_ids is None else {"num_test_ids": args.synth_num_test_ids}
        return gallery_and_queries(load_corpus(name, split=args.split, **kwargs)), None
    folder = benchmark_dir(name, args.data_dir)
    if folder is None:
        return None, f"{name}: no --data_dir given"
    missing = CORPORA[name].missing_files(folder)
    if missing:
        return None, f"{name}: missing {', '.join(str(p) for p in missing)}"
    return gallery_and_queries(load_corpus(name, data_dir=folder, split=args.split)), None


def gass_heatmap(model, processor, path: str, count: int) -> None:
    """GASS scores of noisy SynthPEDES training captions, planted noise outlined."""
    rows = load_corpus("synth-pedes", split="train").select(range(0, 40, 2))
    rows = [row for row in rows if row["noise_spans"]][:count]
    batch = processor(text=[r["caption"] for r in rows], images=[r["image"] for r in rows], return_tensors="pt")
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    image_embeds = model.get_image_features(pixel_values=batch["pixel_values"]).pooler_output
    ids = batch["input_ids"]
    eos = model.eos_positions(ids)
    scores = model.gass(model.text_model, model.text_projection, ids, batch["attention_mask"], image_embeds, eos)
    tokens, values, flags = [], [], []
    for i, row in enumerate(rows):
        end = int(eos[i])
        noise = token_noise_flags(processor.tokenizer, row["caption"], row["noise_spans"])
        tokens.append([t.replace("</w>", "") for t in processor.tokenizer.convert_ids_to_tokens(ids[i, 1:end])])
        values.append(scores[i, 1:end].tolist())
        flags.append(noise[1:end])
    plot_gass_heatmap([r["image"] for r in rows], tokens, values, path, noise_flags=flags)


def main() -> dict:
    (args,) = HfArgumentParser(EvalArguments).parse_args_into_dataclasses()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    names = PAPER_ORDER if args.benchmark == "all" else (args.benchmark,)
    with exit_on_bad_input("run_eval.py"):
        unknown = [n for n in names if n not in CORPORA]
        if unknown:
            raise ValueError(f"--benchmark {unknown[0]!r}: expected one of {', '.join(PAPER_ORDER)} or all")
        with loading_model_from(args.model_name_or_path):
            model = AutoModel.from_pretrained(args.model_name_or_path).to(device).eval()
            processor = AutoProcessor.from_pretrained(args.model_name_or_path)
        splits = {name: load_split(name, args) for name in names}

    results, skipped, grid_done = {}, [], False
    for name in names:
        split, problem = splits[name]
        if problem:
            logger.warning("skipping %s", problem)
            skipped.append(problem)
            continue
        gallery, queries = split
        metrics = evaluate_retrieval(model, processor, gallery, queries, batch_size=args.batch_size, device=device,
                                     return_topk=5 if args.plots and not grid_done else None)
        if "topk_indices" in metrics:
            os.makedirs(args.plots, exist_ok=True)
            # Queries spread over the split: its first captions all describe one person.
            picks = torch.linspace(0, len(queries) - 1, min(args.num_plot_queries, len(queries))).round().long()
            captions = list(queries.select(picks.tolist())["caption"])
            plot_retrieval_grid(captions, gallery, metrics.pop("topk_indices")[picks], metrics.pop("topk_correct")[picks],
                                os.path.join(args.plots, "retrieval_grid.png"))
            grid_done = True
        results[name] = {key: float(value) for key, value in metrics.items()}

    if args.plots and "synth-pedes" in results:
        gass_heatmap(model, processor, os.path.join(args.plots, "gass_heatmap.png"), args.num_plot_queries)

    for problem in skipped:
        print(f"skipped {problem}")
    if not results:
        print(f"run_eval.py: error: nothing evaluated ({'; '.join(skipped)})", file=sys.stderr)
        raise SystemExit(1)
    table = format_metrics_table(results)
    print(f"\nText-to-image retrieval of {args.model_name_or_path} ({args.split} split):\n{table}")
    output_dir = args.output_dir or (args.model_name_or_path if os.path.isdir(args.model_name_or_path) else ".")
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "eval_results.json"), "w", encoding="utf-8") as handle:
        json.dump({"model": args.model_name_or_path, "split": args.split, "results": results, "skipped": skipped},
                  handle, indent=2)
    with open(os.path.join(output_dir, "eval_results.md"), "w", encoding="utf-8") as handle:
        handle.write(table + "\n")
    return results


if __name__ == "__main__":
    with torch.no_grad():
        main()
