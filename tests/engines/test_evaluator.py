"""SAMMixEvaluator: metrics of known predictions, the liver-free gate, per-case details."""

from __future__ import annotations

import math

import pytest

from tests.engines.conftest import Oracle, run_evaluator, write_mask_store


def test_perfect_predictions(tmp_path):
    ev = run_evaluator(Oracle(), write_mask_store(tmp_path / "s.h5"))
    m = ev.state.metrics
    assert m["slice2d_dice"] == pytest.approx(1.0) and m["slice2d_hd"] == pytest.approx(0.0)
    assert m["volume3d_dice"] == pytest.approx(1.0) and m["volume3d_hd95"] == pytest.approx(0.0)
    assert m["cls_accuracy"] == 1.0 and m["cls_f1"] == pytest.approx(1.0) and m["cls_auc"] == 1.0
    cases = ev.state.metric_details["volume3d"]
    assert [c["case_id"] for c in cases] == ["case0", "case1"] and all(c["slices"] == 6 for c in cases)


def test_gated_slices_are_empty_and_hd_is_bounded(tmp_path):
    ev = run_evaluator(Oracle(says_liver=False), write_mask_store(tmp_path / "s.h5"))
    m = ev.state.metrics
    assert m["slice2d_dice"] == 0.0
    assert m["slice2d_hd"] == pytest.approx(math.hypot(32, 32))  # empty prediction: the image diagonal
    assert m["volume3d_hd95"] == pytest.approx(math.sqrt((32 * 0.8) ** 2 * 2 + (6 * 2.5) ** 2), rel=1e-5)
