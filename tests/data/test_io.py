import gzip

import nibabel as nib
import numpy as np
import pytest

from sam_mix_monai.data.io import (
    canonical_geometry,
    check_ct_values,
    check_label_values,
    check_same_grid,
    read_volume,
)
from sam_mix_monai.utils.errors import InputError
from tests.conftest import save_nifti


def test_real_dicom_series_reads_in_hu_with_ras_affine(real_ct):
    vol = read_volume(real_ct / "dicom")
    assert tuple(vol.shape) == (1, 512, 512, 20)
    assert float(vol.min()) == pytest.approx(-1024) and float(vol.max()) == pytest.approx(1839)
    aff = np.asarray(vol.affine)
    assert np.allclose(np.abs(np.diag(aff)[:3]), [0.9765625, 0.9765625, 2.0])
    # DICOM LPS origin (-249.5, -437.5, -804.5) becomes RAS (249.5, 437.5, -804.5).
    assert np.allclose(aff[:3, 3], [249.51171875, 437.51171875, -804.5])
    check_ct_values(vol, real_ct)


def test_real_mask_lies_on_the_dicom_grid_despite_other_orientation(real_ct):
    ct, mask = read_volume(real_ct / "dicom"), read_volume(real_ct / "liver.nii.gz")
    assert nib.aff2axcodes(np.asarray(mask.affine)) == ("L", "A", "S")
    check_same_grid(ct, mask, "ct", "mask")  # no error: same physical grid


def test_corrupt_and_truncated_nifti(tmp_path):
    good = save_nifti(tmp_path / "a.nii.gz", np.zeros((8, 8, 8), np.int16), np.eye(4))
    data = good.read_bytes()
    (tmp_path / "trunc.nii.gz").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.nii.gz").write_bytes(gzip.compress(b"not a nifti at all" * 10))
    for name in ("trunc.nii.gz", "junk.nii.gz"):
        with pytest.raises(InputError, match=name):
            read_volume(tmp_path / name)


@pytest.mark.parametrize("shape", [(16, 16), (8, 8, 8, 3)])
def test_2d_and_4d_are_rejected(tmp_path, shape):
    p = save_nifti(tmp_path / "x.nii", np.zeros(shape, np.int16), np.eye(4))
    with pytest.raises(InputError, match="3D volume"):
        read_volume(p)


def test_singleton_fourth_axis_is_accepted(tmp_path):
    p = save_nifti(tmp_path / "x.nii", np.zeros((8, 8, 8, 1), np.int16), np.eye(4))
    assert tuple(read_volume(p).shape) == (1, 8, 8, 8)


def test_missing_file_and_unknown_type(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_volume(tmp_path / "nope.nii")
    (tmp_path / "x.png").write_bytes(b"x")
    with pytest.raises(InputError, match="unsupported"):
        read_volume(tmp_path / "x.png")


def test_nan_and_non_ct_values(tmp_path):
    a = np.full((8, 8, 8), -1000.0, np.float32)
    a[2, 2, 2] = np.nan
    with pytest.raises(InputError, match="NaN"):
        check_ct_values(read_volume(save_nifti(tmp_path / "n.nii", a, np.eye(4))), "n.nii")
    mr = np.random.default_rng(0).uniform(0, 900, (8, 8, 8)).astype(np.float32)
    with pytest.raises(InputError, match="Hounsfield"):
        check_ct_values(read_volume(save_nifti(tmp_path / "mr.nii", mr, np.eye(4))), "mr.nii")


def test_label_values(tmp_path):
    lab = np.zeros((8, 8, 8), np.uint8)
    lab[0, 0, 0] = 5
    with pytest.raises(InputError, match=r"\[5\]"):
        check_label_values(read_volume(save_nifti(tmp_path / "l.nii", lab, np.eye(4))), "l.nii")
    frac = np.full((8, 8, 8), 0.5, np.float32)
    with pytest.raises(InputError, match="non-integer"):
        check_label_values(read_volume(save_nifti(tmp_path / "f.nii", frac, np.eye(4))), "f.nii")


def test_geometry_mismatch(tmp_path):
    img = read_volume(save_nifti(tmp_path / "i.nii", np.zeros((8, 8, 8), np.int16), np.diag([1, 1, 2, 1.0])))
    other_shape = read_volume(save_nifti(tmp_path / "s.nii", np.zeros((8, 8, 9), np.uint8), np.diag([1, 1, 2, 1.0])))
    shifted = read_volume(save_nifti(tmp_path / "o.nii", np.zeros((8, 8, 8), np.uint8), np.array(
        [[1, 0, 0, 5.0], [0, 1, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]])))
    with pytest.raises(InputError, match="shape"):
        check_same_grid(img, other_shape, "i.nii", "s.nii")
    with pytest.raises(InputError, match="geometry"):
        check_same_grid(img, shifted, "i.nii", "o.nii")


def test_canonical_geometry_matches_nibabel():
    aff = np.array([[0, 0, -2.0, 10], [-0.8, 0, 0, 5], [0, 0.7, 0, -3], [0, 0, 0, 1]])
    img = nib.Nifti1Image(np.zeros((5, 6, 7), np.uint8), aff)
    canon = nib.as_closest_canonical(img)
    a, s = canonical_geometry(aff, (5, 6, 7))
    assert np.allclose(a, canon.affine) and s == canon.shape


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".nii"])
def test_simpleitk_formats_match_the_nifti_reading(tmp_path, suffix):
    import SimpleITK as sitk

    rng = np.random.default_rng(0)
    arr = rng.integers(-1000, 300, (12, 10, 6)).astype(np.int16)
    aff = np.array([[-0.8, 0, 0, 12.0], [0, -0.7, 0, -30.0], [0, 0, 2.5, 40.0], [0, 0, 0, 1]])  # LPS header
    ref = read_volume(save_nifti(tmp_path / "ref.nii.gz", arr, aff))
    other = tmp_path / f"copy{suffix}"
    sitk.WriteImage(sitk.ReadImage(str(tmp_path / "ref.nii.gz")), str(other))
    vol = read_volume(other)
    assert tuple(vol.shape) == (1, 12, 10, 6)
    np.testing.assert_array_equal(vol.numpy(), ref.numpy())
    np.testing.assert_allclose(np.asarray(vol.affine), np.asarray(ref.affine), atol=1e-5)


def test_zipped_dicom_series_equals_the_folder(tmp_path, real_ct):
    import zipfile

    folder = real_ct / "dicom"
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f"nested/{f.name}")
    a, b = read_volume(folder), read_volume(archive)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_allclose(np.asarray(a.affine), np.asarray(b.affine))
    assert b.meta["filename_or_obj"] == str(archive)


def test_bad_zip_and_zip_without_dicom(tmp_path):
    import zipfile

    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(InputError, match="cannot read zip file") as e:
        read_volume(bad)
    assert str(bad) in str(e.value)
    empty = tmp_path / "notes.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("readme.txt", "no images here")
    with pytest.raises(InputError, match="no DICOM series found in the zip"):
        read_volume(empty)
    broken = tmp_path / "broken.nrrd"
    broken.write_bytes(b"NRRD0004\ntype: garbage\n")
    with pytest.raises(InputError, match="cannot read image"):
        read_volume(broken)
