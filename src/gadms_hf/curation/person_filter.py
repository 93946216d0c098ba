"""Person filter: keep web images that show one clear, whole, upright pedestrian (docs/method.md §10.2).

An ultralytics YOLO detector proposes person boxes; each box must be confident, large enough
and pedestrian-shaped (taller than wide, 2:1 to 4:1). A YOLO pose model then confirms that
the body is actually visible: enough keypoints, including the head and a hip, which rules out
faces, torsos, crowds and mannequin-like false positives that a box alone lets through. The
geometric and keypoint criteria are pure functions over arrays, so they can be tested and
reused without any model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .errors import CurationSetupError
from .extras import import_curation_extra
from .report import FILTER_STAGES, RejectReason

# COCO keypoint order used by YOLO pose models: 0 nose, 1-2 eyes, 3-4 ears, ..., 11-12 hips.
HEAD_KEYPOINTS: tuple[int, ...] = (0, 1, 2, 3, 4)
HIP_KEYPOINTS: tuple[int, ...] = (11, 12)
NUM_COCO_KEYPOINTS = 17


@dataclass
class PersonFilterConfig:
    """Models and thresholds of the person filter; defaults follow the paper."""

    detector: str = field(
        default="yolo11n.pt",
        metadata={"help": "ultralytics detection model: a name/path of a .pt file or an architecture .yaml"},
    )
    pose_model: str = field(
        default="yolo11n-pose.pt",
        metadata={"help": "ultralytics pose model (COCO 17 keypoints): a .pt name/path or a .yaml"},
    )
    min_confidence: float = field(default=0.85, metadata={"help": "keep boxes with confidence > this"})
    min_short_side: float = field(
        default=90.0, metadata={"help": "keep boxes whose shorter side (px) > this"}
    )
    min_aspect_ratio: float = field(default=2.0, metadata={"help": "lowest box height:width kept"})
    max_aspect_ratio: float = field(default=4.0, metadata={"help": "highest box height:width kept"})
    keypoint_confidence: float = field(
        default=0.5, metadata={"help": "a keypoint is visible when its confidence >= this"}
    )
    min_visible_keypoints: int = field(default=8, metadata={"help": "at least this many visible keypoints"})
    min_head_keypoints: int = field(
        default=2, metadata={"help": "at least this many visible head keypoints (nose, eyes, ears)"}
    )
    min_hip_keypoints: int = field(default=1, metadata={"help": "at least this many visible hip keypoints"})
    crop_margin: float = field(
        default=0.1, metadata={"help": "crop margin added on each side, as a fraction of box width/height"}
    )
    max_persons_per_image: int = field(
        default=1, metadata={"help": "keep at most this many persons per image (most confident first)"}
    )
    detector_predict_confidence: float = field(
        default=0.25,
        metadata={"help": "detector's own score cut; lower than min_confidence so weak boxes are counted"},
    )
    pose_predict_confidence: float = field(default=0.25, metadata={"help": "pose model's own score cut"})
    pose_match_iou: float = field(
        default=0.5, metadata={"help": "a pose instance belongs to a box when their IoU >= this"}
    )
    person_class_id: int = field(
        default=0, metadata={"help": "detector class id of 'person', used when its names lack 'person'"}
    )
    image_size: int = field(default=640, metadata={"help": "YOLO inference size (pixels)"})
    filter_batch_size: int = field(default=16, metadata={"help": "images per detector/pose forward pass"})

    def __post_init__(self) -> None:
        for name in (
            "min_confidence",
            "keypoint_confidence",
            "detector_predict_confidence",
            "pose_predict_confidence",
            "pose_match_iou",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"PersonFilterConfig.{name} must be in [0, 1], got {value}")
        if not 0.0 <= self.min_aspect_ratio <= self.max_aspect_ratio:
            raise ValueError(
                "PersonFilterConfig needs 0 <= min_aspect_ratio <= max_aspect_ratio, got "
                f"{self.min_aspect_ratio} and {self.max_aspect_ratio}"
            )
        for name in (
            "min_short_side",
            "crop_margin",
            "min_visible_keypoints",
            "min_head_keypoints",
            "min_hip_keypoints",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"PersonFilterConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.min_head_keypoints > len(HEAD_KEYPOINTS) or self.min_hip_keypoints > len(HIP_KEYPOINTS):
            raise ValueError(
                f"PersonFilterConfig asks for {self.min_head_keypoints} head / {self.min_hip_keypoints} hip "
                f"keypoints, but COCO has only {len(HEAD_KEYPOINTS)} / {len(HIP_KEYPOINTS)}"
            )
        for name in ("max_persons_per_image", "image_size", "filter_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"PersonFilterConfig.{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class PersonCrop:
    """One kept pedestrian: the crop and where it came from (box in source-image pixels)."""

    image: Image.Image
    box: tuple[float, float, float, float]
    confidence: float
    visible_keypoints: int


@dataclass
class FilterOutcome:
    """Result for one image: the kept persons, or the reason none was kept."""

    persons: list[PersonCrop]
    reason: RejectReason | None


def box_rejection(box: Sequence[float], confidence: float, config: PersonFilterConfig) -> RejectReason | None:
    """Why a detected box (x1, y1, x2, y2) fails the box criteria, or None if it passes."""
    if not confidence > config.min_confidence:
        return RejectReason.LOW_CONFIDENCE
    width = float(box[2]) - float(box[0])
    height = float(box[3]) - float(box[1])
    if not min(width, height) > config.min_short_side:
        return RejectReason.TOO_SMALL
    if width <= 0 or not config.min_aspect_ratio <= height / width <= config.max_aspect_ratio:
        return RejectReason.BAD_ASPECT_RATIO
    return None


def keypoint_rejection(keypoints: np.ndarray, config: PersonFilterConfig) -> RejectReason | None:
    """Why a COCO-17 pose, shape (17, 3) as (x, y, confidence), fails the body criteria, or None."""
    keypoints = np.asarray(keypoints, dtype=np.float32)
    if keypoints.ndim != 2 or keypoints.shape[0] != NUM_COCO_KEYPOINTS or keypoints.shape[1] != 3:
        raise ValueError(
            f"keypoints must have shape ({NUM_COCO_KEYPOINTS}, 3) as (x, y, confidence), got {keypoints.shape}; "
            "the pose model must be a COCO-keypoint model"
        )
    visible = keypoints[:, 2] >= config.keypoint_confidence
    if int(visible.sum()) < config.min_visible_keypoints:
        return RejectReason.FEW_KEYPOINTS
    if int(visible[list(HIP_KEYPOINTS)].sum()) < config.min_hip_keypoints:
        return RejectReason.NO_HIP
    if int(visible[list(HEAD_KEYPOINTS)].sum()) < config.min_head_keypoints:
        return RejectReason.FEW_HEAD_KEYPOINTS
    return None


def box_iou(box: Sequence[float], boxes: np.ndarray) -> np.ndarray:
    """IoU of one (x1, y1, x2, y2) box with each row of `boxes` (N, 4); 0 where the union is empty."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    intersection = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    union = area + areas - intersection
    return np.divide(intersection, union, out=np.zeros_like(union), where=union > 0)


def crop_region(
    box: Sequence[float], image_size: tuple[int, int], margin: float
) -> tuple[int, int, int, int]:
    """Integer crop (left, upper, right, lower) of `box` grown by `margin` x its size on each side,
    clipped to the image (width, height) and never empty."""
    width, height = image_size
    box_w = float(box[2]) - float(box[0])
    box_h = float(box[3]) - float(box[1])
    left = int(np.floor(max(0.0, float(box[0]) - margin * box_w)))
    upper = int(np.floor(max(0.0, float(box[1]) - margin * box_h)))
    right = int(np.ceil(min(float(width), float(box[2]) + margin * box_w)))
    lower = int(np.ceil(min(float(height), float(box[3]) + margin * box_h)))
    left, upper = min(left, width - 1), min(upper, height - 1)
    return left, upper, max(right, left + 1), max(lower, upper + 1)


def furthest_reason(reasons: Sequence[RejectReason]) -> RejectReason:
    """The reason of the candidate that passed the most filter stages (ties: the first)."""
    if not reasons:
        return RejectReason.NO_PERSON
    return max(reasons, key=FILTER_STAGES.index)


def _import_yolo():
    """`ultralytics.YOLO`, without ultralytics' process-wide patch of `PIL.Image.open`.

    Importing ultralytics replaces `Image.open` with a wrapper that, on an unreadable file, tries
    to pip-install a HEIF plugin (and fails offline with ModuleNotFoundError). The rest of the
    process (datasets, evaluation) relies on Pillow's own errors, so the original is put back.
    Without ultralytics, an ImportError names the extra that installs it.
    """
    from PIL import Image

    original = Image.open
    try:
        return import_curation_extra("ultralytics").YOLO
    finally:
        Image.open = original


def _load_yolo(name: str, task: str, role: str):
    """Load an ultralytics model, turning every failure into one `CurationSetupError`."""
    YOLO = _import_yolo()

    try:
        model = YOLO(name)
    except Exception as exc:  # ultralytics raises FileNotFoundError, ConnectionError, RuntimeError...
        raise CurationSetupError(
            f"cannot load the {role} model {name!r}: {type(exc).__name__}: {exc}. Pass a local .pt weights "
            "file (e.g. yolo11n.pt / yolo11n-pose.pt from the Ultralytics releases, placed in the working "
            "directory) or an architecture .yaml (random weights, for tests only)."
        ) from exc
    if model.task != task:
        raise CurationSetupError(
            f"the {role} model {name!r} is a {model.task!r} model, expected a {task!r} model"
        )
    return model


class PersonFilter:
    """Runs the detector and the pose model on batches of PIL images and applies the criteria."""

    def __init__(self, config: PersonFilterConfig, device: str = "cpu"):
        self.config = config
        self.device = device
        self.detector = _load_yolo(config.detector, "detect", "person detector")
        self.pose_model = _load_yolo(config.pose_model, "pose", "pose")
        kpt_shape = list(getattr(self.pose_model.model, "kpt_shape", []) or [])
        if kpt_shape != [NUM_COCO_KEYPOINTS, 3]:
            raise CurationSetupError(
                f"the pose model {config.pose_model!r} predicts keypoints of shape {kpt_shape}, expected "
                f"[{NUM_COCO_KEYPOINTS}, 3] (COCO keypoints with confidences)"
            )
        names = {str(v).lower(): int(k) for k, v in self.detector.names.items()}
        self.person_class_id = names.get("person", config.person_class_id)

    def _predict(self, model, images: list[Image.Image], confidence: float, classes: list[int] | None):
        return model.predict(
            images,
            conf=confidence,
            classes=classes,
            imgsz=self.config.image_size,
            device=self.device,
            verbose=False,
        )

    def __call__(self, images: list[Image.Image]) -> list[FilterOutcome]:
        """One `FilterOutcome` per image, in order."""
        if not images:
            return []
        config = self.config
        detections = self._predict(
            self.detector, images, config.detector_predict_confidence, [self.person_class_id]
        )
        candidates: list[list[tuple[np.ndarray, float]]] = []
        reasons: list[list[RejectReason]] = []
        for result in detections:
            boxes = result.boxes.xyxy.cpu().numpy().reshape(-1, 4)
            scores = result.boxes.conf.cpu().numpy().reshape(-1)
            order = np.argsort(-scores, kind="stable")
            kept, failed = [], []
            for i in order:
                reason = box_rejection(boxes[i], float(scores[i]), config)
                if reason is None:
                    kept.append((boxes[i], float(scores[i])))
                else:
                    failed.append(reason)
            candidates.append(kept)
            reasons.append(failed)

        need_pose = [i for i, kept in enumerate(candidates) if kept]
        pose_by_image = {}
        if need_pose:
            poses = self._predict(
                self.pose_model, [images[i] for i in need_pose], config.pose_predict_confidence, None
            )
            pose_by_image = dict(zip(need_pose, poses))

        outcomes = []
        for i, image in enumerate(images):
            persons: list[PersonCrop] = []
            if i in pose_by_image:
                result = pose_by_image[i]
                pose_boxes = result.boxes.xyxy.cpu().numpy().reshape(-1, 4)
                pose_points = (
                    result.keypoints.data.cpu().numpy()
                    if result.keypoints is not None
                    else np.zeros((0, NUM_COCO_KEYPOINTS, 3))
                )
                for box, score in candidates[i]:
                    ious = box_iou(box, pose_boxes)
                    if ious.size == 0 or ious.max() < config.pose_match_iou:
                        reasons[i].append(RejectReason.NO_POSE)
                        continue
                    keypoints = pose_points[int(ious.argmax())]
                    reason = keypoint_rejection(keypoints, config)
                    if reason is not None:
                        reasons[i].append(reason)
                        continue
                    region = crop_region(box, image.size, config.crop_margin)
                    visible = int((keypoints[:, 2] >= config.keypoint_confidence).sum())
                    persons.append(
                        PersonCrop(image.crop(region), tuple(float(v) for v in box), score, visible)
                    )
                    if len(persons) == config.max_persons_per_image:
                        break
            reason = None if persons else furthest_reason(reasons[i])
            outcomes.append(FilterOutcome(persons=persons, reason=reason))
        return outcomes


__all__ = [
    "PersonFilterConfig",
    "PersonFilter",
    "PersonCrop",
    "FilterOutcome",
    "box_rejection",
    "keypoint_rejection",
    "box_iou",
    "crop_region",
    "furthest_reason",
    "HEAD_KEYPOINTS",
    "HIP_KEYPOINTS",
]
