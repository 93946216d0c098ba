"""The curation run: input -> person filter -> captions -> WebPerson-form Parquet shards.

The input is planned into work units (`sources.plan_input`); a process with
`shard_index=i, num_shards=n` does the units whose index is `i` modulo `n`, so an array job of
`n` tasks (or `n` machines sharing the output folder, or writing separate folders that are
merged by copying) covers the input exactly once. Finished units are skipped, so rerunning
the same command after a crash resumes it. Everything that can be checked up front (input,
templates, output consistency, loading every model) is checked before the first image.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from PIL import Image
from tqdm.auto import tqdm

from .captioning import Captioner, CaptionerConfig, clean_caption, has_unfilled_placeholder
from .hf_loading import resolve_device
from .person_filter import PersonCrop, PersonFilter, PersonFilterConfig
from .report import CurationStats, RejectReason
from .sources import (
    INPUT_FORMATS,
    FetchSettings,
    InputPlan,
    SourceRef,
    WorkUnit,
    load_image,
    plan_input,
    read_unit,
)
from .templates import load_templates
from .writer import (
    FEATURES,
    REPORT_FILE,
    atomic_write_text,
    check_manifest,
    finished_stats,
    manifest_path,
    remove_stale_tmp,
    shard_name,
    shard_path,
    write_dataset_card,
    write_shard,
)

logger = logging.getLogger(__name__)


@dataclass
class PipelineArguments:
    """Input, output, sharding and I/O of a curation run."""

    input: str = field(
        metadata={
            "help": "image folder, text file of URLs/paths, Parquet file/folder, WebDataset .tar file/folder, "
            "or a glob of these"
        }
    )
    output_dir: str = field(metadata={"help": "output dataset folder (Parquet shards + README.md)"})
    input_format: str = field(default="auto", metadata={"help": f"one of {INPUT_FORMATS}"})
    templates: str | None = field(
        default=None,
        metadata={
            "help": "templates file (.json or .txt) from the `templates` command; default: built-in set"
        },
    )
    shard_size: int = field(
        default=1000,
        metadata={
            "help": "input images per work unit (= per output shard); a raw web crawl keeps about 1%% of its "
            "images, so raise it there (e.g. 100000) for output shards of a useful size"
        },
    )
    shard_index: int = field(
        default=0, metadata={"help": "this process does the units whose index modulo num_shards is this"}
    )
    num_shards: int = field(default=1, metadata={"help": "number of processes sharing the work"})
    image_column: str | None = field(default=None, metadata={"help": "Parquet column with image bytes"})
    url_column: str | None = field(default=None, metadata={"help": "Parquet column with image URLs"})
    url_timeout: float = field(default=10.0, metadata={"help": "seconds per download attempt"})
    url_retries: int = field(default=2, metadata={"help": "extra download attempts after a failure"})
    url_backoff: float = field(default=1.0, metadata={"help": "seconds before the first retry (doubles)"})
    io_threads: int = field(default=8, metadata={"help": "threads that download and decode images"})
    device: str = field(
        default="auto", metadata={"help": "'auto' (first GPU, else CPU), 'cpu', 'cuda:1', ..."}
    )
    seed: int = field(default=0, metadata={"help": "seed of template choice and sampling"})
    jpeg_quality: int = field(default=95, metadata={"help": "JPEG quality of the stored crops"})

    def __post_init__(self) -> None:
        if self.num_shards < 1 or not 0 <= self.shard_index < self.num_shards:
            raise ValueError(
                f"need 0 <= shard_index < num_shards, got shard_index={self.shard_index}, num_shards={self.num_shards}"
            )
        if self.url_retries < 0 or self.url_timeout <= 0 or self.url_backoff < 0 or self.io_threads < 1:
            raise ValueError(
                "need url_retries >= 0, url_timeout > 0, url_backoff >= 0 and io_threads >= 1, got "
                f"{self.url_retries}, {self.url_timeout}, {self.url_backoff}, {self.io_threads}"
            )
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")


def _manifest(
    plan: InputPlan,
    args: PipelineArguments,
    filter_config: PersonFilterConfig,
    caption_config: CaptionerConfig,
    templates: list[str],
) -> dict[str, Any]:
    """Everything that decides the content of a shard (not batch sizes, devices or dtypes)."""
    criteria = {k: v for k, v in asdict(filter_config).items() if k != "filter_batch_size"}
    captioning = {
        k: v
        for k, v in asdict(caption_config).items()
        if k not in ("caption_batch_size", "caption_backend", "caption_dtype")
    }
    return {
        "input_format": plan.format,
        "input_digest": plan.digest(),
        "units_total": len(plan.units),
        "shard_size": args.shard_size,
        "seed": args.seed,
        "person_filter": criteria,
        "captioner": captioning,
        "templates": templates,
    }


def _prefetched(
    pool: ThreadPoolExecutor, refs: list[SourceRef], batch_size: int, fetch: FetchSettings
) -> Iterator[list[tuple[Image.Image | None, RejectReason | None]]]:
    """Loaded batches in order, the next batch downloading while the current one is on the models."""
    batches = [refs[i : i + batch_size] for i in range(0, len(refs), batch_size)]
    pending = [pool.submit(load_image, ref, fetch) for ref in batches[0]] if batches else []
    for number in range(len(batches)):
        current = pending
        if number + 1 < len(batches):
            pending = [pool.submit(load_image, ref, fetch) for ref in batches[number + 1]]
        yield [future.result() for future in current]


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


@dataclass
class _UnitState:
    """What one unit accumulates: its rows, its counts, and persons still waiting for captions."""

    unit: WorkUnit
    name: str
    refs: list[SourceRef]
    stats: CurationStats
    columns: dict[str, list] = field(default_factory=lambda: {name: [] for name in FEATURES})
    pending: list[tuple[int, int, PersonCrop]] = field(default_factory=list)  # (item, person, crop)
    images_with_persons: list[int] = field(default_factory=list)
    images_with_rows: set[int] = field(default_factory=set)
    caption_failures: dict[int, RejectReason] = field(default_factory=dict)


class _UnitWorker:
    """Turns one work unit into shard columns and counts."""

    def __init__(
        self,
        person_filter: PersonFilter,
        captioner: Captioner,
        templates: list[str],
        args: PipelineArguments,
        progress: tqdm,
    ):
        self.person_filter = person_filter
        self.captioner = captioner
        self.templates = templates
        self.args = args
        self.progress = progress
        self.fetch = FetchSettings(args.url_timeout, args.url_retries, args.url_backoff)

    def _templates_for(self, unit: WorkUnit, item: int) -> tuple[str, str]:
        """Two different templates (if there are two), fixed by (seed, unit, item) so reruns agree."""
        if len(self.templates) < 2:
            return self.templates[0], self.templates[0]
        first, second = random.Random(f"{self.args.seed}:{unit.index}:{item}").sample(self.templates, 2)
        return first, second

    def _caption(self, state: _UnitState) -> None:
        """Caption every pending person (two prompts each) and turn the good ones into rows."""
        pairs = [self._templates_for(state.unit, item) for item, _, _ in state.pending]
        images = [crop.image for _, _, crop in state.pending for _ in range(2)]
        answers = self.captioner(images, [t for pair in pairs for t in pair])
        max_words = self.captioner.config.max_words
        for k, (item, person, crop) in enumerate(state.pending):
            cleaned = [clean_caption(answers[2 * k + j], max_words) for j in range(2)]
            captions = [text for text, _ in cleaned]
            if not all(captions):
                state.caption_failures.setdefault(item, RejectReason.EMPTY_CAPTION)
                continue
            if any(has_unfilled_placeholder(c) for c in captions):
                state.caption_failures.setdefault(item, RejectReason.UNFILLED_TEMPLATE)
                continue
            image_path = f"{state.name}/{item:06d}_{person}.jpg"
            row = {
                "image": {"bytes": _jpeg(crop.image, self.args.jpeg_quality), "path": image_path},
                "image_path": image_path,
                "caption1": captions[0],
                "caption2": captions[1],
                "source": state.refs[item].source,
                "person_box": list(crop.box),
                "detection_confidence": crop.confidence,
                "template1": pairs[k][0],
                "template2": pairs[k][1],
            }
            for key, value in row.items():
                state.columns[key].append(value)
            state.images_with_rows.add(item)
            state.stats.persons_kept += 1
            state.stats.captions_written += 2
            state.stats.captions_truncated += sum(truncated for _, truncated in cleaned)
        state.pending.clear()
        self.progress.set_postfix(captioned=state.stats.persons_kept)

    def __call__(
        self, plan: InputPlan, unit: WorkUnit, total: int, pool: ThreadPoolExecutor
    ) -> tuple[dict[str, list], CurationStats]:
        started = time.perf_counter()
        refs = read_unit(plan, unit)
        if unit.stop is None:  # a WebDataset shard: its size is known only now
            self.progress.total = (self.progress.total or 0) + len(refs)
            self.progress.refresh()
        state = _UnitState(unit, shard_name(unit.index, total), refs, CurationStats(images_in=len(refs)))
        torch.manual_seed(self.args.seed + unit.index)
        batch_size = self.person_filter.config.filter_batch_size
        flush_at = max(1, self.captioner.config.caption_batch_size // 2)  # persons per full caption batch
        for number, loaded in enumerate(_prefetched(pool, refs, batch_size, self.fetch)):
            readable = [
                (number * batch_size + i, image) for i, (image, _) in enumerate(loaded) if image is not None
            ]
            for _, reason in loaded:
                if reason is not None:
                    state.stats.reject(reason)
            outcomes = self.person_filter([image for _, image in readable])
            for (item, _), outcome in zip(readable, outcomes):
                if outcome.reason is not None:
                    state.stats.reject(outcome.reason)
                    continue
                state.images_with_persons.append(item)
                state.pending += [(item, p, crop) for p, crop in enumerate(outcome.persons)]
            if len(state.pending) >= flush_at:
                self._caption(state)
            self.progress.update(len(loaded))
        if state.pending:
            self._caption(state)
        for item in state.images_with_persons:
            if item not in state.images_with_rows:  # every person of the image failed captioning
                state.stats.reject(state.caption_failures[item])
        state.stats.images_kept = len(state.images_with_rows)
        state.stats.seconds = time.perf_counter() - started
        return state.columns, state.stats


def _warnings(dataset: CurationStats, finished: int, total: int) -> list[str]:
    """What makes the folder unusable as a corpus (today: no row at all, which `load_dataset` refuses)."""
    if dataset.persons_kept:
        return []
    rejected = ", ".join(f"{reason} {count}" for reason, count in sorted(dataset.rejected.items())) or "none"
    pending = f"; {total - finished} of {total} units are not finished yet" if finished < total else ""
    return [
        f"no person was kept from the {dataset.images_in} input images of the finished units (rejected: "
        f"{rejected}){pending}: the folder holds no rows, so load_dataset and training refuse it. Check the "
        "rejection reasons, add images, or relax the person filter (--help lists its thresholds)."
    ]


def run_curation(
    args: PipelineArguments,
    filter_config: PersonFilterConfig | None = None,
    caption_config: CaptionerConfig | None = None,
) -> dict[str, Any]:
    """Curate `args.input` into `args.output_dir`; returns the report (also written as JSON)."""
    started = time.perf_counter()
    filter_config = filter_config or PersonFilterConfig()
    caption_config = caption_config or CaptionerConfig()
    templates = load_templates(args.templates)
    plan = plan_input(args.input, args.input_format, args.shard_size, args.image_column, args.url_column)
    total = len(plan.units)
    manifest = _manifest(plan, args, filter_config, caption_config, templates)
    if os.path.exists(manifest_path(args.output_dir)):
        check_manifest(args.output_dir, manifest)  # refuse a mismatched resume before loading any model
    mine = [u for u in plan.units if u.index % args.num_shards == args.shard_index]
    todo = [u for u in mine if not os.path.exists(shard_path(args.output_dir, u.index, total))]
    this_run = CurationStats()
    if todo:
        device = resolve_device(args.device)
        person_filter = PersonFilter(filter_config, device=device)
        captioner = Captioner(caption_config, device=device, seed=args.seed)
        check_manifest(args.output_dir, manifest)  # a fresh output: record the manifest now
        known = sum(u.stop - u.start for u in todo if u.stop is not None)
        with (
            tqdm(
                total=known, desc=f"curating shard {args.shard_index}/{args.num_shards}", unit="img"
            ) as progress,
            ThreadPoolExecutor(args.io_threads) as pool,
        ):
            worker = _UnitWorker(person_filter, captioner, templates, args, progress)
            for unit in todo:
                remove_stale_tmp(args.output_dir, unit.index, total)
                columns, stats = worker(plan, unit, total, pool)
                write_shard(args.output_dir, unit.index, total, columns, stats)
                this_run.merge(stats)
    elif mine:
        logger.info(
            "all %d units of shard %d/%d are already finished", len(mine), args.shard_index, args.num_shards
        )
    dataset, finished = finished_stats(args.output_dir, total)
    report = {
        "output_dir": os.path.abspath(args.output_dir),
        "units_total": total,
        "units_finished": finished,
        "warnings": _warnings(dataset, finished, total),
        "dataset": dataset.to_dict(),
        "this_run": {
            "shard_index": args.shard_index,
            "num_shards": args.num_shards,
            "units_processed": len(todo),
            "units_skipped": len(mine) - len(todo),
            **this_run.to_dict(),
            "seconds": round(time.perf_counter() - started, 3),
        },
    }
    os.makedirs(args.output_dir, exist_ok=True)
    atomic_write_text(os.path.join(args.output_dir, REPORT_FILE), json.dumps(report, indent=1))
    write_dataset_card(args.output_dir, report, manifest)
    return report


__all__ = ["PipelineArguments", "run_curation"]
