"""A training run's parts, assembled from the argument dataclasses (`arguments.py`).

data (corpus -> transforms) -> model (config/recipe) -> processor -> score bank + collator: each built
here once, so `examples/run_pretrain.py`, `examples/run_finetune.py` and `scripts/bench_quality.py` put
a run together the same way before handing it to `GADMSTrainer` (`run.py` runs it).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import datasets
import torch
import transformers
from transformers import PreTrainedTokenizerBase

from ..configuration_gadms import GADMSConfig
from ..data.caption_length import count_cut_captions
from ..data.collator import GADMSCollator
from ..data.corpus import load_corpus
from ..data.score_bank import TokenScoreBank
from ..data.transforms import ERASE_PROB, ImageColumnTransform, apply_transform
from ..evaluation.benchmarks import load_benchmarks
from ..masking import MaskingParams
from ..model_dir import is_gadms_dir
from ..model_source import loading_model_from
from ..modeling_gadms import GADMSModel
from ..processing_gadms import TEXT_LENGTH, GADMSProcessor, make_image_processor
from ..tokenizer import build_clip_tokenizer
from .arguments import DataArguments, GADMSTrainingArguments, ModelArguments, parse_overrides

logger = logging.getLogger("gadms_hf")

Corpus = datasets.Dataset | datasets.IterableDataset

PRESETS = {"tiny": GADMSConfig.tiny, "small": GADMSConfig.small, "vit_b16": GADMSConfig.vit_b16}


def setup_logging(training_args: GADMSTrainingArguments) -> None:
    """This process's log level (`--log_level`, `--log_level_replica`) for gadms_hf, datasets and transformers."""
    level = training_args.get_process_log_level()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=level)
    logger.setLevel(level)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)


def build_model(model_args: ModelArguments, num_identities: int = 0) -> GADMSModel:
    """A GA-DMS checkpoint, a converted CLIP checkpoint, or a fresh preset; then the recipe and the
    attention kernel."""
    model = _build_model(model_args, num_identities)
    if model_args.attn_implementation is not None:
        model.set_attn_implementation(model_args.attn_implementation)
    return model


def _build_model(model_args: ModelArguments, num_identities: int) -> GADMSModel:
    overrides = parse_overrides(model_args.config_overrides)
    source = model_args.model_name_or_path
    if source is None:
        if model_args.preset not in PRESETS:
            raise ValueError(f"--preset={model_args.preset!r} must be one of {sorted(PRESETS)}")
        config = PRESETS[model_args.preset](num_identities=num_identities, **overrides)
        # Random towers keep the preset's contrastive term (small(): InfoNCE, which cannot collapse); the CLIP
        # recipe is InfoNCE whatever the preset, unless the overrides name a term.
        kept = None if model_args.recipe == "clip" else config.contrastive_loss
        config.apply_recipe(model_args.recipe, contrastive_loss=overrides.get("contrastive_loss") or kept)
        return GADMSModel(config)
    with loading_model_from(source):
        if is_gadms_dir(source) or not os.path.isdir(source) and _hub_is_gadms(source):
            return _load_gadms(source, overrides, num_identities, model_args.recipe)
        model = GADMSModel.from_clip(
            source, image_size=(model_args.image_height, model_args.image_width), num_identities=num_identities,
            **overrides,
        )
    model.config.apply_recipe(model_args.recipe, contrastive_loss=overrides.get("contrastive_loss"))
    if model.config.mim_loss_weight == 0:
        model.cross_modal = None  # the CLIP recipe has no MIM head
    return model


def _load_gadms(source: str, overrides: dict, num_identities: int, recipe: str) -> GADMSModel:
    """A GA-DMS checkpoint with this run's ID head: a new number of identities gets a fresh head (the
    identities of another run or dataset mean nothing here); every other weight must load."""
    config = GADMSConfig.from_pretrained(source)
    for key, value in overrides.items():
        setattr(config, key, value)
    saved_identities = config.num_identities
    config.num_identities = num_identities
    config.apply_recipe(recipe, contrastive_loss=overrides.get("contrastive_loss"))
    new_head = num_identities > 0 and saved_identities != num_identities
    model, info = GADMSModel.from_pretrained(source, config=config, output_loading_info=True,
                                             ignore_mismatched_sizes=new_head and saved_identities > 0)
    others = sorted(key for key, *_ in info["mismatched_keys"] if not key.startswith("classifier."))
    if others:
        raise ValueError(f"{source}: weights {others} do not fit the model's configuration")
    if new_head:
        logger.info("fresh ID head: %d identities (the checkpoint's head had %d)", num_identities, saved_identities)
    return model


def _hub_is_gadms(name: str) -> bool:
    try:
        return GADMSConfig.from_pretrained(name).model_type == GADMSConfig.model_type
    except (OSError, ValueError):
        return False


def build_processor(model_args: ModelArguments, config: GADMSConfig) -> GADMSProcessor:
    """The checkpoint's own processor when it has one, else CLIP's tokenizer (offline) at the model's size."""
    source = model_args.model_name_or_path
    if source is not None:
        try:
            return GADMSProcessor.from_pretrained(source)
        except (OSError, ValueError, TypeError):
            logger.info("no GA-DMS processor in %s: building one (CLIP tokenizer + %s images)", source,
                        config.image_size)
    return GADMSProcessor(make_image_processor(*config.image_size), build_clip_tokenizer())


def load_training_corpus(data_args: DataArguments) -> Corpus:
    """The training split in the common schema (image, caption, person_id, image_id, caption_id)."""
    kwargs = {}
    if data_args.dataset_name == "synth-pedes":
        kwargs = synth_overrides(data_args)
    dataset = load_corpus(data_args.dataset_name, data_dir=data_args.data_dir, split="train",
                          streaming=data_args.streaming, **kwargs)
    if data_args.max_train_samples is not None:
        dataset = (dataset.take(data_args.max_train_samples) if data_args.streaming
                   else dataset.select(range(min(len(dataset), data_args.max_train_samples))))
    return dataset


def report_cut_captions(corpora: Mapping[str, Corpus], tokenizer: PreTrainedTokenizerBase) -> None:
    """Log, per corpus, how many captions the 77-token window cuts (a warning when any is)."""
    for name, dataset in corpora.items():
        if not isinstance(dataset, datasets.Dataset):
            logger.info("%s is streamed: captions longer than %d tokens are cut without being counted", name,
                        TEXT_LENGTH)
            continue
        cut, total = count_cut_captions(dataset, tokenizer, TEXT_LENGTH)
        logger.log(logging.WARNING if cut else logging.INFO,
                   "%d of %d captions longer than %d tokens were cut (%s)", cut, total, TEXT_LENGTH, name)


def synth_overrides(data_args: DataArguments) -> dict:
    """The SynthPedesConfig fields the arguments set: `--synth_config`, then the dedicated `--synth_*` flags."""
    overrides = parse_overrides(data_args.synth_config, flag="--synth_config")
    mapping = {"num_train_ids": data_args.synth_num_train_ids, "num_test_ids": data_args.synth_num_test_ids,
               "noise_rate": data_args.synth_noise_rate}
    overrides.update({key: value for key, value in mapping.items() if value is not None})
    return overrides


def load_eval_benchmarks(data_args: DataArguments) -> dict[str, tuple[datasets.Dataset, datasets.Dataset]]:
    """name -> (gallery, queries) of `--eval_split` for every `--eval_benchmarks` entry whose data is present."""
    synth = synth_overrides(data_args) if "synth-pedes" in data_args.eval_benchmarks else None
    return load_benchmarks(data_args.eval_benchmarks, data_args.eval_data_dir, data_args.eval_split, synth)


def make_score_bank(model: GADMSModel, num_captions: int,
                    training_args: GADMSTrainingArguments) -> TokenScoreBank | None:
    """A fresh bank in `<output_dir>/_score_bank` (only when GASS drives the masking); the leading
    underscore keeps it out of the Trainer's Hub uploads, which skip `_*`."""
    if model.config.masking != "gass":
        return None
    path = os.path.join(training_args.output_dir, "_score_bank")
    if training_args.local_process_index == 0:
        TokenScoreBank.create(path, num_captions, TEXT_LENGTH, model.config.initial_token_score,
                              training_args.score_bank_dtype)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return TokenScoreBank.open(path)


def make_collator(processor: GADMSProcessor, model: GADMSModel, bank: TokenScoreBank | None,
                  seed: int) -> GADMSCollator:
    """Masks keyed on (seed, epoch, caption ids): exact replay on resume."""
    return GADMSCollator(processor, MaskingParams.from_config(model.config), bank, seed=seed)


def prepare_train_dataset(dataset: Corpus, config: GADMSConfig, seed: int, erase_prob: float = ERASE_PROB
                          ) -> tuple[Corpus, ImageColumnTransform]:
    """(dataset with on-the-fly augmentation, the transform to register as an epoch listener)."""
    transform = ImageColumnTransform(*config.image_size, train=True, seed=seed, erase_prob=erase_prob)
    return apply_transform(dataset, transform), transform


__all__ = [
    "Corpus",
    "PRESETS",
    "setup_logging",
    "build_model",
    "build_processor",
    "load_training_corpus",
    "load_eval_benchmarks",
    "report_cut_captions",
    "synth_overrides",
    "make_score_bank",
    "make_collator",
    "prepare_train_dataset",
]
