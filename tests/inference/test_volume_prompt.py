"""The 3D volume prompt: z-range rule, 3D component, smooth edges, a wild slice that must not move the box."""

from __future__ import annotations

import numpy as np
import pytest

from sam_mix_monai.inference.volume_prompt import (
    VolumePromptSettings, box_edges_smooth, liver_run, volume_prompt, window_slices,
)

SPACING = (1.0, 1.0, 2.0)  # row mm, column mm, slice mm of a 64 x 64 slice
NO_MARGIN = VolumePromptSettings(margin_mm=0.0)


def _liver(depth: int = 30, z: tuple[int, int] = (8, 22), rows: tuple[int, int] = (20, 40),
           cols: tuple[int, int] = (10, 34)) -> np.ndarray:
    ev = np.zeros((depth, 64, 64), np.float32)
    ev[z[0] : z[1], rows[0] : rows[1], cols[0] : cols[1]] = 0.9
    return ev


def test_window_slices_is_odd_and_in_mm():
    assert window_slices(6.0, 2.0) == 3
    assert window_slices(6.0, 1.0) == 7  # thinner slices: more of them for the same millimetres
    assert window_slices(1.0, 5.0) == 1
    assert all(window_slices(w, d) % 2 == 1 for w in (3, 7, 10, 15) for d in (0.5, 1.0, 1.6, 2.5))


def test_liver_run_closes_a_one_slice_gap():
    p = np.zeros(30, bool)
    p[8:22] = True
    p[15] = False  # the classifier misses one slice in the middle
    assert liver_run(p, 2.0, 6.0) == (8, 21)
    assert liver_run(p, 2.0, 0.0) == (8, 14)  # without smoothing the gap splits the run


def test_liver_run_drops_an_isolated_false_positive_and_keeps_the_longest_run():
    p = np.zeros(40, bool)
    p[3] = True  # one wild slice far from the liver
    p[10:30] = True
    p[34:37] = True  # a shorter run (e.g. the heart)
    assert liver_run(p, 2.0, 6.0) == (10, 29)


def test_liver_run_on_a_scan_cut_through_the_liver_reaches_the_edge():
    p = np.zeros(20, bool)
    p[12:] = True  # the scan ends inside the liver
    assert liver_run(p, 2.0, 6.0) == (12, 19)
    p = np.zeros(20, bool)
    p[:7] = True
    assert liver_run(p, 2.0, 6.0) == (0, 6)


def test_no_liver_gives_an_empty_prompt():
    assert liver_run(np.zeros(25, bool), 2.0) is None
    prompt = volume_prompt(np.zeros((25, 64, 64), np.float32), np.zeros(25, bool), SPACING, (64, 64))
    assert prompt.empty and list(prompt.slices()) == [] and np.isnan(prompt.boxes).all()
    # presence without any evidence above the threshold is no liver either
    prompt = volume_prompt(np.full((25, 64, 64), 0.1, np.float32), np.ones(25, bool), SPACING, (64, 64))
    assert prompt.empty


def test_box_edges_smooth_interpolates_gaps_and_removes_a_spike():
    boxes = np.tile(np.array([10.0, 20.0, 40.0, 50.0]), (11, 1))
    boxes[3] = np.nan
    boxes[7] = [0.0, 0.0, 63.0, 63.0]  # one wild slice
    out = box_edges_smooth(boxes, 2.0, 6.0)
    assert not np.isnan(out).any()
    np.testing.assert_allclose(out, np.tile([10.0, 20.0, 40.0, 50.0], (11, 1)))
    with pytest.raises(ValueError):
        box_edges_smooth(np.full((3, 4), np.nan), 2.0, 6.0)


def test_box_edges_smooth_follows_a_real_trend():
    z = np.arange(15, dtype=float)
    boxes = np.stack([10 + z, 20 + 0 * z, 40 + z, 50 + 0 * z], axis=1)  # the liver moves right, slice by slice
    out = box_edges_smooth(boxes, 2.0, 6.0)
    np.testing.assert_allclose(out[1:-1], boxes[1:-1])  # a median of a linear trend is the trend


def test_a_wild_cam_slice_does_not_move_the_3d_box():
    ev = _liver()
    # one slice's evidence jumps to a second, bigger blob (the spine) connected to the liver
    ev[15, 20:64, 0:64] = 0.95
    presence = ev.reshape(len(ev), -1).max(1) > 0.5
    prompt = volume_prompt(ev, presence, SPACING, (64, 64), NO_MARGIN)
    assert (prompt.z0, prompt.z1) == (8, 21)
    # the known liver box: columns 10..33, rows 20..39, on every slice of the range, the wild one included
    for z in prompt.slices():
        np.testing.assert_allclose(prompt.boxes[z], [10, 20, 33, 39])


def test_a_disconnected_blob_is_dropped_by_the_3d_component():
    ev = _liver()
    ev[10:14, 50:60, 50:60] = 0.9  # a smaller, separate structure on a few slices
    prompt = volume_prompt(ev, ev.reshape(len(ev), -1).max(1) > 0.5, SPACING, (64, 64), NO_MARGIN)
    assert not prompt.component[10:14, 50:60, 50:60].any()
    np.testing.assert_allclose(prompt.boxes[12], [10, 20, 33, 39])


def test_boxes_scale_to_slice_pixels_and_margin_is_in_mm():
    ev = _liver()  # evidence on a 64 grid of a 512 x 512 slice: 8 slice pixels per cell
    spacing = (0.5, 0.5, 2.0)  # 0.5 mm pixels: 5 mm margin = 10 pixels
    prompt = volume_prompt(ev, ev.reshape(len(ev), -1).max(1) > 0.5, spacing, (512, 512), VolumePromptSettings(margin_mm=5.0))
    x1, y1, x2, y2 = prompt.boxes[12]
    assert (x1, y1) == (10 * 8 - 10, 20 * 8 - 10)
    assert (x2, y2) == (34 * 8 - 1 + 10, 40 * 8 - 1 + 10)
    assert np.isnan(prompt.boxes[0]).all() and np.isnan(prompt.boxes[29]).all()


def test_slices_outside_the_presence_run_are_not_prompted():
    ev = _liver()
    presence = np.zeros(30, bool)
    presence[10:20] = True  # the classifier is sure of fewer slices than the evidence shows
    prompt = volume_prompt(ev, presence, SPACING, (64, 64))
    assert (prompt.z0, prompt.z1) == (10, 19)
