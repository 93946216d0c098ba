"""Person filter: the pure box/keypoint criteria, and the YOLO plumbing on random-weight models."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gadms_hf.curation.errors import CurationSetupError
from gadms_hf.curation.person_filter import (
    HEAD_KEYPOINTS,
    HIP_KEYPOINTS,
    PersonFilter,
    PersonFilterConfig,
    box_iou,
    box_rejection,
    crop_region,
    furthest_reason,
    keypoint_rejection,
)
from gadms_hf.curation.report import FILTER_STAGES, RejectReason

PAPER = PersonFilterConfig()


def relaxed_config(**overrides) -> PersonFilterConfig:
    """Thresholds that any random-weight detection passes, to exercise the keep path."""
    values = dict(
        detector="yolo11n.yaml",
        pose_model="yolo11n-pose.yaml",
        min_confidence=0.0,
        min_short_side=0.0,
        min_aspect_ratio=0.0,
        max_aspect_ratio=1e6,
        keypoint_confidence=0.0,
        min_visible_keypoints=0,
        min_head_keypoints=0,
        min_hip_keypoints=0,
        detector_predict_confidence=0.0,
        pose_predict_confidence=0.0,
        pose_match_iou=0.0,
        image_size=256,
    )
    values.update(overrides)
    return PersonFilterConfig(**values)


def pose(visible: list[int], confidence: float = 0.9) -> np.ndarray:
    keypoints = np.zeros((17, 3), dtype=np.float32)
    keypoints[:, :2] = np.arange(34).reshape(17, 2)
    keypoints[visible, 2] = confidence
    return keypoints


@pytest.mark.parametrize(
    ("box", "confidence", "expected"),
    [
        ((0, 0, 100, 250), 0.90, None),
        ((0, 0, 100, 250), 0.85, RejectReason.LOW_CONFIDENCE),  # "> 0.85" is strict
        ((0, 0, 100, 250), 0.851, None),
        ((0, 0, 90, 250), 0.9, RejectReason.TOO_SMALL),  # shorter side must exceed 90
        ((0, 0, 91, 250), 0.9, None),
        ((10, 10, 110, 209), 0.9, RejectReason.BAD_ASPECT_RATIO),  # 1.99:1
        ((10, 10, 110, 210), 0.9, None),  # exactly 2:1
        ((10, 10, 110, 410), 0.9, None),  # exactly 4:1
        ((10, 10, 110, 411), 0.9, RejectReason.BAD_ASPECT_RATIO),  # 4.01:1
        ((0, 0, 300, 150), 0.9, RejectReason.BAD_ASPECT_RATIO),  # lying down / wider than tall
        ((50, 0, 50, 400), 0.9, RejectReason.TOO_SMALL),  # degenerate, zero width
    ],
)
def test_box_criteria_follow_the_paper(box, confidence, expected):
    assert box_rejection(box, confidence, PAPER) == expected


def test_box_criteria_are_checked_in_stage_order():
    # fails everything: the first failing stage is reported
    assert box_rejection((0, 0, 10, 10), 0.1, PAPER) == RejectReason.LOW_CONFIDENCE
    assert box_rejection((0, 0, 10, 10), 0.9, PAPER) == RejectReason.TOO_SMALL


def test_box_criteria_thresholds_are_arguments():
    loose = PersonFilterConfig(
        min_confidence=0.5, min_short_side=10, min_aspect_ratio=1.0, max_aspect_ratio=1.5
    )
    assert box_rejection((0, 0, 20, 25), 0.6, loose) is None
    assert box_rejection((0, 0, 20, 25), 0.6, PAPER) == RejectReason.LOW_CONFIDENCE
    assert box_rejection((0, 0, 20, 25), 0.9, PAPER) == RejectReason.TOO_SMALL


def test_keypoint_criteria_follow_the_paper():
    head, hips = list(HEAD_KEYPOINTS), list(HIP_KEYPOINTS)
    assert keypoint_rejection(pose(list(range(17))), PAPER) is None
    # exactly 8 visible, with two head keypoints and one hip: kept
    assert keypoint_rejection(pose([0, 1, 5, 6, 7, 8, 11, 13]), PAPER) is None
    # 7 visible: too few
    assert keypoint_rejection(pose([0, 1, 5, 6, 7, 11, 13]), PAPER) == RejectReason.FEW_KEYPOINTS
    # plenty visible but no hip
    no_hips = [i for i in range(17) if i not in hips]
    assert keypoint_rejection(pose(no_hips), PAPER) == RejectReason.NO_HIP
    # plenty visible, a hip, but a single head keypoint
    one_head = [0] + [i for i in range(17) if i not in head]
    assert keypoint_rejection(pose(one_head), PAPER) == RejectReason.FEW_HEAD_KEYPOINTS


def test_keypoint_visibility_uses_the_confidence_threshold():
    keypoints = pose(list(range(17)), confidence=0.4)
    assert keypoint_rejection(keypoints, PAPER) == RejectReason.FEW_KEYPOINTS  # 0.4 < 0.5
    assert keypoint_rejection(keypoints, PersonFilterConfig(keypoint_confidence=0.3)) is None


def test_keypoints_must_be_coco_17_with_confidence():
    with pytest.raises(ValueError, match=r"\(17, 3\)"):
        keypoint_rejection(np.zeros((17, 2)), PAPER)
    with pytest.raises(ValueError, match="COCO"):
        keypoint_rejection(np.zeros((133, 3)), PAPER)


def test_box_iou():
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [5, 0, 15, 10], [3, 3, 3, 3]], dtype=np.float32)
    np.testing.assert_allclose(box_iou((0, 0, 10, 10), boxes), [1.0, 0.0, 1 / 3, 0.0], rtol=1e-6)
    assert box_iou((0, 0, 10, 10), np.zeros((0, 4))).shape == (0,)


def test_crop_region_adds_margin_and_stays_inside_the_image():
    assert crop_region((100, 100, 200, 300), (1000, 1000), 0.1) == (90, 80, 210, 320)
    assert crop_region((100, 100, 200, 300), (1000, 1000), 0.0) == (100, 100, 200, 300)
    assert crop_region((0, 0, 50, 100), (60, 90), 0.5) == (0, 0, 60, 90)
    left, upper, right, lower = crop_region((59.9, 89.9, 59.9, 89.9), (60, 90), 0.1)  # degenerate box
    assert 0 <= left < right <= 60 and 0 <= upper < lower <= 90


def test_furthest_reason_reports_the_best_candidate():
    assert furthest_reason([]) == RejectReason.NO_PERSON
    assert furthest_reason([RejectReason.LOW_CONFIDENCE, RejectReason.NO_HIP, RejectReason.TOO_SMALL]) == (
        RejectReason.NO_HIP
    )
    assert list(FILTER_STAGES).index(RejectReason.FEW_HEAD_KEYPOINTS) == len(FILTER_STAGES) - 1


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("min_confidence", 1.5, "min_confidence"),
        ("min_aspect_ratio", 5.0, "min_aspect_ratio"),
        ("crop_margin", -0.1, "crop_margin"),
        ("min_head_keypoints", 6, "head"),
        ("filter_batch_size", 0, "filter_batch_size"),
    ],
)
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        PersonFilterConfig(**{field: value})


@pytest.fixture(scope="module")
def asset_images() -> list[Image.Image]:
    # located without importing ultralytics (its import patches PIL.Image.open process-wide)
    assets = Path(importlib.util.find_spec("ultralytics").origin).parent / "assets"
    return [Image.open(assets / name).convert("RGB") for name in ("bus.jpg", "zidane.jpg")]


def test_random_weight_models_reject_with_a_reason_at_paper_thresholds(asset_images):
    person_filter = PersonFilter(
        PersonFilterConfig(detector="yolo11n.yaml", pose_model="yolo11n-pose.yaml", image_size=256)
    )
    outcomes = person_filter(asset_images)
    assert len(outcomes) == 2
    for outcome in outcomes:
        assert outcome.persons == []
        assert outcome.reason in FILTER_STAGES


def test_keep_path_crops_the_person(asset_images):
    person_filter = PersonFilter(relaxed_config(crop_margin=0.0, max_persons_per_image=2))
    outcomes = person_filter(asset_images)
    assert [o.reason for o in outcomes] == [None, None]
    for image, outcome in zip(asset_images, outcomes):
        assert 1 <= len(outcome.persons) <= 2
        for person in outcome.persons:
            x1, y1, x2, y2 = person.box
            assert 0 <= x1 < x2 <= image.width and 0 <= y1 < y2 <= image.height
            left, upper, right, lower = crop_region(person.box, image.size, 0.0)
            assert person.image.size == (right - left, lower - upper)
            assert person.visible_keypoints == 17  # every keypoint counts at keypoint_confidence 0


def test_a_strict_keypoint_rule_rejects_after_the_pose_stage(asset_images):
    # boxes pass, but random pose confidences (about 0.5) cannot meet 0.99: rejected at the pose stages
    person_filter = PersonFilter(relaxed_config(keypoint_confidence=0.99, min_visible_keypoints=8))
    outcomes = person_filter(asset_images)
    assert [o.reason for o in outcomes] == [RejectReason.FEW_KEYPOINTS] * 2


def test_unloadable_or_wrong_models_fail_with_one_clear_error(tmp_path):
    with pytest.raises(CurationSetupError, match="missing-detector.pt"):
        PersonFilter(relaxed_config(detector=str(tmp_path / "missing-detector.pt")))
    with pytest.raises(CurationSetupError, match="expected a 'pose' model"):
        PersonFilter(relaxed_config(pose_model="yolo11n.yaml"))
