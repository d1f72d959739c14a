"""Geometry: slab reading matches the training slicer; masks land on the original grid in any orientation."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform

from sam_mix_monai.cli.main import main
from sam_mix_monai.inference import AxialGeometry
from sam_mix_monai.transforms import AxialSlice
from tests.inference.tiny_model import phantom, save_case, tiny_checkpoint

ORIENTATIONS = ["RAS", "LPS", "LAS", "PLS", "ARI", "SAR"]


def reorient(ras: np.ndarray, affine: np.ndarray, codes: str) -> tuple[np.ndarray, np.ndarray]:
    """Store a RAS (x, y, z) array in another header orientation; every voxel keeps its world position."""
    ornt = ornt_transform(axcodes2ornt(tuple("RAS")), axcodes2ornt(tuple(codes)))
    return np.ascontiguousarray(apply_orientation(ras, ornt)), affine @ inv_ornt_aff(ornt, ras.shape)


def _random_case(codes: str, shape=(7, 5, 6)) -> tuple[np.ndarray, np.ndarray]:
    ras = np.random.default_rng(0).integers(-1000, 1000, size=shape).astype(np.int16)
    aff = np.diag([0.7, 0.9, 2.5, 1.0])
    aff[:3, 3] = (-10, 20, 30)
    return reorient(ras, aff, codes)


@pytest.mark.parametrize("codes", ORIENTATIONS)
def test_read_slab_matches_training_slicer(codes: str) -> None:
    arr, aff = _random_case(codes)
    geo = AxialGeometry(aff, arr.shape)
    expected = AxialSlice("all")(MetaTensor(torch.from_numpy(arr)[None], affine=torch.as_tensor(aff)))
    assert geo.ras_shape == (7, 5, 6) and geo.depth == 6 and geo.slice_shape == (5, 7)
    np.testing.assert_array_equal(geo.read_slab(arr, 0, 6), np.asarray(expected))
    np.testing.assert_array_equal(geo.read_slab(arr, 2, 5), np.asarray(expected)[2:5])


@pytest.mark.parametrize("codes", ORIENTATIONS)
def test_write_slab_inverts_read_slab(codes: str) -> None:
    arr, aff = _random_case(codes)
    geo = AxialGeometry(aff, arr.shape)
    out = np.zeros_like(arr)
    for z0 in range(0, geo.depth, 4):
        z1 = min(z0 + 4, geo.depth)
        geo.write_slab(out, geo.read_slab(arr, z0, z1), z0, z1)
    np.testing.assert_array_equal(out, arr)


def test_rejects_bad_ranges() -> None:
    geo = AxialGeometry(np.eye(4), (4, 4, 4))
    with pytest.raises(ValueError):
        geo.array_range(2, 5)


def _canonical(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.as_closest_canonical(nib.load(str(path)))
    return np.asarray(img.dataobj), img.affine


def test_masks_agree_in_world_space_across_orientations(tmp_path: Path) -> None:
    case = phantom(0, "RAS")
    ras_img = case.image
    aff = case.affine.copy()
    aff[:3, :3] = aff[:3, :3] @ np.diag([0.8, 1.1, 1.0])  # anisotropic in-plane too: 2.77 x 3.80 x 5 mm
    inputs = {}
    for codes in ("RAS", "LPS", "LAS", "PLS"):  # PLS: permuted axis order
        arr, a = reorient(ras_img, aff, codes)
        inputs[codes] = save_case(tmp_path / "in" / f"c_{codes}.nii.gz", arr, a)
    out = tmp_path / "out"
    assert main(["-q", "infer", str(tmp_path / "in"), "--checkpoint", str(tiny_checkpoint()), "--output", str(out),
                 "--no-progress", "--batch-size", "7"]) == 0
    masks = {}
    for codes, src in inputs.items():
        ref, res = nib.load(str(src)), nib.load(str(out / f"c_{codes}_liver.nii.gz"))
        assert res.shape == ref.shape
        np.testing.assert_array_equal(res.affine, ref.affine)
        assert res.get_data_dtype() == np.uint8
        masks[codes], world = _canonical(out / f"c_{codes}_liver.nii.gz")
        np.testing.assert_allclose(world, _canonical(src)[1], atol=1e-5)
    base = masks["RAS"].astype(bool)
    assert 0.05 * base.size > base.sum() > 500  # a real, liver-sized mask
    for codes, m in masks.items():
        m = m.astype(bool)
        dice = 2 * (m & base).sum() / (m.sum() + base.sum())
        assert dice >= 0.99, (codes, dice)
