#!/usr/bin/env python
"""Speed and memory benchmark of gadms-hf. Every figure is a ratio against a baseline measured in the same
process, so that it means the same on a loaded laptop and on a quiet server.

    python scripts/benchmark.py --quick --output bench.json   # under 2 minutes on 2 CPU cores
    python scripts/benchmark.py --output bench.json           # the full run, under 15 minutes
    python scripts/benchmark.py --quick --device cuda         # model rows on the GPU + ViT-B/16 MFU

Rows (target in brackets):
  train_step      GA-DMS step (SDM + MIM + GASS, masked copies) / SDM-only step, same model, batch [<= 1.30]
  gass            GASS scoring / one text-tower forward, same batch [<= 2.0]
  mim_memory      peak bytes of the MIM head at labelled positions / full-vocabulary logits [<= 0.35]
  embed_text      text embeddings per second / transformers' CLIPModel with the same weights [>= 0.95]
  embed_image     image embeddings per second / the same [>= 0.95]
  ranking         full-argsort metrics time / `rank_metrics` time at the CUHK-PEDES test size [>= 5]
  data_loader     collator + transforms samples/s / training-step samples/s, 2 workers [>= 3]
  bank_disk       score-bank bytes per caption / raw float16 row (154 B) [<= 160 B]
  bank_memory     private memory growth of a process that opens the bank / its file size [<= 50 MB]
  (full run)      train_step_flops_vit_b16: FLOP ratio of the two training steps at the paper's size
  (--device cuda) vit_b16_train_step: the train_step ratio at the paper's size, bf16 autocast [<= 1.30];
                  vit_b16_step: its samples/s and model-FLOPs utilisation

The model rows use a reduced ViT with the real token counts (384x128 / patch 16 = 192 patches + CLS, 77 text
tokens, the 49,409-token vocabulary) and the paper's proportions scaled down by 4 (widths 192 / 128, 3
layers, GASS on the last 2 of 3 text layers, 1 cross-modal block). Timings alternate candidate and baseline
inside each repetition (the order flips every repetition) so that load from other processes hits both; a ratio
is the median of the per-repetition ratios after warm-up, its spread their inter-quartile range.
Torch runs 1 intra-op thread unless --threads says otherwise (see its help).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import io
import json
import math
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils import flop_counter  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_flatten  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from transformers import CLIPConfig, CLIPModel  # noqa: E402

from gadms_hf import (  # noqa: E402
    GADMSConfig,
    GADMSModel,
    GADMSProcessor,
    build_clip_tokenizer,
    make_image_processor,
)
from gadms_hf.cross_modal import GADMSTokenHead  # noqa: E402
from gadms_hf.data.collator import GADMSCollator  # noqa: E402
from gadms_hf.data.score_bank import TokenScoreBank  # noqa: E402
from gadms_hf.data.synth import SynthPedesConfig, generate_examples  # noqa: E402
from gadms_hf.data.transforms import with_transform  # noqa: E402
from gadms_hf.evaluation.ranking import rank_metrics  # noqa: E402
from gadms_hf.losses import mim_loss  # noqa: E402
from gadms_hf.masking import IGNORE_INDEX, MaskingParams  # noqa: E402

HEIGHT, WIDTH, TEXT_LENGTH = 384, 128, 77
CUHK_TEST = (6156, 3074, 1000)  # captions, images, identities
# The reduced model: the paper's ViT-B/16 pair (768 / 512 wide, 12 layers, GASS on 8 text layers, 4
# cross-modal blocks at width 512) with widths and depths divided by 4.
REDUCED_TEXT = dict(vocab_size=49408, hidden_size=128, intermediate_size=512, num_hidden_layers=3,
                    num_attention_heads=2, max_position_embeddings=TEXT_LENGTH, bos_token_id=49406,
                    eos_token_id=49407, pad_token_id=49407)
REDUCED_VISION = dict(hidden_size=192, intermediate_size=768, num_hidden_layers=3, num_attention_heads=3,
                      image_size=224, patch_size=16)
REDUCED_HEADS = dict(gass_num_layers=2, cross_modal_depth=1)
MIM_HEAD_WIDTH = 512  # the paper's projection width: the head's memory is measured at full size
# Dense bf16 tensor-core peaks (TFLOP/s) by device-name substring, first match wins; --peak-tflops overrides.
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4), ("A100", 312.0))
FLOAT16_ROW_BYTES = TEXT_LENGTH * 2
SDM_INPUTS = ("pixel_values", "input_ids", "attention_mask", "person_ids", "return_loss")  # no masked copies

PRESETS = {
    "quick": dict(warmup=2, repeats=7, batch_size=16, embed_batch=32, mim_batch=16, ranking_repeats=3,
                  loader_samples=256, loader_epochs=3, bank_captions=1_000_000, vit_b16_flops=False),
    "full": dict(warmup=3, repeats=15, batch_size=32, embed_batch=64, mim_batch=64, ranking_repeats=5,
                 loader_samples=512, loader_epochs=5, bank_captions=10_000_000, vit_b16_flops=True),
}


@dataclass
class Settings:
    """What one run measures, and at which sizes (a preset, then command-line overrides)."""

    preset: str
    device: str
    threads: int
    warmup: int
    repeats: int
    batch_size: int
    embed_batch: int
    mim_batch: int
    ranking_repeats: int
    loader_samples: int
    loader_epochs: int
    workers: int
    bank_captions: int
    ranking_size: tuple[int, int, int]
    vit_b16_flops: bool
    cuda_batch: int
    peak_tflops: float | None


@dataclass
class Row:
    """One line of the table. `ratio` is candidate / baseline in the direction the target reads."""

    name: str
    value: float
    unit: str
    ratio: float
    spread: tuple[float, float]
    versus: str
    target: str | None
    met: bool | None
    details: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- statistics


def summary(times: list[float]) -> dict[str, float]:
    """Median, quartiles and range of a list of seconds."""
    q1, median, q3 = (statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1
                      else (times[0], times[0], times[0]))
    return {"median": median, "q1": q1, "q3": q3, "min": min(times), "max": max(times), "n": len(times)}


def ratio_spread(numerator: list[float], denominator: list[float]) -> tuple[float, tuple[float, float]]:
    """Median and inter-quartile range of the per-repetition ratios (each pair timed back to back, so a
    slow spell of the machine divides out)."""
    pairs = summary([a / b for a, b in zip(numerator, denominator)])
    return pairs["median"], (pairs["q1"], pairs["q3"])


def interleaved(fns: dict[str, Callable[[], object]], warmup: int, repeats: int,
                sync: Callable[[], None]) -> dict[str, list[float]]:
    """Seconds per call of each function; within a repetition every function runs once, order flipping
    between repetitions, so that a slow spell on a shared machine hits all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for repetition in range(warmup + repeats):
        for name in names if repetition % 2 == 0 else names[::-1]:
            sync()
            start = time.perf_counter()
            fns[name]()
            sync()
            if repetition >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def check(value: float, target: str) -> bool:
    """`target` is '<= x' or '>= x'."""
    op, bound = target.split()
    return value <= float(bound) if op == "<=" else value >= float(bound)


# ---------------------------------------------------------------------------------------------- measurement


@contextlib.contextmanager
def config_fields(model: GADMSModel, **fields: Any) -> Iterator[None]:
    """Temporarily switch config fields that `GADMSModel.forward` reads at call time."""
    saved = {name: getattr(model.config, name) for name in fields}
    for name, value in fields.items():
        setattr(model.config, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(model.config, name, value)


def _register_cpu_attention_flops() -> None:
    """FlopCounterMode knows the CUDA attention kernels but not CPU's fused one; count it the same way."""
    aten = torch.ops.aten
    forward = aten._scaled_dot_product_flash_attention_for_cpu
    backward = aten._scaled_dot_product_flash_attention_for_cpu_backward
    if forward in flop_counter.flop_registry:
        return

    @flop_counter.register_flop_formula(forward)
    def _forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)

    @flop_counter.register_flop_formula(backward)
    def _backward(grad_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_backward_flop_count(grad_shape, query_shape, key_shape, value_shape)


def count_flops(fn: Callable[[], object]) -> int:
    """Floating-point operations of one call (matmuls, convolutions, attention; forward and backward)."""
    with flop_counter.FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


class TensorBytes(TorchDispatchMode):
    """Live bytes of every tensor storage an ATen op creates while the mode is active, and their peak.

    Torch's CPU allocator keeps no high-water mark, and tracemalloc does not see it; but every tensor a
    forward or backward creates (outputs, autograd's saved tensors, gradients) is some op's output. An output
    that shares storage with an input (views, in-place ops) is not new memory and is skipped; a storage is
    subtracted when it is freed. Kernel-internal scratch space and allocator slack are not counted.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._seen: set[int] = set()

    def _free(self, pointer: int, nbytes: int) -> None:
        self.live -= nbytes
        self._seen.discard(pointer)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor)}
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            pointer, nbytes = storage.data_ptr(), storage.nbytes()
            if nbytes == 0 or pointer in inputs or pointer in self._seen:
                continue
            self._seen.add(pointer)
            self.live += nbytes
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._free, pointer, nbytes)
        return out


def rss_kib() -> dict[str, int]:
    """Resident memory of this process (kB): total, private anonymous, file-backed (Linux /proc)."""
    status = Path("/proc/self/status")
    if not status.is_file():
        raise RuntimeError("bank_memory reads /proc/self/status, which only Linux has")
    fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
    return {name: int(fields[name].split()[0]) for name in ("VmRSS", "RssAnon", "RssFile")}


def bank_memory_probe(path: str, warm_path: str, batches: int, batch_size: int) -> dict[str, dict[str, int]]:
    """Run in a fresh process: its memory before opening the bank, after opening and reading one batch of
    random rows, and after `batches` batches (what a data-loader worker does). A small bank at `warm_path` is
    read first, so that the library code the first read runs (torch, numpy) is already paged in."""
    TokenScoreBank.open(warm_path, readonly=True).read(np.arange(batch_size))
    before = rss_kib()
    bank = TokenScoreBank.open(path, readonly=True)
    rng = np.random.default_rng(0)
    bank.read(rng.integers(0, len(bank), batch_size))
    opened = rss_kib()
    for _ in range(batches - 1):
        bank.read(rng.integers(0, len(bank), batch_size))
    return {"before": before, "opened": opened, "read": rss_kib()}


# ------------------------------------------------------------------------------------------------- fixtures


@dataclass
class Bench:
    """What the rows share: settings, the device, the processor, models and a small pedestrian corpus."""

    settings: Settings
    device: torch.device
    workdir: Path
    processor: GADMSProcessor
    model: GADMSModel
    clip: CLIPModel
    corpus: datasets.Dataset  # one row per caption, images as JPEG/PNG bytes, train transform applied
    train_samples_per_s: float | None = None

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def collate(self, size: int, model: GADMSModel | None = None) -> dict[str, Any]:
        """A training batch of `size` corpus rows (cycled) through `GADMSCollator`, on the device, in the
        paper's 77-position layout (the rows compare the method's parts at the paper's token count)."""
        params = MaskingParams.from_config((model or self.model).config)
        features = [self.corpus[i % len(self.corpus)] for i in range(size)]
        batch = GADMSCollator(self.processor, params, seed=0, pad_to_max_length=True)(features)
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def build_models(device: torch.device) -> tuple[GADMSModel, CLIPModel]:
    """A random `CLIPModel` and the GA-DMS model converted from it (same weights). The GA-DMS positional
    table is set to what CLIP's own bicubic interpolation gives at 384x128, so that both compute the same
    function and their outputs can be compared exactly."""
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(text_config=REDUCED_TEXT, vision_config=REDUCED_VISION, projection_dim=128))
    model = GADMSModel.from_clip(clip, image_size=(HEIGHT, WIDTH), **REDUCED_HEADS)
    embeddings = clip.vision_model.embeddings
    tokens = 1 + (HEIGHT // 16) * (WIDTH // 16)
    with torch.no_grad():
        table = embeddings.interpolate_pos_encoding(torch.zeros(1, tokens, REDUCED_VISION["hidden_size"]),
                                                    HEIGHT, WIDTH)
        model.vision_model.embeddings.position_embedding.weight.copy_(table[0])
    return model.to(device), clip.to(device)


def build_corpus(samples: int, workdir: Path) -> datasets.Dataset:
    """`samples` SynthPEDES captions of 384x128 pedestrians, two per image; images alternate JPEG (quality 95)
    and PNG. Written as a Parquet file and loaded the way a Hub corpus is (memory-mapped Arrow cache, `Image`
    feature), with the training transform."""
    images_per_id, captions_per_image = 4, 2
    config = SynthPedesConfig(num_train_ids=math.ceil(samples / (images_per_id * captions_per_image)),
                              images_per_id=images_per_id, captions_per_image=captions_per_image,
                              height=HEIGHT, width=WIDTH)
    rows = []
    for _, row in generate_examples(config, "train"):
        if len(rows) == samples:
            break
        data = row["image"]["bytes"]
        if row["image_id"] % 2:
            buffer = io.BytesIO()
            Image.open(io.BytesIO(data)).save(buffer, format="JPEG", quality=95)
            data = buffer.getvalue()
        rows.append({"image": {"bytes": data, "path": None}, "caption": row["caption"],
                     "person_id": row["person_id"], "image_id": row["image_id"], "caption_id": len(rows)})
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string"),
                                  "person_id": datasets.Value("int64"), "image_id": datasets.Value("int64"),
                                  "caption_id": datasets.Value("int64")})
    parquet = workdir / "corpus.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=features.arrow_schema), parquet)
    corpus = datasets.Dataset.from_parquet(str(parquet), features=features, cache_dir=str(workdir / "cache"))
    return with_transform(corpus, HEIGHT, WIDTH, train=True, seed=0)


# ----------------------------------------------------------------------------------------------------- rows


def training_step_rows(bench: Bench) -> list[Row]:
    """GA-DMS step vs SDM-only step; a third variant (SDM + MIM, no GASS) splits the extra cost."""
    model, settings = bench.model.train(), bench.settings
    batch = bench.collate(settings.batch_size)
    full = {k: v for k, v in batch.items() if k != "caption_ids"}
    plain = {k: full[k] for k in SDM_INPUTS}
    variants = {"gadms": (full, {}), "sdm_mim": (full, {"use_gass": False}),
                "sdm": (plain, {"use_gass": False, "mim_loss_weight": 0.0})}

    def step(inputs: dict[str, Any], overrides: dict[str, Any]) -> Callable[[], None]:
        def run() -> None:
            with config_fields(model, **overrides):
                model.zero_grad(set_to_none=True)
                model(**inputs).loss.backward()

        return run

    fns = {name: step(*variant) for name, variant in variants.items()}
    flops = {name: count_flops(fn) for name, fn in fns.items()}  # doubles as the first warm-up call
    times = interleaved(fns, max(settings.warmup - 1, 0), settings.repeats, bench.sync)
    ratio, spread = ratio_spread(times["gadms"], times["sdm"])
    medians = {name: statistics.median(t) for name, t in times.items()}
    extra = medians["gadms"] - medians["sdm"]
    bench.train_samples_per_s = settings.batch_size / medians["gadms"]
    labelled = int((batch["mim_labels"] != IGNORE_INDEX).sum())
    rows = [Row("train_step", medians["gadms"], "s/step", ratio, spread, "SDM-only step", "<= 1.30",
                check(ratio, "<= 1.30"), {
                    "batch_size": settings.batch_size,
                    "seconds": {name: summary(t) for name, t in times.items()},
                    "gflops": {name: f / 1e9 for name, f in flops.items()},
                    "flop_ratio": flops["gadms"] / flops["sdm"],
                    "share_of_extra_time": {"mim": (medians["sdm_mim"] - medians["sdm"]) / extra,
                                            "gass": (medians["gadms"] - medians["sdm_mim"]) / extra},
                    "mim_labelled_positions": labelled,
                    "samples_per_s": bench.train_samples_per_s,
                })]
    if settings.vit_b16_flops:
        rows.append(vit_b16_flop_row(bench))
    return rows


def vit_b16_flop_row(bench: Bench) -> Row:
    """FLOPs of the two training steps at the paper's size (batch 2, counted once each on the device)."""
    torch.manual_seed(0)
    model = GADMSModel(GADMSConfig.vit_b16()).to(bench.device).train()
    batch = {k: v for k, v in bench.collate(2, model).items() if k != "caption_ids"}
    plain = {k: batch[k] for k in SDM_INPUTS}

    def gadms() -> None:
        model(**batch).loss.backward()

    def sdm() -> None:
        with config_fields(model, use_gass=False, mim_loss_weight=0.0):
            model(**plain).loss.backward()

    flops = {"gadms": count_flops(gadms), "sdm": count_flops(sdm)}
    ratio = flops["gadms"] / flops["sdm"]
    per_sample = {k: v / 2 / 1e9 for k, v in flops.items()}
    return Row("train_step_flops_vit_b16", per_sample["gadms"], "GFLOP/sample", ratio, (ratio, ratio),
               "SDM-only step FLOPs", None, None, {"gflops_per_sample": per_sample})


def gass_row(bench: Bench) -> Row:
    """GASS scoring (its own forward + partial backward) vs one text-tower forward, both with autograd on."""
    model, settings = bench.model.train(), bench.settings
    batch = bench.collate(settings.batch_size)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        image_embeds = model.get_image_features(pixel_values=batch["pixel_values"]).pooler_output
    eos = model.eos_positions(ids)

    def gass() -> None:
        model.gass(model.text_model, model.text_projection, ids, mask, image_embeds, eos)

    def text() -> None:
        model.get_text_features(input_ids=ids, attention_mask=mask)

    # a few tenths of a second each: three times the repetitions for the same noise as the other rows
    times = interleaved({"gass": gass, "text": text}, settings.warmup, 3 * settings.repeats, bench.sync)
    ratio, spread = ratio_spread(times["gass"], times["text"])
    flops = {"gass": count_flops(gass), "text": count_flops(text)}
    return Row("gass", statistics.median(times["gass"]), "s/batch", ratio, spread, "one text-tower forward",
               "<= 2.0", check(ratio, "<= 2.0"), {
                   "batch_size": settings.batch_size, "gass_layers": model.gass.num_layers,
                   "text_layers": model.config.text_config.num_hidden_layers,
                   "seconds": {name: summary(t) for name, t in times.items()},
                   "flop_ratio": flops["gass"] / flops["text"]})


def mim_memory_row(bench: Bench) -> Row:
    """Peak bytes of the MIM head's forward + backward: at the labelled positions, the vocabulary layer fused
    with the cross-entropy (what the model does) vs full-vocabulary logits at every position with ignore-index
    cross-entropy (what the authors' code does)."""
    settings = bench.settings
    vocab = bench.model.config.text_config.vocab_size
    torch.manual_seed(0)
    head = GADMSTokenHead(MIM_HEAD_WIDTH, vocab, eps=1e-5)
    labels = bench.collate(settings.mim_batch)["mim_labels"].cpu()
    selected = labels != IGNORE_INDEX
    states = torch.randn(settings.mim_batch, TEXT_LENGTH, MIM_HEAD_WIDTH, requires_grad=True)

    def labelled_only() -> None:
        mim_loss(head.features(states[selected]), head.fc.weight, head.fc.bias, labels[selected]).backward()

    def every_position() -> None:
        logits = head(states).reshape(-1, vocab).float()
        F.cross_entropy(logits, labels.reshape(-1), ignore_index=IGNORE_INDEX).backward()

    peaks = {}
    for name, fn in (("labelled", labelled_only), ("every_position", every_position)):
        head.zero_grad(set_to_none=True)
        states.grad = None
        with TensorBytes() as tracker:
            fn()
        peaks[name] = tracker.peak
    head.zero_grad(set_to_none=True)
    ratio = peaks["labelled"] / peaks["every_position"]
    positions = selected.sum().item()
    return Row("mim_memory", peaks["labelled"] / 2**20, "MiB peak", ratio, (ratio, ratio),
               "full-vocabulary logits", "<= 0.35", check(ratio, "<= 0.35"), {
                   "batch_size": settings.mim_batch, "width": MIM_HEAD_WIDTH, "vocab": vocab,
                   "peak_mib": {k: v / 2**20 for k, v in peaks.items()},
                   "labelled_positions": positions, "labelled_share_of_positions": positions / labels.numel(),
                   "weight_gradient_mib": vocab * MIM_HEAD_WIDTH * 4 / 2**20,
                   "method": "peak live bytes of the tensor storages ATen ops create (TorchDispatchMode)"})


def embedding_rows(bench: Bench) -> list[Row]:
    """Embedding throughput of GADMSModel vs transformers' CLIPModel with identical weights and token counts
    (CLIP interpolates its positions to 24x8 at each call, GA-DMS holds the same table precomputed)."""
    model, clip, settings = bench.model.eval(), bench.clip.eval(), bench.settings
    batch = bench.collate(settings.embed_batch)
    ids, mask, pixels = batch["input_ids"], batch["attention_mask"], batch["pixel_values"]
    cases = {
        "embed_text": (lambda: model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output,
                       lambda: clip.get_text_features(input_ids=ids, attention_mask=mask).pooler_output),
        "embed_image": (lambda: model.get_image_features(pixel_values=pixels).pooler_output,
                        lambda: clip.get_image_features(pixel_values=pixels,
                                                        interpolate_pos_encoding=True).pooler_output),
    }
    rows = []
    with torch.no_grad():
        for name, (ours, theirs) in cases.items():
            difference = (ours() - theirs()).abs().max().item()
            times = interleaved({"gadms": ours, "clip": theirs}, settings.warmup, settings.repeats,
                                bench.sync)
            ratio, spread = ratio_spread(times["clip"], times["gadms"])  # throughput ratio = time ratio
            throughput = settings.embed_batch / statistics.median(times["gadms"])
            rows.append(Row(name, throughput, "samples/s", ratio, spread, "CLIPModel, same weights",
                            ">= 0.95", check(ratio, ">= 0.95"), {
                                "batch_size": settings.embed_batch, "max_abs_difference": difference,
                                "seconds": {k: summary(t) for k, t in times.items()},
                                "attn_implementation": {
                                    "gadms": model.text_model.config._attn_implementation,
                                    "clip": clip.text_model.config._attn_implementation}}))
    model.train()
    return rows


def ranking_problem(size: tuple[int, int, int], device: torch.device, dim: int = 512):
    """Random embeddings with identity structure: each image near its identity's prototype, two captions per
    image near the same prototype; the noise puts R1 near 67%, mAP near 50%, as a trained model gets."""
    queries, gallery, identities = size
    generator = torch.Generator().manual_seed(0)
    prototypes = torch.randn(identities, dim, generator=generator)
    gallery_ids = torch.arange(gallery) % identities
    query_ids = gallery_ids[torch.arange(queries) % gallery]
    gallery_embeds = prototypes[gallery_ids] + 2.5 * torch.randn(gallery, dim, generator=generator)
    query_embeds = prototypes[query_ids] + 2.5 * torch.randn(queries, dim, generator=generator)
    return (query_embeds.to(device), gallery_embeds.to(device), query_ids.to(device), gallery_ids.to(device))


def argsort_metrics(query: torch.Tensor, gallery: torch.Tensor, query_ids: torch.Tensor,
                    gallery_ids: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """The straightforward way: sort every row of the similarity matrix, then read the metrics off."""
    similarity = F.normalize(query, dim=-1) @ F.normalize(gallery, dim=-1).T
    order = torch.argsort(similarity, dim=1, descending=True, stable=True)
    matches = gallery_ids[order] == query_ids[:, None]
    positions = torch.arange(1, matches.shape[1] + 1, device=matches.device)
    correct = matches.sum(dim=1)
    first = matches.int().argmax(dim=1) + 1
    last = matches.shape[1] - matches.flip(1).int().argmax(dim=1)
    average_precision = (matches.cumsum(dim=1) / positions * matches).sum(dim=1) / correct
    metrics = {f"R{k}": 100.0 * (first <= k).double().mean().item() for k in ks}
    metrics["mAP"] = 100.0 * average_precision.double().mean().item()
    metrics["mINP"] = 100.0 * (correct / last).double().mean().item()
    return metrics


def ranking_row(bench: Bench) -> Row:
    """`rank_metrics` vs `argsort_metrics`, both from embeddings; the similarity product both start with is
    timed on its own too, so that the ranking part alone can be compared (`ranking_only_ratio`). No warm-up:
    every call allocates and sorts afresh, there is nothing to warm."""
    settings = bench.settings
    query, gallery, query_ids, gallery_ids = ranking_problem(settings.ranking_size, bench.device)
    results: dict[str, dict[str, float]] = {}

    def ours() -> None:
        results["rank_metrics"] = rank_metrics(query, gallery, query_ids.cpu(), gallery_ids.cpu())

    def naive() -> None:
        results["argsort"] = argsort_metrics(query, gallery, query_ids, gallery_ids)

    def similarity() -> None:
        F.normalize(query, dim=-1) @ F.normalize(gallery, dim=-1).T

    times = interleaved({"rank_metrics": ours, "argsort": naive, "similarity": similarity}, 0,
                        settings.ranking_repeats, bench.sync)
    ratio, spread = ratio_spread(times["argsort"], times["rank_metrics"])
    medians = {k: statistics.median(t) for k, t in times.items()}
    difference = max(abs(results["rank_metrics"][k] - results["argsort"][k]) for k in results["argsort"])
    return Row("ranking", medians["rank_metrics"], "s", ratio, spread, "full argsort", ">= 5",
               check(ratio, ">= 5"), {
                "queries_gallery_identities": list(settings.ranking_size),
                "seconds": {k: summary(t) for k, t in times.items()},
                "similarity_share_of_rank_metrics": medians["similarity"] / medians["rank_metrics"],
                "ranking_only_ratio": (medians["argsort"] - medians["similarity"])
                / (medians["rank_metrics"] - medians["similarity"]),
                "metrics": results["rank_metrics"], "max_metric_difference": difference})


def data_loader_row(bench: Bench) -> Row:
    """DataLoader(corpus with the train transform, GADMSCollator + TokenScoreBank, 2 workers) samples/s vs
    the GA-DMS training step's samples/s. Each epoch's rate leaves out its first batch (the pipeline filling)
    and epoch 0 is warm-up (worker start)."""
    settings = bench.settings
    if bench.train_samples_per_s is None:
        raise RuntimeError("data_loader_row needs the training-step row first (its samples/s)")
    bank = TokenScoreBank.create(bench.workdir / "loader_bank", num_captions=len(bench.corpus))
    collator = GADMSCollator(bench.processor, MaskingParams.from_config(bench.model.config), bank, seed=0)
    loader = DataLoader(bench.corpus, batch_size=settings.batch_size, shuffle=True, drop_last=True,
                        num_workers=settings.workers, collate_fn=collator,
                        persistent_workers=settings.workers > 0)
    if len(loader) < 2:
        raise ValueError(f"--loader-samples {settings.loader_samples} gives fewer than 2 batches of "
                         f"{settings.batch_size}; the first batch of each epoch is not timed")
    rates = []
    for epoch in range(1 + settings.loader_epochs):
        batches = iter(loader)
        next(batches)
        start, samples = time.perf_counter(), 0
        for batch in batches:
            samples += len(batch["caption_ids"])
        if epoch:
            rates.append(samples / (time.perf_counter() - start))
    del batches, loader
    rate, train = summary(rates), bench.train_samples_per_s
    ratio = rate["median"] / train
    return Row("data_loader", rate["median"], "samples/s", ratio, (rate["q1"] / train, rate["q3"] / train),
               "training-step samples/s", ">= 3", check(ratio, ">= 3"),
               {"workers": settings.workers, "batch_size": settings.batch_size,
                "samples_per_epoch": len(bench.corpus), "samples_per_s": rate,
                "train_step_samples_per_s": train})


def score_bank_rows(bench: Bench) -> list[Row]:
    """Bytes per caption on disk, and what opening the bank costs a fresh process (measured in a spawned one,
    as a data-loader worker would open it)."""
    captions = bench.settings.bank_captions
    start = time.perf_counter()
    bank = TokenScoreBank.create(bench.workdir / "bank", num_captions=captions)
    create_s = time.perf_counter() - start
    TokenScoreBank.create(bench.workdir / "warm_bank", num_captions=1024)
    disk = sum(f.stat().st_size for f in bank.path.iterdir())
    per_caption = disk / captions
    del bank
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        probe = pool.apply(bank_memory_probe, (str(bench.workdir / "bank"), str(bench.workdir / "warm_bank"),
                                               100, 128))
    growth = {stage: {k: (v - probe["before"][k]) / 1024 for k, v in probe[stage].items()}
              for stage in ("opened", "read")}
    # Private memory is what each process pays. File-backed resident pages of the read-only mapping are the
    # shared page cache: one copy for all processes, dropped under memory pressure, reported beside it.
    opened_mib = growth["opened"]["RssAnon"]
    disk_ratio, memory_ratio = per_caption / FLOAT16_ROW_BYTES, opened_mib * 2**20 / disk
    return [
        Row("bank_disk", per_caption, "B/caption", disk_ratio, (disk_ratio, disk_ratio),
            "raw float16 row (154 B)", "<= 160", check(per_caption, "<= 160"),
            {"captions": captions, "file_bytes": disk, "create_seconds": create_s}),
        Row("bank_memory", opened_mib, "MiB private", memory_ratio, (memory_ratio, memory_ratio),
            "bank file size", "<= 50", check(opened_mib, "<= 50"),
            {"captions": captions, "growth_mib": growth,
             "stages": "opened = open + 1 batch of 128 random rows; read = 100 batches"}),
    ]


def vit_b16_cuda_rows(bench: Bench) -> list[Row]:
    """The paper's model on the GPU, bf16 autocast, a fixed batch: the GA-DMS training step (forward,
    backward, fused AdamW) against the SDM-only step, interleaved as on the CPU; its samples/s; and its
    model-FLOPs utilisation (forward + backward FLOPs, GASS's pass included) against the dense bf16 peak."""
    settings = bench.settings
    torch.manual_seed(0)
    torch.cuda.reset_peak_memory_stats(bench.device)
    model = GADMSModel(GADMSConfig.vit_b16()).to(bench.device).train()
    batch = {k: v for k, v in bench.collate(settings.cuda_batch, model).items() if k != "caption_ids"}
    variants = {"gadms": (batch, {}), "sdm": ({k: batch[k] for k in SDM_INPUTS},
                                              {"use_gass": False, "mim_loss_weight": 0.0})}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)

    def forward_backward(name: str) -> None:
        inputs, overrides = variants[name]
        with config_fields(model, **overrides), torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(**inputs).loss
        loss.backward()

    def step(name: str) -> Callable[[], None]:
        def run() -> None:
            optimizer.zero_grad(set_to_none=True)
            forward_backward(name)
            optimizer.step()

        return run

    flops = {name: count_flops(functools.partial(forward_backward, name)) for name in variants}
    times = interleaved({name: step(name) for name in variants}, max(settings.warmup, 3), settings.repeats,
                        bench.sync)
    ratio, spread = ratio_spread(times["gadms"], times["sdm"])
    seconds = {name: summary(t) for name, t in times.items()}
    device = torch.cuda.get_device_name(bench.device)
    peak = settings.peak_tflops or next((p for key, p in PEAK_BF16_TFLOPS if key in device), None)
    mfu = {name: flops[name] / seconds[name]["median"] / (peak * 1e12) if peak else float("nan")
           for name in variants}
    gadms = seconds["gadms"]
    mfu_spread = tuple(flops["gadms"] / gadms[q] / (peak * 1e12) if peak else float("nan")
                       for q in ("q3", "q1"))
    details = {"batch_size": settings.cuda_batch, "device": device, "seconds": seconds,
               "tflop_per_step": {name: f / 1e12 for name, f in flops.items()},
               "samples_per_s": {name: settings.cuda_batch / s["median"] for name, s in seconds.items()},
               "mfu": mfu, "peak_tflops": peak,
               "peak_memory_gib": torch.cuda.max_memory_allocated(bench.device) / 2**30}
    return [Row("vit_b16_train_step", gadms["median"], "s/step", ratio, spread,
                "SDM-only step (ViT-B/16, bf16)", "<= 1.30", check(ratio, "<= 1.30"), details),
            Row("vit_b16_step", settings.cuda_batch / gadms["median"], "samples/s", mfu["gadms"], mfu_spread,
                f"MFU of {peak} TFLOP/s bf16 peak", None, None, {"batch_size": settings.cuda_batch})]


# ---------------------------------------------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), cpu)
    revision = None
    with contextlib.suppress(OSError):  # no git, or not a checkout
        revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                  cwd=Path(__file__).resolve().parent).stdout.strip() or None
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "nproc": os.cpu_count(), "cpu_model": cpu, "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "datasets": datasets.__version__,
            "git_revision": revision, "command": " ".join(["python", *sys.argv])}


def table(rows: list[Row]) -> str:
    lines = ["| row | value | ratio [IQR] | ratio against | target | met |", "|---|---|---|---|---|---|"]
    for row in rows:
        met = "n/a" if row.met is None else ("yes" if row.met else "**no**")
        spread = f"[{row.spread[0]:.3g}, {row.spread[1]:.3g}]"
        lines.append(f"| {row.name} | {row.value:.4g} {row.unit} | {row.ratio:.3g} {spread} | {row.versus} "
                     f"| {row.target or '-'} | {met} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> tuple[Settings, Path | None]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repetitions (< 2 min)")
    parser.add_argument("--output", type=Path, help="write the rows and the machine description as JSON here")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: on a shared machine, threads wait for each "
                             "other whenever one is descheduled; 2 threads were 4x slower than 1 at the "
                             "median on 2 busy cores. Use the core count on a quiet machine)")
    parser.add_argument("--workers", type=int, default=2, help="data-loader workers")
    parser.add_argument("--cuda-batch", type=int, default=128, help="ViT-B/16 batch on --device cuda")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, for MFU")
    overrides = parser.add_argument_group("overrides of the preset")
    for name in ("warmup", "repeats", "batch_size", "embed_batch", "mim_batch", "ranking_repeats",
                 "loader_samples", "loader_epochs", "bank_captions"):
        overrides.add_argument("--" + name.replace("_", "-"), type=int)
    overrides.add_argument("--ranking-size", type=int, nargs=3, metavar=("QUERIES", "GALLERY", "IDENTITIES"))
    args = parser.parse_args(argv)
    preset = "quick" if args.quick else "full"
    values = dict(PRESETS[preset])
    values.update({k: v for k, v in vars(args).items() if k in values and v is not None})
    if args.threads < 1 or args.workers < 0:
        parser.error("--threads must be >= 1 and --workers >= 0")
    settings = Settings(preset=preset, device=args.device, threads=args.threads, workers=args.workers,
                        ranking_size=tuple(args.ranking_size or CUHK_TEST), cuda_batch=args.cuda_batch,
                        peak_tflops=args.peak_tflops, **values)
    small = [name for name in ("repeats", "batch_size", "embed_batch", "mim_batch", "ranking_repeats",
                               "loader_epochs", "bank_captions") if getattr(settings, name) < 1]
    if small or settings.warmup < 0:
        parser.error(f"{small or ['warmup']} must be positive (warmup >= 0)")
    queries, gallery, identities = settings.ranking_size
    if not 1 <= identities <= gallery:
        parser.error(f"--ranking-size: identities ({identities}) must be in [1, gallery ({gallery})]")
    return settings, args.output


def main(argv: list[str] | None = None) -> list[Row]:
    settings, output = parse_args(argv)
    device = torch.device(settings.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    torch.set_num_threads(settings.threads)
    _register_cpu_attention_flops()
    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gadms-bench-") as tmp:
        workdir = Path(tmp)
        tokenizer = build_clip_tokenizer()
        processor = GADMSProcessor(make_image_processor(HEIGHT, WIDTH), tokenizer)
        model, clip = build_models(device)
        corpus = build_corpus(settings.loader_samples, workdir)
        bench = Bench(settings, device, workdir, processor, model, clip, corpus)
        rows = training_step_rows(bench)
        rows.append(gass_row(bench))
        rows.append(mim_memory_row(bench))
        rows += embedding_rows(bench)
        rows.append(ranking_row(bench))
        rows.append(data_loader_row(bench))
        rows += score_bank_rows(bench)
        if device.type == "cuda":
            rows += vit_b16_cuda_rows(bench)
    report = {"machine": machine(), "settings": {**asdict(settings), "torch_threads": torch.get_num_threads(),
                                                  "interop_threads": torch.get_num_interop_threads()},
              "seconds": time.perf_counter() - started,
              "rows": [asdict(row) for row in rows]}
    print(table(rows))
    meta = report["machine"]
    print(f"\n{meta['date']}  {meta['cpu_model']}  nproc={meta['nproc']}  torch threads={settings.threads}  "
          f"rev {meta['git_revision']}  {report['seconds']:.0f} s  ({meta['command']})")
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2, default=float) + "\n")
    return rows


if __name__ == "__main__":
    main()
