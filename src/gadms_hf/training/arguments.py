"""Argument dataclasses for `HfArgumentParser` (pretraining, fine-tuning, evaluation)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

from ..data.transforms import ERASE_PROB

logger = logging.getLogger("gadms_hf")


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "A GA-DMS model directory / Hub id, or any transformers CLIP checkpoint (converted with "
            "GADMSModel.from_clip, e.g. openai/clip-vit-base-patch16). Unset: a fresh model from --preset."
        },
    )
    preset: str = field(
        default="tiny",
        metadata={"help": "Architecture when no checkpoint is given: 'small' (the CPU demo's, learns from random "
                  "weights), 'tiny' (tests) or 'vit_b16' (the paper's)."},
    )
    recipe: str = field(
        default="gadms",
        metadata={"help": "Objective: 'gadms' (GASS dual masking), 'irra' (SDM+ID+random MLM), 'clip' (InfoNCE)."},
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={"help": "Attention kernel of both towers: 'sdpa' (transformers' default) or 'eager'. On a CPU with "
                  "--bf16, 'eager' trains about 1.4x faster: the sdpa kernel's bfloat16 backward is slow there."},
    )
    image_height: int = field(default=384, metadata={"help": "Image height when converting a CLIP checkpoint."})
    image_width: int = field(default=128, metadata={"help": "Image width when converting a CLIP checkpoint."})
    config_overrides: str | None = field(
        default=None,
        metadata={
            "help": "Comma-separated GADMSConfig fields, e.g. 'mim_loss_weight=0.4,gass_normalization=sample'."
        },
    )


@dataclass
class DataArguments:
    dataset_name: str = field(
        default="synth-pedes",
        metadata={
            "help": "Training corpus: synth-pedes, webperson, cuhk-pedes, icfg-pedes, rstpreid, or a Hub id / "
            "folder in the WebPerson Parquet form (e.g. Kaichengalex/WebPerson-5M)."
        },
    )
    data_dir: str | None = field(default=None, metadata={"help": "Raw corpus folder (annotation JSON + imgs/)."})
    streaming: bool = field(default=False, metadata={"help": "Stream the corpus (needs --max_steps)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the training split."})
    eval_benchmarks: list[str] = field(
        default_factory=list,
        metadata={"help": "Benchmarks for direct-transfer evaluation: cuhk-pedes icfg-pedes rstpreid synth-pedes "
                  "('none': no evaluation)."},
    )
    eval_data_dir: str | None = field(
        default=None, metadata={"help": "Folder holding one sub-folder per benchmark (CUHK-PEDES/, ICFG-PEDES/, ...)."}
    )
    eval_split: str = field(
        default="test", metadata={"help": "Benchmark split evaluated once, at the end, on the selected model."}
    )
    selection_split: str = field(
        default="val",
        metadata={"help": "Split on which --eval_steps evaluations select the best model (best_<benchmark>/). A "
                  "corpus without it (ICFG-PEDES, WebPerson) holds out --holdout_fraction of its training "
                  "identities instead. 'test' is possible but the final number is then not a test result."},
    )
    holdout_fraction: float = field(
        default=0.05, metadata={"help": "Share of training identities held out for selection (at least 2)."}
    )
    synth_num_train_ids: int | None = field(default=None, metadata={"help": "SynthPEDES training identities."})
    synth_num_test_ids: int | None = field(default=None, metadata={"help": "SynthPEDES test identities."})
    synth_noise_rate: float | None = field(
        default=None, metadata={"help": "SynthPEDES share of training captions with planted noise."}
    )
    synth_config: str | None = field(
        default=None,
        metadata={"help": "Any other SynthPedesConfig fields as 'field=value,...', e.g. 'images_per_id=4,height=96,"
                  "width=32' (the three --synth_* flags above take precedence)."},
    )

    def __post_init__(self):
        if self.eval_benchmarks == ["none"]:  # a list flag cannot be given empty on the command line
            self.eval_benchmarks = []


@dataclass
class GADMSTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the paper's optimiser options and safe defaults for this model.

    `remove_unused_columns=False` because the collator needs the raw `caption`/`caption_id`
    columns, and `label_names=[]` so that evaluation computes the loss from `return_loss`.
    """

    optimizer_name: str = field(
        default="adam", metadata={"help": "'adam' (L2 weight decay, as the authors) or 'adamw' (decoupled)."}
    )
    new_module_lr_factor: float = field(
        default=1.0, metadata={"help": "Learning-rate multiplier for the cross-modal/MIM and ID heads (IRRA: 5)."}
    )
    bias_lr_factor: float = field(default=1.0, metadata={"help": "Learning-rate multiplier for biases (IRRA: 2)."})
    bias_weight_decay: float | None = field(
        default=None, metadata={"help": "Weight decay of biases (IRRA: 0); unset = --weight_decay."}
    )
    warmup_start_factor: float = field(
        default=0.1, metadata={"help": "Linear warm-up starts at this fraction of the learning rate."}
    )
    lr_schedule: str = field(
        default="warmup_cosine",
        metadata={"help": "'warmup_cosine' (linear warm-up from --warmup_start_factor, then cosine to 0) or 'hf' "
                  "(use --lr_scheduler_type)."},
    )
    random_erasing: float = field(
        default=ERASE_PROB,
        metadata={"help": "Probability of random erasing in the training augmentation (the authors': 0.5). From random "
                  "weights it slows learning: erasing hides the very attributes the caption names."},
    )
    score_bank_dtype: str = field(default="float16", metadata={"help": "Score bank storage: float16 or uint8."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep raw columns for the collator."})

    def __post_init__(self):
        if self.label_names is None:
            self.label_names = []
        if self.ddp_find_unused_parameters is None:
            self.ddp_find_unused_parameters = False  # every parameter takes part in every step
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
            self.use_cpu = True  # torchrun on CPU: gloo processes (accelerate needs cpu=True to see them)
        if self.bf16 and not _has_accelerator():
            self.use_cpu = True  # bfloat16 autocast on the CPU (transformers asks for use_cpu explicitly)
        if self.bf16 and self.use_cpu and not cpu_computes_bf16():
            logger.warning(
                "--bf16 on a CPU without native bfloat16 support (torch's oneDNN reports none: no AVX-512 or "
                "Arm BF16): torch emulates the bfloat16 matrix products, and a `make demo` step measured 14x "
                "slower than float32 on such a CPU. Pass --bf16 False to train in float32.")
        if self.optimizer_name not in ("adam", "adamw"):
            raise ValueError(f"--optimizer_name={self.optimizer_name!r} must be 'adam' or 'adamw'")
        if self.lr_schedule not in ("warmup_cosine", "hf"):
            raise ValueError(f"--lr_schedule={self.lr_schedule!r} must be 'warmup_cosine' or 'hf'")
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name}={getattr(self, name)} must be a positive number of samples")
        if self.output_dir is not None and os.path.isfile(self.output_dir):
            raise ValueError(f"--output_dir {self.output_dir} is a file; expected a folder (new or existing)")
        super().__post_init__()


@dataclass
class FinetuneArguments:
    """Fine-tuning only: the IRRA switch and optional LoRA (`peft`)."""

    no_gass: bool = field(
        default=False, metadata={"help": "Fine-tune with the IRRA recipe (SDM + ID + random MLM), i.e. --recipe irra."}
    )
    lora_r: int = field(default=0, metadata={"help": "LoRA rank; 0 fine-tunes every weight."})
    lora_alpha: float | None = field(default=None, metadata={"help": "LoRA alpha; unset = 2 * --lora_r."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "out_proj"],
        metadata={"help": "Linear layers of both towers' encoder layers to adapt (space or comma separated)."},
    )

    def __post_init__(self):
        # "q_proj,v_proj" and "q_proj v_proj" both work.
        self.lora_target_modules = [name for item in self.lora_target_modules for name in item.split(",") if name]
        if self.lora_r < 0:
            raise ValueError(f"--lora_r={self.lora_r} must be >= 0 (0 = no LoRA)")


def _has_accelerator() -> bool:
    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available()) or (
        torch.backends.mps.is_available())


def cpu_computes_bf16() -> bool:
    """Whether torch's oneDNN has native bfloat16 kernels on this CPU (x86 AVX-512 or AMX, Arm BF16).

    Without them bfloat16 autocast emulates every matrix product: on a 2-core AVX2-only EPYC a step of the
    embedded default took 10.5 s in bfloat16 against 0.75 s in float32 (README "Precision follows the hardware").
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False


def bf16_is_fast() -> bool:
    """Whether bfloat16 autocast speeds training up on the device the `Trainer` will pick.

    A CUDA GPU counts only with native bfloat16 (Ampere or newer; older ones emulate it). Asking a GPU starts
    CUDA, so this is called when a run is set up, never at import.
    """
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return _has_accelerator() or cpu_computes_bf16()


# How this package trains from random weights on a CPU (README "The embedded default"): the example scripts'
# embedded defaults and scripts/bench_quality.py share it, split by the argument group that takes each value.
CPU_REGIME_MODEL = {"preset": "small", "attn_implementation": "eager"}


def cpu_regime_training() -> dict:
    """The regime's training values; bfloat16 only where it is fast (emulated on a CPU, a step is 14x slower)."""
    return {"optimizer_name": "adamw", "weight_decay": 0.05, "bias_weight_decay": 0.0, "warmup_steps": 0.1,
            "random_erasing": 0.0, "bf16": bf16_is_fast()}


def parse_overrides(text: str | None, flag: str = "--config_overrides") -> dict:
    """'a=1,b=x' -> {'a': 1, 'b': 'x'} with ints, floats and booleans recognised."""
    overrides = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        if "=" not in item:
            raise ValueError(f"{flag} item {item!r} must look like field=value")
        key, value = (s.strip() for s in item.split("=", 1))
        if value.lower() in ("true", "false"):
            overrides[key] = value.lower() == "true"
            continue
        for cast in (int, float):
            try:
                overrides[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            overrides[key] = value
    return overrides


__all__ = [
    "CPU_REGIME_MODEL",
    "cpu_regime_training",
    "bf16_is_fast",
    "cpu_computes_bf16",
    "ModelArguments",
    "DataArguments",
    "GADMSTrainingArguments",
    "FinetuneArguments",
    "parse_overrides",
]
