"""3D largest connected component: MONAI on the foreground box, slab-wise labelling for huge boxes."""

from __future__ import annotations

import numpy as np
import pytest

from sam_mix_monai.transforms import components as postprocess
from sam_mix_monai.transforms.components import foreground_box, keep_largest_component, largest_component_by_slabs


def _two_blobs() -> np.ndarray:
    m = np.zeros((20, 18, 16), np.uint8)
    m[2:5, 2:5, 2:5] = 1  # 27
    m[8:14, 8:14, 6:12] = 1  # 216
    m[14, 14, 12] = 1  # touches the big blob by a corner: 26-connected
    return m


def test_keeps_largest_26_connected() -> None:
    m = _two_blobs()
    out = keep_largest_component(m)
    assert out is m
    assert int(m.sum()) == 217 and m[2:5, 2:5, 2:5].sum() == 0 and m[14, 14, 12] == 1


def test_empty_and_box() -> None:
    m = np.zeros((4, 4, 4), np.uint8)
    assert foreground_box(m) is None and keep_largest_component(m).sum() == 0
    m[1, 2, 3] = 1
    assert foreground_box(m) == (slice(1, 2), slice(2, 3), slice(3, 4))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("slab", [1, 3, 7])
def test_slab_labelling_equals_monai(seed: int, slab: int) -> None:
    rng = np.random.default_rng(seed)
    m = (rng.random((24, 20, 22)) < 0.3).astype(np.uint8)  # many components, joined across slab faces
    ref = keep_largest_component(m.copy())
    got = largest_component_by_slabs(m.copy(), slab=slab)
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(keep_largest_component(m.copy(), max_box_voxels=100), ref)


def test_without_scikit_image(monkeypatch) -> None:
    ref = keep_largest_component(_two_blobs())
    monkeypatch.setattr(postprocess, "_HAS_SKIMAGE", False)
    np.testing.assert_array_equal(keep_largest_component(_two_blobs()), ref)
