"""Model selection on a validation split; the test split evaluated once, at the end.

Reported numbers in this field have been the best test epoch (test used as validation), which
overstates them. Here `RetrievalEvalCallback` selects on `--selection_split` ("val"): CUHK-PEDES
and RSTPReid have one; a corpus without it (ICFG-PEDES, WebPerson) holds identities out of its
training split, seeded, recorded in `<output_dir>/selection_split.json`, and dropped from training
when that corpus is also the one trained on. After training, each benchmark's test split is
evaluated once, on the model selected for it.
"""

from __future__ import annotations

import json
import logging
import os

import datasets
from transformers import AutoModel, Trainer

from ..data.corpus import corpus_splits, gallery_and_queries, load_corpus
from ..data.holdout import hold_out_identities
from ..evaluation.benchmarks import benchmark_dir
from ..evaluation.callback import RetrievalEvalCallback
from ..evaluation.embedding import evaluate_retrieval
from .arguments import DataArguments
from .components import synth_overrides

logger = logging.getLogger("gadms_hf")

SELECTION_RECORD = "selection_split.json"


def load_selection_benchmarks(data_args: DataArguments, train_corpus: datasets.Dataset | None, seed: int,
                              output_dir: str, write_record: bool = True
                              ) -> tuple[dict[str, tuple], object, dict[str, str]]:
    """name -> (gallery, queries) of the selection split of every evaluation benchmark; the training corpus,
    without the held-out identities when some were held out of it; name -> what the selection split is."""
    split, benchmarks, record, labels = data_args.selection_split, {}, {}, {}
    for name in data_args.eval_benchmarks:
        kwargs = synth_overrides(data_args) if name == "synth-pedes" else {}
        data_dir = None if name == "synth-pedes" else benchmark_dir(name, data_args.eval_data_dir)
        try:
            if split in corpus_splits(name):
                dataset = load_corpus(name, data_dir=data_dir, split=split, **kwargs)
                record[name] = {"split": split}
                labels[name] = split
            else:
                trained_on = name == data_args.dataset_name and train_corpus is not None
                if trained_on and not isinstance(train_corpus, datasets.Dataset):
                    raise ValueError(f"{name} has no {split!r} split and its identities cannot be held out of a "
                                     "stream: train without --streaming or select on another benchmark")
                source = train_corpus if trained_on else load_corpus(name, data_dir=data_dir, split="train", **kwargs)
                rest, dataset, held = hold_out_identities(source, data_args.holdout_fraction, seed)
                if trained_on:
                    train_corpus = rest
                record[name] = {"split": "train, identities held out", "seed": seed,
                                "fraction": data_args.holdout_fraction, "person_ids": held,
                                "trained_on_the_rest": trained_on}
                labels[name] = f"{split} (identities held out of train)"
                logger.warning("%s has no %r split: %d of %d training identities of %s held out for model "
                               "selection (seed %d%s; recorded in %s)", name, split, len(held),
                               len(held) + len(set(rest["person_id"])), name, seed,
                               "; removed from training" if trained_on else "", SELECTION_RECORD)
        except FileNotFoundError as error:
            logger.warning("no %s data to select on for %s: %s", split, name, error)
            continue
        benchmarks[name] = gallery_and_queries(dataset)
    if write_record and record:
        os.makedirs(output_dir, exist_ok=True)
        with open(os.path.join(output_dir, SELECTION_RECORD), "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=2)
    return benchmarks, train_corpus, labels


def evaluate_test_once(trainer: Trainer, processor, benchmarks: dict[str, tuple],
                       callback: RetrievalEvalCallback | None, batch_size: int
                       ) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """(test metrics, which model) per benchmark: the model selected for it when one was saved, else the
    final one. The selected model's record in best_<name>/ gains its test metrics."""
    results, evaluated = {}, {}
    device = next(trainer.model.parameters()).device
    for name, (gallery, queries) in benchmarks.items():
        model, which = trainer.model, "final model"
        if callback is not None and name in callback.best_dirs:
            model = AutoModel.from_pretrained(callback.best_dirs[name]).to(device).eval()
            which = (f"{callback.best_dirs[name]} (selected on {callback.split_of(name)} {callback.metric_for_best} "
                     f"at step {callback.best_steps[name]})")
        results[name] = evaluate_retrieval(model, processor, gallery, queries, batch_size=batch_size)
        evaluated[name] = which
        if model is not trainer.model:
            callback.record_test(name, results[name])
    return results, evaluated


__all__ = ["load_selection_benchmarks", "evaluate_test_once", "SELECTION_RECORD"]
