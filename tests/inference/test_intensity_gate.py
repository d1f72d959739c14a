"""The intensity gate: the scan's own liver HU (from the strongest evidence) prunes weak evidence elsewhere."""

from __future__ import annotations

import numpy as np
import pytest

from sam_mix_monai.inference.intensity_gate import IntensityGateSettings, core_intensity, intensity_gate
from sam_mix_monai.inference.volume_prompt import VolumePromptSettings, volume_prompt

H = W = 128  # slice pixels
G = 32  # evidence grid (4 x 4 pixels a cell)
SPACING = (1.0, 1.0, 2.0)  # row mm, column mm, slice mm
CELL_ML = 4 * 1.0 * 4 * 1.0 * 2.0 / 1000.0
LIVER_Z, LIVER_ROWS, LIVER_COLS = (10, 30), (32, 80), (16, 64)  # slice pixels


def _scan(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """HU ``(40, H, W)``: liver at 120 HU; below it and beside it muscle at 40 HU, with noise; and its evidence.

    The evidence is strong on the liver (0.9) and weak (0.35) on the muscle, which touches the liver in 3D
    and runs from slice 0 to the liver's middle: the failure of a head trained on another patient.
    """
    rng = np.random.default_rng(seed)
    hu = rng.normal(-80.0, 15.0, (40, H, W)).astype(np.float32)  # fat
    z0, z1 = LIVER_Z
    (r0, r1), (c0, c1) = LIVER_ROWS, LIVER_COLS
    hu[0:20, 32:100, 64:112] = rng.normal(40.0, 12.0, (20, 68, 48))  # muscle / bowel, beside and below the liver
    hu[z0:z1, r0:r1, c0:c1] = rng.normal(120.0, 12.0, (z1 - z0, r1 - r0, c1 - c0))
    ev = np.zeros((40, G, G), np.float32)
    ev[0:20, 32 // 4 : 100 // 4, 64 // 4 : 112 // 4] = 0.35
    ev[z0:z1, r0 // 4 : r1 // 4, c0 // 4 : c1 // 4] = 0.9
    return hu, ev


def _box_iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    area = lambda q: (q[2] - q[0] + 1) * (q[3] - q[1] + 1)  # noqa: E731
    return ix * iy / (area(a) + area(b) - ix * iy)


def test_core_intensity_is_the_strong_evidence_hu_even_where_weak_evidence_covers_more_muscle():
    hu, ev = _scan()
    assert (ev == 0.35).sum() > (ev == 0.9).sum()  # the weak evidence is the larger part
    win = core_intensity(ev, lambda z: hu[z], range(40), CELL_ML, threshold=0.2)
    assert win is not None
    assert abs(win.median - 120.0) < 3.0
    assert 8.0 < win.sd < 16.0
    assert win.low > 40.0 + 2 * 12.0 and win.high < 200.0


def test_the_gate_keeps_the_liver_and_drops_the_other_tissue():
    hu, ev = _scan()
    g = intensity_gate(ev, lambda z: hu[z], range(40), CELL_ML, threshold=0.2)
    assert np.allclose(g[ev == 0.9], 0.9)  # every liver cell kept
    assert np.count_nonzero(g[ev == 0.35]) == 0  # no muscle cell kept
    assert np.array_equal(ev, _scan()[1])  # the input is not modified


def test_the_gated_prompt_holds_the_liver_box_and_range_where_the_raw_one_does_not():
    hu, ev = _scan()
    settings = VolumePromptSettings(margin_mm=0.0)
    truth = np.array([LIVER_COLS[0], LIVER_ROWS[0], LIVER_COLS[1] - 1, LIVER_ROWS[1] - 1], float)
    raw = volume_prompt(ev, ev.max(axis=(1, 2)) >= 0.2, SPACING, (H, W), settings)
    g = intensity_gate(ev, lambda z: hu[z], range(40), CELL_ML, threshold=0.2)
    gated = volume_prompt(g, g.max(axis=(1, 2)) >= 0.2, SPACING, (H, W), settings)
    assert raw.z0 == 0  # the muscle pulled the raw prompt down to the first slice
    assert min(_box_iou(raw.boxes[z], truth) for z in range(LIVER_Z[0], LIVER_Z[1])) < 0.6
    assert (gated.z0, gated.z1) == (LIVER_Z[0], LIVER_Z[1] - 1)
    assert min(_box_iou(gated.boxes[z], truth) for z in range(LIVER_Z[0], LIVER_Z[1])) > 0.9


def test_a_hypodense_tumour_inside_the_liver_does_not_shrink_the_box():
    hu, ev = _scan()
    hu[15:25, 40:70, 30:50] = 40.0  # a lesion at 40 HU inside the liver, with the head's strong evidence
    g = intensity_gate(ev, lambda z: hu[z], range(40), CELL_ML, threshold=0.2)
    p = volume_prompt(g, g.max(axis=(1, 2)) >= 0.2, SPACING, (H, W), VolumePromptSettings(margin_mm=0.0))
    truth = np.array([LIVER_COLS[0], LIVER_ROWS[0], LIVER_COLS[1] - 1, LIVER_ROWS[1] - 1], float)
    assert min(_box_iou(p.boxes[z], truth) for z in range(LIVER_Z[0], LIVER_Z[1])) > 0.9


def test_without_liver_evidence_or_when_disabled_the_evidence_is_unchanged():
    hu, ev = _scan()
    weak = ev * 0.1  # nothing reaches the threshold: no core, no gate
    assert np.array_equal(intensity_gate(weak, lambda z: hu[z], range(40), CELL_ML, threshold=0.2), weak)
    off = IntensityGateSettings(enabled=False)
    assert np.array_equal(intensity_gate(ev, lambda z: hu[z], range(40), CELL_ML, 0.2, off), ev)
    assert core_intensity(weak, lambda z: hu[z], range(40), CELL_ML, threshold=0.2) is None


def test_the_gate_handles_a_slice_that_is_not_a_multiple_of_the_grid():
    rng = np.random.default_rng(1)
    hu = rng.normal(40.0, 10.0, (3, 50, 70)).astype(np.float32)
    hu[:, 10:30, 10:40] = 120.0
    ev = np.zeros((3, 16, 16), np.float32)
    ev[:, 4:9, 3:9] = 0.9  # on the liver (rows 12.5-28 px, columns 13-39 px)
    ev[:, 12:15, 12:15] = 0.3  # on the muscle
    g = intensity_gate(ev, lambda z: hu[z], range(3), cell_ml=0.01, threshold=0.2)
    assert np.count_nonzero(g[:, 12:15, 12:15]) == 0
    assert np.count_nonzero(g[:, 4:9, 3:9]) == 3 * 5 * 6
