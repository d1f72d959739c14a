"""The intensity filter: SAM's masked pixels outside the scan's liver HU (from the mask itself) are taken out."""

from __future__ import annotations

import numpy as np
import pytest

from sam_mix_monai.inference.intensity_filter import IntensityFilterSettings, intensity_filter, mask_intensity

H = W = 96
LIVER_ROWS, LIVER_COLS = (20, 70), (10, 50)


def _scan(depth: int = 12, seed: int = 0) -> np.ndarray:
    """HU ``(D, H, W)``: fat, a liver at 120 HU (noise SD 10) and bowel at 40 HU right beside it."""
    rng = np.random.default_rng(seed)
    hu = rng.normal(-90.0, 10.0, (depth, H, W)).astype(np.float32)
    (r0, r1), (c0, c1) = LIVER_ROWS, LIVER_COLS
    hu[:, r0:r1, c0:c1] = rng.normal(120.0, 10.0, (depth, r1 - r0, c1 - c0))
    hu[:, r0:r1, c1:c1 + 30] = rng.normal(40.0, 10.0, (depth, r1 - r0, 30))  # bowel touching the liver
    return hu


def _liver() -> np.ndarray:
    m = np.zeros((H, W), bool)
    (r0, r1), (c0, c1) = LIVER_ROWS, LIVER_COLS
    m[r0:r1, c0:c1] = True
    return m


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / max(1, np.count_nonzero(a) + np.count_nonzero(b))


def test_a_leak_into_the_bowel_beside_the_liver_is_taken_out():
    hu = _scan()
    masks = np.zeros(hu.shape, np.uint8)
    masks[:] = _liver()
    masks[3:6, 25:60, 50:70] = 1  # on three slices SAM also takes in the bowel
    out, window = intensity_filter(masks, lambda z: hu[z], (0.8, 0.8))
    assert window is not None and 110 < window.median < 130 and window.low >= 40  # the liver's HU, not the bowel's
    assert out.dtype == masks.dtype and not out[:, :, 52:].any()  # the leak is gone ...
    assert min(_dice(out[z] > 0, _liver()) for z in range(hu.shape[0])) > 0.97  # ... and the liver stays
    assert _dice(masks[4] > 0, _liver()) < 0.9  # (the leak was large enough to matter)


def test_an_enclosed_hypodense_tumour_and_a_vessel_stay_in_the_mask():
    hu = _scan()
    hu[:, 35:50, 20:35] = 45.0  # a hypodense tumour inside the liver
    hu[:, 55:58, 15:45] = 200.0  # a bright vessel crossing it
    masks = np.zeros(hu.shape, np.uint8)
    masks[:] = _liver()
    out, _ = intensity_filter(masks, lambda z: hu[z], (0.8, 0.8))
    assert out[:, 35:50, 20:35].all() and out[:, 55:58, 15:45].all()
    assert _dice(out > 0, masks > 0) > 0.995  # (the opening rounds the box's corners off)


def test_the_window_comes_from_the_mask_even_with_a_minority_leak():
    hu = _scan()
    masks = np.zeros(hu.shape, np.uint8)
    masks[:] = _liver()
    masks[:, 20:70, 50:62] = 1  # a leak of 30 % of the liver's area on every slice
    w = mask_intensity(masks, lambda z: hu[z])
    assert w is not None and 100 < w.median < 130
    assert w.high - w.median == pytest.approx(max(40.0, 3.0 * w.sd))


def test_disabled_or_empty_leaves_the_masks_unchanged():
    hu = _scan()
    masks = np.zeros(hu.shape, np.uint8)
    out, window = intensity_filter(masks, lambda z: hu[z], (0.8, 0.8))
    assert window is None and not out.any()
    masks[:] = _liver()
    masks[:, 25:60, 50:70] = 1
    off, window = intensity_filter(masks, lambda z: hu[z], (0.8, 0.8), IntensityFilterSettings(enabled=False))
    assert window is None and np.array_equal(off, masks) and off is not masks


def test_the_opening_follows_the_pixel_size():
    hu = _scan()
    masks = np.zeros(hu.shape, np.uint8)
    masks[:] = _liver()
    masks[:, 44:46, 50:80] = 1  # a 2-pixel bridge of the leak, partly at liver HU
    hu[:, 44:46, 50:80] = 120.0
    fine, _ = intensity_filter(masks, lambda z: hu[z], (0.5, 0.5))  # 1.5 mm = 3 pixels: the bridge is opened away
    coarse, _ = intensity_filter(masks, lambda z: hu[z], (3.0, 3.0))  # 1.5 mm = half a pixel: no opening
    assert not fine[:, 44:46, 55:80].any()
    assert coarse[:, 44:46, 55:80].all()


def test_a_leak_that_touches_the_liver_only_by_a_corner_is_dropped():
    hu = np.full((12, H, W), 120.0, np.float32)  # everything at liver HU: only the component step acts
    masks = np.zeros(hu.shape, np.uint8)
    masks[:] = _liver()
    masks[6, 60:75, 40:75] = 1  # slice 6: the liver reaches (74, 74) ...
    masks[:6, 75:85, 75:85] = 1  # ... and a spleen-like leak on slices 0-5 starts at (75, 75): a corner apart
    out, _ = intensity_filter(masks, lambda z: hu[z], (3.0, 3.0))  # 3 mm pixels: no opening
    assert not out[:6, 75:85, 75:85].any()  # face connectivity: the leak is a component of its own, dropped
    assert np.array_equal(out[6:], masks[6:]) and out[:, 20:70, 10:50].all()  # the liver stays whole
