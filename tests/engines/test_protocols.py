"""slice2d / volume3d protocols and classification metrics, checked on known predictions."""

from __future__ import annotations

import math

import pytest
import torch
from monai.metrics import HausdorffDistanceMetric

from sam_mix_monai.data import SliceDataset
from sam_mix_monai.engines.protocols import BoundedHausdorffDistanceMetric
from tests.engines.conftest import SPACING, Oracle, run_evaluator, write_mask_store

def test_volume3d_matches_monai_on_stacked_cases(tmp_path):
    path = write_mask_store(tmp_path / "s.h5")

    class Shifted(Oracle):
        def forward(self, image):
            out = super().forward(image)
            out["mask_logits"] = torch.roll(out["mask_logits"], shifts=2, dims=-1)
            return out

    ev = run_evaluator(Shifted(), path, ("volume3d",))
    ds = SliceDataset(path, "test")
    for c, row in enumerate(ev.state.metric_details["volume3d"]):
        items = sorted((ds[i] for i in range(len(ds)) if ds[i]["case_id"] == f"case{c}"), key=lambda d: d["slice_index"])
        y = torch.stack([d["mask"][0] for d in items], -1)[None, None]
        p = torch.roll(y, 2, dims=-2)
        ref = HausdorffDistanceMetric(include_background=True, percentile=95)(p, y, spacing=list(SPACING))
        assert row["hd95_mm"] == pytest.approx(float(ref), rel=1e-5)
        inter = (p * y).sum()
        assert row["dice"] == pytest.approx(float(2 * inter / (p.sum() + y.sum())), rel=1e-6)


def test_bounded_hausdorff():
    m = BoundedHausdorffDistanceMetric()
    y = torch.zeros(3, 1, 10, 10)
    p = torch.zeros(3, 1, 10, 10)
    y[0, :, 2:5, 2:5] = 1
    p[0, :, 2:5, 3:6] = 1
    y[1, :, 2:5, 2:5] = 1  # missed
    p[2, :, 1:3, 1:3] = 1  # no liver: left out
    hd = m(p, y)
    assert hd[0].item() == pytest.approx(1.0) and hd[1].item() == pytest.approx(math.hypot(10, 10))
    assert math.isnan(hd[2].item())
