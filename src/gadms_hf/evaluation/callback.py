"""Retrieval benchmarks evaluated during `Trainer.train`, logged like any metric, best model kept per benchmark.

The Trainer's own `evaluate()` computes a loss over an eval dataset; retrieval needs the whole gallery
embedded first, so it runs here instead, on the main process, every `eval_steps` optimizer steps and
once more when training ends. The benchmarks given are a validation split: the best model is chosen
on them, so a score measured on them is no longer an unbiased estimate (selecting on test is how
reported numbers end up optimistic).

The best models are kept in `<output_dir>/_best_<name>/`: the leading underscore keeps them out of the
Trainer's Hub upload (it skips `_*`), which publishes one model, the final one, whose card says which step
it is and how it scored (`training/model_card.py` reads `history` and `best_steps`).
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from .embedding import evaluate_retrieval

logger = logging.getLogger(__name__)

_REQUIRED_COLUMNS = {"gallery": ("image", "person_id"), "queries": ("caption", "person_id")}


class RetrievalEvalCallback(TrainerCallback):
    """Evaluate text-to-image retrieval on named benchmarks while training.

    Logs `eval_<name>_R1`, `_R5`, `_R10`, `_mAP`, `_mINP` through `trainer.log` (so they reach
    `trainer.state.log_history` and every reporting integration), keeps every evaluation in
    `history` (step -> name -> metrics) and, when `metric_for_best` improves, saves model and
    processor to `<output_dir>/_best_<name>/` with a `retrieval_metrics.json` (a PEFT model is saved
    merged, so the folder loads as a plain model). Evaluate the test split once, after training, on
    that folder's model, and add its metrics with `record_test`.

    Usage::

        trainer = Trainer(model=model, args=args, ...)
        trainer.add_callback(RetrievalEvalCallback(trainer, {"cuhk": (gallery, queries)}, eval_steps=500))

    Args:
        trainer: the trainer whose model is evaluated and whose `log` receives the metrics.
        benchmarks: name -> (gallery Dataset with `image`, `person_id`; queries Dataset with
            `caption`, `person_id`). Names become metric keys and folder names.
        processor: a `GADMSProcessor`; defaults to `trainer.processing_class`.
        eval_steps: evaluate every this many optimizer steps; `None`: only when training ends.
        metric_for_best: which result decides the best model (`"R1"` by default).
        split: the split the benchmarks come from (one name, or one per benchmark), recorded with the
            best model; `"test"` is allowed but warned about (a model selected on test has no unbiased
            test score left).

    Only the main process evaluates (the others wait at their next synchronisation), so the model
    must not be sharded (no FSDP / DeepSpeed ZeRO-3). The best score so far lives in this object:
    after resuming from a checkpoint the first evaluation starts a new best.
    """

    def __init__(
        self,
        trainer: Trainer,
        benchmarks: Mapping[str, tuple[Dataset, Dataset]],
        processor: Any = None,
        eval_steps: int | None = None,
        *,
        batch_size: int = 64,
        ks: Sequence[int] = (1, 5, 10),
        metric_for_best: str = "R1",
        save_best: bool = True,
        progress: bool = False,
        split: str | Mapping[str, str] = "val",
    ):
        if not benchmarks:
            raise ValueError("benchmarks is empty: give at least one name -> (gallery, queries)")
        for name, pair in benchmarks.items():
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
                raise ValueError(
                    f"benchmark name {name!r} must be letters, digits, '_', '.' or '-' (it names a folder)"
                )
            if not (isinstance(pair, tuple) and len(pair) == 2):
                raise ValueError(f"benchmarks[{name!r}] must be a (gallery, queries) pair of Datasets")
            for role, dataset in zip(("gallery", "queries"), pair):
                missing = [column for column in _REQUIRED_COLUMNS[role] if column not in dataset.column_names]
                if missing:
                    raise ValueError(
                        f"benchmarks[{name!r}] {role} lacks column(s) {missing}; has {dataset.column_names}"
                    )
        if eval_steps is not None and eval_steps < 1:
            raise ValueError(f"eval_steps must be >= 1 or None, got {eval_steps}")
        reported = {f"R{k}" for k in ks} | {"mAP", "mINP"}
        if metric_for_best not in reported:
            raise ValueError(f"metric_for_best must be one of {sorted(reported)}, got {metric_for_best!r}")
        self.trainer = trainer
        self.benchmarks = dict(benchmarks)
        self.processor = processor if processor is not None else trainer.processing_class
        if self.processor is None:
            raise ValueError("no processor: pass one, or give the Trainer a processing_class")
        self.eval_steps = eval_steps
        self.batch_size = batch_size
        self.ks = tuple(ks)
        self.metric_for_best = metric_for_best
        self.save_best = save_best
        self.progress = progress
        self.split = split
        self.best: dict[str, float] = {}
        self.best_steps: dict[str, int] = {}
        self.best_dirs: dict[str, Path] = {}
        self.history: dict[int, dict[str, dict[str, float]]] = {}
        self._last_evaluated_step: int | None = None
        if "test" in ((split,) if isinstance(split, str) else split.values()):
            logger.warning(
                "RetrievalEvalCallback is selecting the best model on the TEST split: the score of the selected "
                "model on that split is then not a test result (it was used as validation). Select on a "
                "validation split (CUHK-PEDES and RSTPReid have 'val'; hold out training identities otherwise)."
            )

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if self.eval_steps is not None and state.global_step % self.eval_steps == 0:
            self._evaluate(args, state)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if self._last_evaluated_step != state.global_step:
            self._evaluate(args, state)

    def _evaluate(self, args: TrainingArguments, state: TrainerState) -> None:
        self._last_evaluated_step = state.global_step
        if not state.is_world_process_zero:
            return
        model = self.trainer.model
        logs: dict[str, float] = {}
        for name, (gallery, queries) in self.benchmarks.items():
            metrics = evaluate_retrieval(
                model, self.processor, gallery, queries, self.batch_size, ks=self.ks, progress=self.progress
            )
            logs.update({f"eval_{name}_{key}": value for key, value in metrics.items()})
            self.history.setdefault(state.global_step, {})[name] = metrics
            score = metrics[self.metric_for_best]
            if score > self.best.get(name, float("-inf")):
                self.best[name] = score
                self.best_steps[name] = state.global_step
                if self.save_best:
                    self.best_dirs[name] = Path(args.output_dir) / f"_best_{name}"
                    self._save(name, model, metrics, state.global_step)
        self.trainer.log(logs)

    def split_of(self, name: str) -> str:
        return self.split if isinstance(self.split, str) else self.split[name]

    def record_test(self, name: str, metrics: Mapping[str, float]) -> None:
        """Add the saved best model's test metrics (evaluated once, after training) to its record."""
        path = self.best_dirs[name] / "retrieval_metrics.json"
        record = json.loads(path.read_text())
        record["test"] = {key: float(value) for key, value in metrics.items()}
        path.write_text(json.dumps(record, indent=2) + "\n")

    def _save(self, name: str, model: Any, metrics: dict[str, float], step: int) -> None:
        directory = self.best_dirs[name]
        if hasattr(model, "merge_and_unload"):  # PEFT: a merged copy, the training model keeps its adapters
            model = copy.deepcopy(model).merge_and_unload()
        model.save_pretrained(directory)
        self.processor.save_pretrained(directory)
        record = {"step": step, "split": self.split_of(name), "metric_for_best": self.metric_for_best, **metrics}
        (directory / "retrieval_metrics.json").write_text(json.dumps(record, indent=2) + "\n")
        logger.info(
            "new best %s=%.2f at step %d, saved to %s",
            self.metric_for_best,
            metrics[self.metric_for_best],
            step,
            directory,
        )


__all__ = ["RetrievalEvalCallback"]
