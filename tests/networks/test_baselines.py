"""SAM-PP point pickers and the U-Net baseline."""

from __future__ import annotations

import pytest
import torch

from sam_mix_monai.networks import SAMPP, build_sam, interior_point, random_point_in_mask
from tests.networks import one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def _masks() -> torch.Tensor:
    m = torch.zeros(3, 1, 32, 40)
    m[0, 0, 4:15, 10:31] = 1  # rectangle: centre (20, 9)
    m[1, 0, 0:9, 0:9] = 1  # touches the border: the interior point keeps away from it
    return m  # m[2] is empty


def test_interior_point() -> None:
    pts = interior_point(_masks())
    assert pts.shape == (3, 2) and pts.dtype == torch.float32
    assert pts[0].tolist() == [20.0, 9.0]
    assert pts[1].tolist() == [4.0, 4.0]
    assert pts[2].tolist() == [19.5, 15.5]  # empty mask: image centre


def test_random_point_in_mask() -> None:
    m = _masks()
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(20):
        pts = random_point_in_mask(m, generator=g)
        for i in range(2):
            x, y = int(pts[i, 0]), int(pts[i, 1])
            assert m[i, 0, y, x] == 1
        seen.add(tuple(pts[0].tolist()))
        assert pts[2].tolist() == [19.5, 15.5]
    assert len(seen) > 10  # actually random


def test_sam_pp_scales_points_to_sam_input() -> None:
    net = SAMPP(build_sam("compact", 64)).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 1, 32, 32), torch.tensor([[8.0, 16.0], [31.0, 0.0]]))
    assert out["points"].tolist() == [[16.0, 32.0], [62.0, 0.0]]
    assert out["mask_logits"].shape == (2, 1, 32, 32)
