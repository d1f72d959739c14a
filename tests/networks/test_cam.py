"""Closed-form GradCAM, connected components, boxes and the liver gate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.visualize import GradCAM
from scipy import ndimage
from torch import nn

from sam_mix_monai.networks.cam import (
    cam_prompts,
    central_box,
    closed_form_gradcam,
    gate_logits,
    largest_component,
    mask_to_box,
    minmax_normalize,
    select_component,
)
from sam_mix_monai.networks.classifier import resnet38_compact
from tests.networks import mixed_batch, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


class _LogitsOnly(nn.Module):
    """MONAI's GradCAM needs ``forward(x) -> logits``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[0]


def test_closed_form_equals_autograd_gradcam() -> None:
    torch.manual_seed(0)
    net = resnet38_compact()
    x, _ = mixed_batch(3, 64)
    net.train()
    net(x)  # give BN non-trivial running statistics
    wrapped = _LogitsOnly(net).eval()  # GradCAM restores the wrapper's train/eval mode afterwards
    gradcam = GradCAM(nn_module=wrapped, target_layers="net.final")
    raw = gradcam.compute_map(x, class_idx=1).detach()  # raw maps: no (flipping) default normaliser
    assert not net.training
    with torch.no_grad():
        _, feats = net(x)
        closed = closed_form_gradcam(feats, net.fc.weight, class_idx=1)
    assert raw.shape == closed.shape == (3, 1, 8, 8)
    assert float(raw.max()) > 0
    torch.testing.assert_close(closed, raw, rtol=1e-4, atol=1e-6 * float(raw.abs().max()))


def test_minmax_normalize_range_and_constant_map() -> None:
    cam = torch.stack([torch.rand(1, 8, 8) * 5 + 2, torch.full((1, 8, 8), 3.0)])
    n = minmax_normalize(cam)
    assert float(n[0].min()) == 0.0 and float(n[0].max()) == 1.0
    assert float(n[1].abs().max()) == 0.0


def _blobs(size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(1, 1, size // 4, size // 4, generator=g)
    smooth = F.interpolate(noise, size=(size, size), mode="bicubic", align_corners=False)
    return (smooth > 0.6).float()


def _scipy_lcc(mask: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(mask, structure=np.ones((3, 3)))
    if n == 0:
        return np.zeros_like(mask)
    sizes = np.bincount(lab.ravel())[1:]
    return lab == (np.argmax(sizes) + 1)


@pytest.mark.parametrize("seed", range(6))
def test_largest_component_matches_scipy(seed: int) -> None:
    m = _blobs(32, seed)
    ours = largest_component(m, iterations=32 * 32 // 2)  # enough rounds for any shape on this grid
    expected = _scipy_lcc(m[0, 0].numpy() > 0)
    np.testing.assert_array_equal(ours[0, 0].numpy() > 0, expected)


def test_largest_component_matches_monai() -> None:
    skimage = pytest.importorskip("skimage")  # MONAI's LCC needs scikit-image (or cuCIM)
    del skimage
    from monai.transforms.utils import get_largest_connected_component_mask

    batch = torch.cat([_blobs(32, s) for s in range(4)])
    ours = largest_component(batch, iterations=512)
    for i in range(4):
        ref = get_largest_connected_component_mask(batch[i], connectivity=2)
        assert torch.equal(ours[i] > 0, ref > 0)


def test_largest_component_default_iterations_convex_and_limit() -> None:
    # Two convex blobs: the default h + w rounds label them exactly.
    m = torch.zeros(1, 1, 32, 32)
    m[..., 2:30, 1:12] = 1  # 308 px
    m[..., 5:15, 20:31] = 1  # 110 px
    expected = m.clone()
    expected[..., :, 12:] = 0
    assert torch.equal(largest_component(m), expected)
    # Documented limit: a snake longer than the rounds is split, and only part of it is kept.
    snake = torch.zeros(1, 1, 16, 16)
    snake[..., ::2, :] = 1
    for r in range(1, 16, 2):
        snake[..., r, 15 if r % 4 == 1 else 0] = 1
    assert int(largest_component(snake, iterations=4).sum()) < int(snake.sum())
    assert int(largest_component(snake, iterations=200).sum()) == int(snake.sum())


def test_largest_component_ties_and_empty() -> None:
    m = torch.zeros(2, 1, 8, 8)
    m[0, 0, 0:2, 0:2] = 1
    m[0, 0, 5:7, 5:7] = 1  # same size: deterministic choice of one of them
    keep = largest_component(m)
    assert int(keep[0].sum()) == 4
    assert int(keep[1].sum()) == 0


def test_mask_to_box_inclusive_and_empty() -> None:
    m = torch.zeros(2, 1, 10, 12)
    m[0, 0, 3:6, 2:9] = 1
    boxes, empty = mask_to_box(m)
    assert boxes[0].tolist() == [2.0, 3.0, 8.0, 5.0]
    assert boxes[1].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert empty.tolist() == [False, True]


def test_cam_prompts_empty_cam_gives_central_fallback_box() -> None:
    cam = torch.zeros(2, 1, 8, 8)  # constant map (e.g. all-negative liver weights after ReLU)
    cam[1, 0, 2:4, 2:4] = 1.0
    out = cam_prompts(cam, (64, 64), threshold=0.4, fallback_fraction=0.5)
    assert out["box_fallback"].tolist() == [True, False]
    assert out["boxes"][0].tolist() == central_box(64, 64, 0.5).tolist() == [16.0, 16.0, 47.0, 47.0]
    assert float(out["cam_mask"][0].sum()) == 0.0
    assert float(out["cam_mask"][1].sum()) > 0


def test_cam_prompts_border_touching_blob() -> None:
    cam = torch.zeros(1, 1, 8, 8)
    cam[0, 0, 0:3, 5:8] = 1.0  # top-right corner
    out = cam_prompts(cam, (64, 64), threshold=0.4)
    x1, y1, x2, y2 = out["boxes"][0].tolist()
    assert y1 == 0.0 and x2 == 63.0  # clipped to the image, inclusive
    assert 35 <= x1 <= 40 and 20 <= y2 <= 26
    assert not bool(out["box_fallback"][0])
    mask = out["cam_mask"][0, 0]
    assert bool(mask[0, 63]) and not bool(mask[63, 0])


def test_cam_prompts_keeps_largest_blob_only() -> None:
    cam = torch.zeros(1, 1, 16, 16)
    cam[0, 0, 2:10, 1:7] = 0.8  # large, weaker blob
    cam[0, 0, 12:14, 12:14] = 1.0  # small, strongest blob
    out = cam_prompts(cam, (128, 128), threshold=0.4)
    mask = out["cam_mask"][0, 0] > 0
    assert not mask[96:, 90:].any()  # the small blob is gone
    x1, y1, x2, y2 = out["boxes"][0].tolist()
    assert x2 < 64 and y2 < 90 and x1 < 16 and y1 < 24
    # The kept mask equals the high-resolution thresholded map restricted to the kept blob.
    norm_up = F.interpolate(minmax_normalize(cam), size=(128, 128), mode="bilinear", align_corners=False)
    thresholded = (norm_up >= 0.4)[0, 0]
    expected = torch.from_numpy(_scipy_lcc(thresholded.numpy()))
    assert torch.equal(mask, expected)
    assert out["cam"].shape == (1, 1, 128, 128) and float(out["cam"].max()) == 1.0


def _two_blobs() -> torch.Tensor:
    cam = torch.zeros(1, 1, 16, 16)
    cam[0, 0, 2:10, 1:7] = 0.5  # broad, weak: 48 px, mass 24
    cam[0, 0, 12:15, 11:15] = 0.9  # small: 12 px, mass 10.8
    cam[0, 0, 13, 12] = 1.0  # with the CAM peak (mass 10.9)
    return cam


@pytest.mark.parametrize("rule, rows, cols", [("area", (2, 10), (1, 7)), ("peak", (12, 15), (11, 15)),
                                              ("mass", (2, 10), (1, 7))])
def test_select_component_rules(rule: str, rows: tuple[int, int], cols: tuple[int, int]) -> None:
    cam = _two_blobs()
    keep = select_component(cam >= 0.4, cam, rule)
    expected = torch.zeros_like(cam)
    expected[0, 0, rows[0]:rows[1], cols[0]:cols[1]] = 1
    assert torch.equal(keep, expected)


def test_select_component_mass_prefers_the_hot_small_blob() -> None:
    cam = _two_blobs()
    cam[0, 0, 2:10, 1:7] = 0.2  # broad blob now 48 px but mass 9.6 < 10.9
    keep = select_component(cam >= 0.1, cam, "mass")
    assert int(keep.sum()) == 12 and bool(keep[0, 0, 13, 12])
    assert int(select_component(cam >= 0.1, cam, "area").sum()) == 48


@pytest.mark.parametrize("seed", range(3))
def test_select_component_mass_and_peak_match_scipy(seed: int) -> None:
    m = _blobs(32, seed)
    score = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(seed))
    lab, n = ndimage.label(m[0, 0].numpy() > 0, structure=np.ones((3, 3)))
    s = score[0, 0].numpy()
    mass = ndimage.sum(s, lab, index=np.arange(1, n + 1))
    peak_label = lab.ravel()[np.argmax(np.where(lab.ravel() > 0, s.ravel(), -1.0))]
    for rule, label in (("mass", np.argmax(mass) + 1), ("peak", peak_label)):
        ours = select_component(m, score, rule, iterations=512)
        np.testing.assert_array_equal(ours[0, 0].numpy() > 0, lab == label)


def test_select_component_rejects_bad_rule_and_missing_score() -> None:
    with pytest.raises(ValueError, match="component rule"):
        select_component(torch.ones(1, 1, 4, 4), torch.ones(1, 1, 4, 4), "biggest")
    with pytest.raises(ValueError, match="needs a score"):
        select_component(torch.ones(1, 1, 4, 4), None, "peak")
    assert int(select_component(torch.zeros(1, 1, 4, 4), torch.rand(1, 1, 4, 4), "peak").sum()) == 0


def test_cam_prompts_peak_rule_boxes_the_peak_blob() -> None:
    out = cam_prompts(_two_blobs(), (128, 128), threshold=0.4, component="peak")
    x1, y1, x2, y2 = out["boxes"][0].tolist()
    assert x1 >= 80 and y1 >= 88 and not bool(out["box_fallback"][0])


def test_gate_logits() -> None:
    logits = torch.randn(3, 1, 4, 4)
    gated = gate_logits(logits, torch.tensor([0.9, 0.2, 0.5]), threshold=0.5, fill=-1e4)
    assert torch.equal(gated[0], logits[0]) and torch.equal(gated[2], logits[2])
    assert bool((gated[1] == -1e4).all())


def test_clip_boxes_to_body_cuts_the_air_out_and_keeps_disjoint_boxes():
    from sam_mix_monai.networks.cam import clip_boxes_to_body

    image = torch.zeros(3, 1, 64, 64)
    image[:, :, 10:50, 20:60] = 0.5  # the body: x 20..59, y 10..49
    image[2] = 0.0  # no body at all
    boxes = torch.tensor([[0.0, 5.0, 40.0, 30.0],     # spills into the air on the left and top
                          [0.0, 0.0, 10.0, 5.0],      # entirely in the air: kept as is
                          [0.0, 5.0, 40.0, 30.0]])    # slice without body: kept as is
    out = clip_boxes_to_body(boxes, image)
    assert out[0].tolist() == [20.0, 10.0, 40.0, 30.0]
    assert out[1].tolist() == boxes[1].tolist() and out[2].tolist() == boxes[2].tolist()


def test_mask_cam_to_body_zeroes_cells_mostly_in_the_air():
    from sam_mix_monai.networks.cam import mask_cam_to_body

    image = torch.zeros(1, 1, 32, 32)
    image[..., 8:32, 0:20] = 0.5  # body: cells (stride 8) rows 1..3, columns 0..1 fully, column 2 half
    cam = torch.ones(1, 1, 4, 4)
    out = mask_cam_to_body(cam, image)
    expect = torch.zeros(4, 4)
    expect[1:, 0:3] = 1.0  # column 2 is half body (x 16..19 of 16..23): kept at >= 0.5
    assert torch.equal(out[0, 0], expect)
