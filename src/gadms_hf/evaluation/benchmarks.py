"""The benchmarks a model is evaluated on: where their folders are, their test pairs, the results table.

These take plain arguments rather than a script's argument dataclasses, so evaluating a model
(`examples/run_eval.py`), the end of a training run and the model card all find benchmark data and
print their numbers the same way without depending on training.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import datasets

from ..data.corpus import gallery_and_queries, load_corpus

logger = logging.getLogger(__name__)

# The folder each benchmark usually comes in, so that one root can hold them all.
BENCHMARK_FOLDERS = {"cuhk-pedes": "CUHK-PEDES", "icfg-pedes": "ICFG-PEDES", "rstpreid": "RSTPReid"}

METRIC_COLUMNS = ("R1", "R5", "R10", "mAP", "mINP")


def benchmark_dir(name: str, root: str | None) -> str | None:
    """`root/<usual folder>` (CUHK-PEDES/, ICFG-PEDES/, RSTPReid/) when present, else `root` itself."""
    if root is None:
        return None
    nested = os.path.join(root, BENCHMARK_FOLDERS.get(name, ""))
    return nested if name in BENCHMARK_FOLDERS and os.path.isdir(nested) else root


def load_benchmarks(
    names: Sequence[str],
    data_dir: str | None,
    split: str,
    synth_overrides: Mapping[str, Any] | None = None,
) -> dict[str, tuple[datasets.Dataset, datasets.Dataset]]:
    """name -> (gallery, queries) of `split` for every benchmark in `names` whose data is present.

    `data_dir` is one benchmark's folder or a root holding the usual folders (`benchmark_dir`); a benchmark
    whose files are missing is logged and left out. SynthPEDES is generated, from `synth_overrides`
    (`SynthPedesConfig` fields), instead of read.
    """
    benchmarks = {}
    for name in names:
        synthetic = name == "synth-pedes"
        kwargs = dict(synth_overrides or {}) if synthetic else {}
        folder = None if synthetic else benchmark_dir(name, data_dir)
        try:
            dataset = load_corpus(name, data_dir=folder, split=split, **kwargs)
        except FileNotFoundError as error:
            logger.warning("skipping evaluation on %s: %s", name, error)
            continue
        benchmarks[name] = gallery_and_queries(dataset)
    return benchmarks


def format_metrics_table(results: Mapping[str, Mapping[str, float]]) -> str:
    """Markdown table of R1/R5/R10/mAP/mINP per benchmark."""
    lines = ["| benchmark | " + " | ".join(METRIC_COLUMNS) + " |", "|---|" + "---:|" * len(METRIC_COLUMNS)]
    for name, metrics in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{metrics[c]:.2f}" for c in METRIC_COLUMNS) + " |")
    return "\n".join(lines)


__all__ = ["BENCHMARK_FOLDERS", "METRIC_COLUMNS", "benchmark_dir", "load_benchmarks", "format_metrics_table"]
