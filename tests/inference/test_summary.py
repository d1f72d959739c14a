"""Per-case summary: volume in mL, canonical slice range, confidence, quality flags."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from sam_mix_monai.inference import AxialGeometry, case_summary
from sam_mix_monai.inference.summary import write_summary


def test_volume_slices_and_flags(tmp_path: Path) -> None:
    aff = np.diag([-2.0, -2.0, -5.0, 1.0])  # LPI: array z runs inferior-wards
    geo = AxialGeometry(aff, (50, 50, 10))
    mask = np.zeros((50, 50, 10), np.uint8)
    mask[10:40, 10:40, 0:3] = 1  # array slices 0-2 = canonical 7-9
    prob = np.linspace(0.3, 0.9, 10).astype(np.float32)
    iou = np.full(10, 0.9, np.float32)
    s = case_summary(mask, geo, prob, iou, case="x")
    assert s["case"] == "x" and s["orientation"] == "LPI"
    assert s["liver_volume_ml"] == 30 * 30 * 3 * 20 / 1000
    assert s["slices_with_liver"] == 3 and s["liver_slice_range"] == [7, 9]
    assert s["mean_liver_prob"] == round(float(prob[7:].mean()), 4)
    # The scan's last slice cuts the mask: its 54 mL are a lower bound, not flagged as too small.
    assert s["anatomy"]["cut_by_scan"] == "superior" and not any("volume" in r for r in s["quality_reasons"])
    assert s["quality"] == "check" and any("confidence" in r for r in s["quality_reasons"])  # p near 0.5 mid-scan
    mask[..., 0] = 0  # canonical 7-8: no longer cut, so too small
    s = case_summary(mask, geo, prob, iou, case="x")
    assert s["anatomy"]["cut_by_scan"] is None and any("volume 36 mL" in r for r in s["quality_reasons"])
    path = write_summary(s, tmp_path / "s.json")
    assert json.loads(path.read_text())["slices"] == 10


def test_no_scores_and_empty_mask() -> None:
    geo = AxialGeometry(np.eye(4), (8, 8, 8))
    s = case_summary(np.zeros((8, 8, 8), np.uint8), geo)
    assert s["mean_classifier_confidence"] is None and s["mean_predicted_iou"] is None
    assert s["quality_reasons"] == ["no liver found"] and s["liver_slice_range"] is None


def test_gated_slices_nan_iou_do_not_count() -> None:
    """Slices the classifier gate skipped carry NaN IoU (SAM never ran there) and hold no mask."""
    geo = AxialGeometry(np.eye(4), (20, 20, 6))  # RAS: array z = canonical z
    mask = np.zeros((20, 20, 6), np.uint8)
    mask[5:15, 5:15, 2:4] = 1
    prob = np.array([0.1, 0.2, 0.9, 0.95, 0.3, 0.1], np.float32)
    iou = np.array([np.nan, np.nan, 0.8, 0.6, np.nan, np.nan], np.float32)
    s = case_summary(mask, geo, prob, iou)
    assert s["mean_predicted_iou"] == 0.7 and s["slices_with_liver"] == 2
    assert s["mean_classifier_confidence"] == round(float(np.maximum(prob, 1 - prob).mean()), 4)
    # Everything gated: no mask, no IoU at all; no warning about an empty mean.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = case_summary(np.zeros_like(mask), geo, prob, np.full(6, np.nan, np.float32))
    assert s["mean_predicted_iou"] is None and s["mean_liver_prob"] is None
    assert s["quality_reasons"] == ["no liver found"]
