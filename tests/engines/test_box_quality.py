"""Box-prompt quality: IoU with the reference liver box, centroid containment, the evaluator metric."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sam_mix_monai.engines.box_quality import box_quality, scale_boxes
from sam_mix_monai.networks.cam import mask_to_box
from tests.engines.conftest import run_evaluator, write_mask_store


def _square(size=16, y=(2, 6), x=(2, 6)):
    m = torch.zeros(1, 1, size, size)
    m[0, 0, y[0]:y[1], x[0]:x[1]] = 1
    return m


def test_exact_box_has_iou_one_and_contains_centroid():
    q = box_quality(torch.tensor([[2.0, 2.0, 5.0, 5.0]]), _square())
    assert q["iou"].item() == pytest.approx(1.0) and bool(q["centroid"][0]) and bool(q["positive"][0])


def test_shifted_box_iou_and_a_box_beside_the_liver_misses_the_centroid():
    # 4x4 liver at x 2..5; a box at x 4..7 overlaps 2 of 4 columns: IoU = 8 / (16 + 16 - 8) = 1/3
    q = box_quality(torch.tensor([[4.0, 2.0, 7.0, 5.0], [8.0, 8.0, 15.0, 15.0]]), torch.cat([_square(), _square()]))
    assert q["iou"][0].item() == pytest.approx(1.0 / 3.0)
    assert bool(q["centroid"][0])  # centroid (4, 4) lies on the box edge x1 = 4: inside
    assert q["iou"][1].item() == pytest.approx(0.0) and not bool(q["centroid"][1])


def test_large_box_keeps_the_centroid_but_not_the_iou():
    q = box_quality(torch.tensor([[0.0, 0.0, 15.0, 15.0]]), _square())
    assert q["iou"].item() == pytest.approx(16.0 / 256.0) and bool(q["centroid"][0])


def test_slice_without_liver_is_left_out():
    q = box_quality(torch.tensor([[2.0, 2.0, 5.0, 5.0]]), torch.zeros(1, 1, 16, 16))
    assert not bool(q["positive"][0]) and math.isnan(q["iou"].item()) and not bool(q["centroid"][0])


def test_scale_boxes_maps_inclusive_pixels_onto_a_finer_grid():
    coarse = _square(8, (1, 3), (1, 3))
    fine = torch.nn.functional.interpolate(coarse, size=(16, 16), mode="nearest")
    box, _ = mask_to_box(coarse)
    assert scale_boxes(box, 2.0).tolist() == mask_to_box(fine)[0].tolist() == [[2.0, 2.0, 5.0, 5.0]]


class BoxOracle(nn.Module):
    """Segments the bright pixels and boxes them, optionally shifted by ``dx`` pixels."""

    def __init__(self, dx: float = 0.0) -> None:
        super().__init__()
        self.dx = dx
        self.classifier = nn.Identity()

    def forward(self, image):
        present = (image.flatten(1).amax(1) > 0.5).float()
        boxes, _ = mask_to_box(image)
        boxes = boxes + torch.tensor([self.dx, 0.0, self.dx, 0.0])
        return {"mask_logits": (image - 0.5) * 20, "class_logits": torch.stack([-present * 5, present * 5 - 2.5], 1),
                "boxes": boxes}


def test_evaluator_reports_box_metrics(tmp_path):
    store = write_mask_store(tmp_path / "s.h5")
    exact = run_evaluator(BoxOracle(), store, ("slice2d",)).state.metrics
    assert exact["box_iou"] == pytest.approx(1.0) and exact["box_iou50"] == 1.0 and exact["box_centroid"] == 1.0
    off = run_evaluator(BoxOracle(dx=40.0), store, ("slice2d",)).state.metrics  # boxes right of the image
    assert off["box_iou"] == pytest.approx(0.0) and off["box_iou50"] == 0.0 and off["box_centroid"] == 0.0
    assert off["slice2d_dice"] == pytest.approx(1.0)  # the box metric does not touch the masks


def test_networks_without_boxes_report_nan(tmp_path):
    from tests.engines.conftest import Oracle

    m = run_evaluator(Oracle(), write_mask_store(tmp_path / "s.h5"), ("slice2d",)).state.metrics
    assert math.isnan(m["box_iou"]) and math.isnan(m["box_centroid"])
