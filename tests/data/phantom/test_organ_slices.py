"""Organ-instance samples for SAM pretraining: never liver or lesion, aligned with the tissue map,
the converter's preprocessing, deterministic."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from sam_mix_monai.data.converter import convert
from sam_mix_monai.data.dataset import SliceDataset
from sam_mix_monai.data.phantom import LESION_TISSUES, LIVER_TISSUES, generate_case, write_case
from sam_mix_monai.data.phantom.organ_slices import ORGANS, build_organ_slices, case_organ_slices, organ_instances
from sam_mix_monai.data.phantom.tissues import Tissue, mask_lut
from sam_mix_monai.transforms import SlicingConfig
from sam_mix_monai.utils.errors import InputError

SIZE, MATRIX, SLICES, MIN_PX = 64, 96, 24, 12
LIVERISH = mask_lut((*LIVER_TISSUES, *LESION_TISSUES))


@pytest.fixture(scope="module")
def data():
    return build_organ_slices(cases=2, seed=1000, image_size=SIZE, matrix=MATRIX, slices=SLICES, min_pixels=MIN_PX,
                              keep_tissue=True, progress=False)


def test_shapes_and_organs(data):
    n, m = len(data.images), len(data)
    assert data.images.shape == (n, SIZE, SIZE) and data.images.dtype == np.float32
    assert data.masks.shape == (m, SIZE, SIZE) and data.masks.dtype == bool
    assert 0.0 <= data.images.min() and data.images.max() <= 1.0
    assert data.mask_slice.shape == data.mask_organ.shape == (m,)
    assert set(np.unique(data.mask_slice)) == set(range(n))  # every kept slice holds a mask
    assert "liver" not in data.organs and not any("lesion" in o for o in data.organs)
    counts = data.counts()
    for organ in ("spleen", "kidney", "aorta", "bone", "stomach"):
        assert counts[organ] > 0, counts


def test_no_liver_or_lesion_pixel_in_any_mask(data):
    tissue_under = data.tissue[data.mask_slice]  # (M, S, S)
    assert not (LIVERISH[tissue_under] & data.masks).any()
    # The liver is on these slices, next to the organs: the exclusion is not vacuous.
    assert LIVERISH[data.tissue].sum() > 1000


def test_masks_align_with_tissue_map(data):
    sizes = data.masks.sum(axis=(1, 2))
    assert sizes.min() >= MIN_PX
    for i in range(len(data)):
        mask, organ = data.masks[i], data.organs[data.mask_organ[i]]
        spec = ORGANS[organ]
        tissue = data.tissue[data.mask_slice[i]]
        own = mask_lut(spec.tissues)[tissue]
        assert ndimage.label(mask)[1] == 1  # one connected instance
        if spec.fill_holes:  # organ tissue plus what it encloses, mostly organ tissue
            assert own[mask].mean() > 0.3, organ
            assert not (own & ~mask & ndimage.binary_dilation(mask)).any(), organ  # the whole component
        else:
            assert own[mask].all(), organ
    # Completeness: each organ's tissue on a slice is covered, except components below min_pixels.
    for z in range(len(data.images)):
        for organ, spec in ORGANS.items():
            own = mask_lut(spec.tissues)[data.tissue[z]] & ~LIVERISH[data.tissue[z]]
            sel = (data.mask_slice == z) & (data.mask_organ == data.organs.index(organ))
            covered = data.masks[sel].any(axis=0) if sel.any() else np.zeros_like(own)
            rest, n = ndimage.label(own & ~covered)
            if n:
                assert np.bincount(rest.ravel())[1:].max() < MIN_PX or own.sum() < MIN_PX, (z, organ)


def test_instances_of_a_drawn_slice():
    t = np.full((40, 40), int(Tissue.VISC_FAT), np.uint8)
    t[2:10, 2:10] = Tissue.KIDNEY_CORTEX
    t[5:7, 5:7] = Tissue.VISC_FAT  # renal sinus: filled into the kidney
    t[2:10, 30:38] = Tissue.KIDNEY_CORTEX  # the other kidney: a second instance
    t[12:18, 12:18] = Tissue.SPLEEN
    t[20:30, 20:30] = Tissue.STOMACH_WALL
    t[24:26, 24:26] = Tissue.LIVER  # enclosed by a hole-filled organ, still never part of a mask
    t[35:37, 2:4] = Tissue.SPLEEN  # 4 px: below min_pixels
    inst = organ_instances(t, min_pixels=10)
    assert [name for name, _ in inst] == ["spleen", "kidney", "kidney", "stomach"]
    spleen, k1, k2, stomach = (m for _, m in inst)
    assert spleen.sum() == 36 and k1.sum() == 64 and k1[5:7, 5:7].all() and k2.sum() == 64
    assert stomach.sum() == 100 - 4 and not stomach[24:26, 24:26].any()


def test_same_preprocessing_as_the_converter(tmp_path):
    case = generate_case(1000, 0, "a", MATRIX, SLICES)
    images, _, records, kept = case_organ_slices(case, SIZE, MIN_PX)
    write_case(case, tmp_path / "lits", "lits", 0)
    store = tmp_path / "c.h5"
    convert(tmp_path / "lits", store, "lits", SlicingConfig(keep_rate="all", image_size=SIZE), {"test": 1.0},
            workers=1, progress=False)
    ds = SliceDataset(store, split="test")
    items = ds.__getitems__(list(range(len(ds))))
    conv_img = np.stack([i["image"][0].numpy() for i in items])
    conv_liver = np.stack([i["mask"][0].numpy() for i in items]) > 0.5
    assert len(items) == SLICES and kept.max() < SLICES
    # The store keeps float16: the same values once ours are rounded the same way.
    np.testing.assert_array_equal(images.astype(np.float16).astype(np.float32), conv_img[kept])
    # Independent check through the converter's liver label: no mask touches the liver.
    assert conv_liver.any()
    for z, _, m in records:
        assert not (m & conv_liver[kept[z]]).any()


def test_deterministic_and_split(data):
    again = build_organ_slices(cases=1, seed=1000, image_size=SIZE, matrix=MATRIX, slices=SLICES, min_pixels=MIN_PX,
                               progress=False)
    rest, first = data.split_by_case([0])
    np.testing.assert_array_equal(again.images, first.images)
    np.testing.assert_array_equal(again.masks, first.masks)
    np.testing.assert_array_equal(again.mask_slice, first.mask_slice)
    np.testing.assert_array_equal(again.mask_organ, first.mask_organ)
    assert len(rest) + len(first) == len(data) and set(rest.slice_case) == {1}
    np.testing.assert_array_equal(rest.images[rest.mask_slice], data.images[data.mask_slice[data.slice_case[data.mask_slice] == 1]])
    other = build_organ_slices(cases=1, seed=1001, image_size=SIZE, matrix=MATRIX, slices=SLICES, progress=False)
    assert other.images.shape != again.images.shape or not np.array_equal(other.images, again.images)


def test_bad_arguments():
    with pytest.raises(InputError, match="cases must be at least 1"):
        build_organ_slices(cases=0, progress=False)
    with pytest.raises(InputError, match="min_pixels"):
        build_organ_slices(cases=1, min_pixels=0, progress=False)
