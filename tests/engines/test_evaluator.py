"""SAMMixEvaluator: metrics of known predictions, the liver-free gate, per-case details."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ignite.engine import Events

from sam_mix_monai.data.h5store import CaseSlices, SliceStoreWriter
from sam_mix_monai.engines.evaluator import build_evaluator
from tests.engines.conftest import SPACING, Oracle, run_evaluator, write_mask_store


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


def _store(path, pairs, spacing=SPACING):
    """One test case whose slices are ``(prediction, truth)`` pairs: the image is what ``Oracle`` predicts."""
    size = pairs[0][0].shape[0]
    image = np.stack([p for p, _ in pairs]).astype(np.float32)
    mask = np.stack([t for _, t in pairs]).astype(np.uint8)
    n = len(pairs)
    with SliceStoreWriter(path, size) as w:
        w.append(CaseSlices("c0", "synthetic", image, mask, mask.reshape(n, -1).max(1), np.arange(n),
                            np.array(spacing, np.float32), np.eye(4), (size, size, n)), split="test")
    return path


def _box(y0, y1, x0, x1, size=32):
    a = np.zeros((size, size), np.float32)
    a[y0:y1, x0:x1] = 1
    return a


def _pairs():
    empty = np.zeros((32, 32), np.float32)
    return [
        (_box(0, 10, 5, 15), _box(0, 10, 0, 10)),  # 100 px each, 50 overlap: Dice 0.5
        (_box(20, 22, 20, 22), _box(20, 22, 20, 22)),  # 4 px exact: Dice 1
        (_box(5, 10, 5, 9), empty),  # false positive on a liver-free slice
        (empty, empty),  # nothing, nothing
        (empty, _box(12, 16, 12, 16)),  # a missed liver slice (empty prediction)
    ]


def test_slice2d_dice_is_the_per_slice_mean_not_the_pooled_dice(tmp_path):
    m = run_evaluator(Oracle(), _store(tmp_path / "s.h5", _pairs()[:2]), ("slice2d",)).state.metrics
    assert m["slice2d_dice"] == pytest.approx((0.5 + 1.0) / 2)  # pooled would be 2*54/208 = 0.519
    assert m["slice2d_dice"] != pytest.approx(2 * 54 / 208, abs=1e-3)


def test_empty_reference_slices_are_left_out_of_dice_and_hd(tmp_path):
    with_empty = run_evaluator(Oracle(), _store(tmp_path / "a.h5", _pairs()[:4]), ("slice2d",)).state.metrics
    without = run_evaluator(Oracle(), _store(tmp_path / "b.h5", _pairs()[:2]), ("slice2d",)).state.metrics
    assert with_empty["slice2d_dice"] == pytest.approx(without["slice2d_dice"])  # the false positive is not scored
    assert with_empty["slice2d_hd"] == pytest.approx(without["slice2d_hd"])


def test_hd_over_predicted_slices_and_missed_count(tmp_path):
    m = run_evaluator(Oracle(), _store(tmp_path / "s.h5", _pairs()), ("slice2d",)).state.metrics
    hd_a = 5.0  # the predicted box is the true one shifted 5 columns
    assert m["slice2d_hd_predicted"] == pytest.approx((hd_a + 0.0) / 2)  # the missed slice left out
    assert m["slice2d_missed"] == 1  # liver slices with an empty prediction
    assert m["slice2d_hd"] == pytest.approx((hd_a + 0.0 + math.hypot(32, 32)) / 3)  # the old figure, kept
    assert m["slice2d_dice"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)


class Confident(Oracle):
    """An ``Oracle`` whose classifier gives liver probability 0.7 on bright slices, with gate 0.9."""

    cls_threshold = 0.9

    def forward(self, image):
        out = super().forward(image)
        bright = image.flatten(1).amax(1) > 0.5
        p = torch.where(bright, torch.tensor(0.7), torch.tensor(0.1))
        out["class_logits"] = torch.stack([torch.zeros_like(p), torch.log(p / (1 - p))], 1)
        return out


def test_classification_metrics_use_the_gate_threshold(tmp_path):
    ev = run_evaluator(Confident(), write_mask_store(tmp_path / "s.h5"), ("slice2d",))
    m = ev.state.metrics
    assert m["slice2d_dice"] == 0.0  # every liver slice gated at 0.9
    # 0.7 < 0.9: every slice is called liver-free, so accuracy is the share of liver-free slices (4 of 12)
    assert m["cls_accuracy"] == pytest.approx(4 / 12)
    assert m["cls_f1"] == pytest.approx(0.0)


def test_sam_pp_prediction_does_not_depend_on_the_reference(tmp_path):
    from sam_mix_monai.engines.loaders import evaluation_loader
    from sam_mix_monai.networks import ModelConfig, build_model

    torch.manual_seed(0)
    net = build_model(ModelConfig(name="sam_pp", size="compact", image_size=64), load_pretrained=False).eval()
    img = [_box(4, 28, 4, 28) * 0.5 + _box(8, 20, 10, 24) * 0.4 for _ in range(3)]
    truths = ([_box(8, 20, 10, 24), _box(2, 6, 2, 6), np.zeros((32, 32), np.float32)],
              [np.zeros((32, 32), np.float32)] * 3)
    preds = []
    for k, t in enumerate(truths):
        store = _store(tmp_path / f"s{k}.h5", list(zip(img, t)))
        ev = build_evaluator(net, evaluation_loader(store, "test", batch_size=3), "cpu", ("slice2d",))
        got = []
        ev.add_event_handler(Events.ITERATION_COMPLETED, lambda e: got.append(e.state.output["pred"].clone()))
        ev.run()
        preds.append(torch.cat(got))
    assert torch.equal(preds[0], preds[1])
    assert preds[0].sum() > 0  # not trivially empty: the network segments something on every slice


def test_oracle_point_is_an_explicit_option(tmp_path):
    from sam_mix_monai.engines.loaders import evaluation_loader
    from sam_mix_monai.networks import ModelConfig, build_model

    torch.manual_seed(0)
    net = build_model(ModelConfig(name="sam_pp", size="compact", image_size=64), load_pretrained=False).eval()
    img = [_box(4, 28, 4, 28) * 0.5 for _ in range(2)]
    outs = {}
    for truth in ("a", "b"):
        t = _box(2, 8, 2, 8) if truth == "a" else _box(24, 30, 24, 30)
        store = _store(tmp_path / f"{truth}.h5", [(i, t) for i in img])
        ev = build_evaluator(net, evaluation_loader(store, "test", batch_size=2), "cpu", ("slice2d",), point_prompt="oracle")
        got = []
        ev.add_event_handler(Events.ITERATION_COMPLETED, lambda e: got.append(e.state.output["pred"].clone()))
        ev.run()
        outs[truth] = torch.cat(got)
    assert not torch.equal(outs["a"], outs["b"])  # the oracle row does read the reference (its point)
