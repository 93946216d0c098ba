"""Why images were dropped, and the counts a curation run reports."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class RejectReason(str, Enum):
    """Why an input image produced no dataset row.

    The person-filter reasons are listed in the order the criteria are applied, so that an
    image whose best candidate got furthest through the filter is reported by that failure
    (see `PersonFilter`).
    """

    MISSING_FILE = "missing_file"
    DOWNLOAD_FAILED = "download_failed"
    UNREADABLE_IMAGE = "unreadable_image"
    NO_PERSON = "no_person"
    LOW_CONFIDENCE = "low_confidence"
    TOO_SMALL = "too_small"
    BAD_ASPECT_RATIO = "bad_aspect_ratio"
    NO_POSE = "no_pose"
    FEW_KEYPOINTS = "few_keypoints"
    NO_HIP = "no_hip"
    FEW_HEAD_KEYPOINTS = "few_head_keypoints"
    EMPTY_CAPTION = "empty_caption"
    UNFILLED_TEMPLATE = "unfilled_template"


FILTER_STAGES: tuple[RejectReason, ...] = (
    RejectReason.NO_PERSON,
    RejectReason.LOW_CONFIDENCE,
    RejectReason.TOO_SMALL,
    RejectReason.BAD_ASPECT_RATIO,
    RejectReason.NO_POSE,
    RejectReason.FEW_KEYPOINTS,
    RejectReason.NO_HIP,
    RejectReason.FEW_HEAD_KEYPOINTS,
)


@dataclass
class CurationStats:
    """Counts for one work unit, or summed over many (`merge`).

    Each input image ends in exactly one of: `images_kept` (at least one person row) or one
    `rejected` reason, so `images_in == images_kept + sum(rejected.values())` always holds.
    """

    images_in: int = 0
    images_kept: int = 0
    persons_kept: int = 0
    captions_written: int = 0
    captions_truncated: int = 0
    rejected: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def reject(self, reason: RejectReason) -> None:
        self.rejected[reason.value] += 1

    def merge(self, other: CurationStats) -> None:
        self.images_in += other.images_in
        self.images_kept += other.images_kept
        self.persons_kept += other.persons_kept
        self.captions_written += other.captions_written
        self.captions_truncated += other.captions_truncated
        self.rejected.update(other.rejected)
        self.seconds += other.seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            "images_in": self.images_in,
            "images_kept": self.images_kept,
            "persons_kept": self.persons_kept,
            "captions_written": self.captions_written,
            "captions_truncated": self.captions_truncated,
            "rejected": dict(sorted(self.rejected.items())),
            "seconds": round(self.seconds, 3),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CurationStats:
        known = {reason.value for reason in RejectReason}
        unknown = set(data.get("rejected", {})) - known
        if unknown:
            raise ValueError(
                f"unknown rejection reason(s) {sorted(unknown)} in stats; expected some of {sorted(known)}"
            )
        return cls(
            images_in=int(data["images_in"]),
            images_kept=int(data["images_kept"]),
            persons_kept=int(data["persons_kept"]),
            captions_written=int(data["captions_written"]),
            captions_truncated=int(data["captions_truncated"]),
            rejected=Counter({k: int(v) for k, v in data.get("rejected", {}).items()}),
            seconds=float(data["seconds"]),
        )


def format_report(report: dict[str, Any]) -> str:
    """Human-readable lines for a report written by `run_curation`."""
    total = report["dataset"]
    run = report["this_run"]
    lines = [
        f"units finished: {report['units_finished']}/{report['units_total']} "
        f"(this run: {run['units_processed']} processed, {run['units_skipped']} already done, "
        f"shard {run['shard_index']}/{run['num_shards']})",
        f"images in: {total['images_in']}",
        f"images kept: {total['images_kept']}  persons kept: {total['persons_kept']}",
        f"captions written: {total['captions_written']} (truncated to the word limit: {total['captions_truncated']})",
    ]
    if total["rejected"]:
        lines.append("rejected:")
        lines += [f"  {reason}: {count}" for reason, count in total["rejected"].items()]
    else:
        lines.append("rejected: none")
    lines.append(
        f"time: {run['seconds']:.1f} s this run, {total['seconds']:.1f} s summed over finished units"
    )
    return "\n".join(lines)


__all__ = ["RejectReason", "FILTER_STAGES", "CurationStats", "format_report"]
