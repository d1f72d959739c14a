"""The 3D-IRCADb reader: a synthetic patient written with pydicom, and the real patient 7 read in place."""

from __future__ import annotations

import zipfile
from pathlib import Path

import h5py
import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from sam_mix_monai.cli.main import main
from sam_mix_monai.data.converter import convert
from sam_mix_monai.data.ircadb import find_ircadb_patients, ircadb_structures, read_ircadb_patient, read_ircadb_structure
from sam_mix_monai.data.layouts import find_cases
from sam_mix_monai.transforms import SlicingConfig
from sam_mix_monai.utils.errors import InputError

SHAPE = (40, 32, 10)  # (columns x, rows y, slices z)


def _write_series(folder: Path, vol: np.ndarray, spacing=(0.8, 0.8, 2.5), iop=(1, 0, 0, 0, 1, 0)) -> None:
    """Write ``vol`` ``(X, Y, Z)`` as one DICOM file per slice, named like IRCADb (``image_N``, no extension)."""
    folder.mkdir(parents=True, exist_ok=True)
    series, study = generate_uid(), generate_uid()
    for k in range(vol.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"image_{k}"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.SeriesInstanceUID, ds.StudyInstanceUID = "CT", series, study
        ds.InstanceNumber = k
        ds.ImagePositionPatient = [0, 0, k * spacing[2]]
        ds.ImageOrientationPatient = list(iop)
        ds.PixelSpacing = [spacing[1], spacing[0]]
        ds.SliceThickness = spacing[2]
        ds.Rows, ds.Columns = vol.shape[1], vol.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        plane = np.ascontiguousarray(vol[:, :, k].T)  # DICOM rows run along y
        if plane.dtype == np.uint8:
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        else:
            plane = plane.astype(np.int16)
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        ds.PixelData = plane.tobytes()
        ds.save_as(str(folder / f"image_{k}"), enforce_file_format=True)


def _fake_patient(root: Path, zipped: bool = True, tumour: bool = True, mask_iop=(1, 0, 0, 0, 1, 0)) -> Path:
    """A small IRCADb-layout patient: liver box of 120 HU, a tumour series partly outside it, a bone series."""
    x, y, z = SHAPE
    img = np.full(SHAPE, -1000, np.int16)
    img[4:-4, 4:-4] = 40
    liver = np.zeros(SHAPE, np.uint8)
    liver[6:20, 8:24, 2:8] = 255
    img[liver > 0] = 120
    tum = np.zeros(SHAPE, np.uint8)
    tum[18:24, 10:14, 4:6] = 255  # 4 of its 6 columns lie outside the liver
    bone = np.zeros(SHAPE, np.uint8)
    bone[28:32, 14:18, :] = 255
    img[bone > 0] = 700
    _write_series(root / "PATIENT_DICOM", img)
    masks = root / "MASKS_DICOM"
    _write_series(masks / "liver", liver, iop=mask_iop)
    _write_series(masks / "bone", bone)
    if tumour:
        _write_series(masks / "livertumor01", tum)
    if zipped:
        with zipfile.ZipFile(root / "MASKS_DICOM.zip", "w") as zf:
            for f in sorted(masks.rglob("*")):
                zf.write(f, f.relative_to(root).as_posix())
        for f in sorted(masks.rglob("*"), reverse=True):
            f.rmdir() if f.is_dir() else f.unlink()
        masks.rmdir()
    return root


def test_zip_and_folder_read_the_same_liver_with_tumour_merged(tmp_path):
    a = read_ircadb_patient(_fake_patient(tmp_path / "3Dircadb1.2", zipped=True))
    b = read_ircadb_patient(_fake_patient(tmp_path / "3Dircadb1.3", zipped=False))
    assert a.structures == b.structures == ("liver", "livertumor01")
    assert a.image.shape == (1, *SHAPE) and a.liver.dtype.is_floating_point is False
    # liver 14*16*6 voxels plus the tumour's 4 outside columns * 4 rows * 2 slices
    assert int(a.liver.sum()) == int(b.liver.sum()) == 14 * 16 * 6 + 4 * 4 * 2
    np.testing.assert_allclose(a.spacing, (0.8, 0.8, 2.5), atol=1e-6)
    np.testing.assert_allclose(a.affine[:3, 3], 0.0)  # no real origin in these files
    assert a.affine[0, 0] < 0 and a.affine[1, 1] < 0  # LPS tags -> RAS affine
    hu = a.image.numpy()[a.liver.numpy() > 0]
    assert np.median(hu) == 120
    assert ircadb_structures(tmp_path / "3Dircadb1.2" / "MASKS_DICOM.zip") == ["bone", "liver", "livertumor01"]
    bone = read_ircadb_structure(tmp_path / "3Dircadb1.3", "bone", like=a.image)
    assert int(bone.sum()) == 4 * 4 * SHAPE[2]


def test_mask_with_left_right_flipped_orientation_is_refused(tmp_path):
    p = _fake_patient(tmp_path / "p", mask_iop=(-1, 0, 0, 0, 1, 0))
    with pytest.raises(InputError, match=r"liver.*geometry does not match"):
        read_ircadb_patient(p)


def test_missing_parts_are_input_errors(tmp_path):
    p = _fake_patient(tmp_path / "p", zipped=False, tumour=False)
    for f in sorted((p / "MASKS_DICOM" / "liver").iterdir()):
        f.unlink()
    (p / "MASKS_DICOM" / "liver").rmdir()
    with pytest.raises(InputError, match="no 'liver' mask series"):
        read_ircadb_patient(p)
    (tmp_path / "q").mkdir()
    with pytest.raises(InputError, match="no PATIENT_DICOM"):
        read_ircadb_patient(tmp_path / "q")
    bad = tmp_path / "r"
    ct = np.full(SHAPE, -1000, np.int16)
    ct[:, 4:-4, 4:-4] = 40  # soft tissue: a constant image is refused before the zip is read
    _write_series(bad / "PATIENT_DICOM", ct)
    (bad / "MASKS_DICOM.zip").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="MASKS_DICOM.zip: cannot read zip"):
        read_ircadb_patient(bad)


def test_parent_folder_lists_patients_by_number_and_converts(tmp_path):
    root = tmp_path / "ircadb"
    for n in (10, 2):
        _fake_patient(root / f"3Dircadb1.{n}", zipped=n == 2)
    assert [p.name for p in find_ircadb_patients(root)] == ["3Dircadb1.2", "3Dircadb1.10"]
    assert [c.case_id for c in find_cases(root / "3Dircadb1.10", "ircadb")] == ["3Dircadb1.10"]
    out = tmp_path / "s.h5"
    summary = convert(root, out, "ircadb", SlicingConfig(keep_rate="all", image_size=32), {"train": 0.5, "test": 0.5},
                      workers=1, progress=False)
    assert sum(summary.cases.values()) == 2 and sum(summary.slices.values()) == 2 * SHAPE[2]
    assert sum(summary.positive.values()) == 2 * 6  # liver on slices 2..7
    rc = main(["convert", "--format", "ircadb", "--input", str(tmp_path / "nothing"), "--output", str(tmp_path / "x.h5")])
    assert rc == 2 and not (tmp_path / "x.h5").exists()


# --- the real patient 7 (CC BY-NC-ND: read in place; converted files go to tmp_path only) ---


@pytest.fixture(scope="module")
def patient7(ircadb_07):
    return read_ircadb_patient(ircadb_07)


def test_real_patient_liver_volume_and_hu(patient7):
    p = patient7
    assert p.case_id == "ircadb_07" and p.structures == ("liver",)
    assert p.image.shape == (1, 512, 512, 151)
    np.testing.assert_allclose(p.spacing, (0.782, 0.782, 1.6), atol=1e-4)
    liver = p.liver.numpy()[0] > 0
    assert int(liver.sum()) == 1_461_944  # 1430 mL, README: about 1,430 mL
    z = np.flatnonzero(liver.any((0, 1)))
    assert (z.min(), z.max(), z.size) == (48, 145, 98)
    hu = p.image.numpy()[0]
    assert 115 < hu[liver].mean() < 127  # measured 120.9 HU (README: about 121)
    # The same check on a left-right flipped mask fails: it lands on fat, bowel gas and the spleen's side.
    flipped = liver[::-1]
    assert not 115 < hu[flipped].mean() < 127
    assert hu[flipped].mean() < 0  # measured -100 HU


def test_real_patient_converts_from_the_cli(ircadb_07, tmp_path):
    out = tmp_path / "p7.h5"
    rc = main(["convert", "--format", "ircadb", "--input", str(ircadb_07), "--output", str(out), "--keep-rate", "all",
               "--image-size", "64", "--split", "train=1", "--workers", "1", "--no-progress"])
    assert rc == 0
    with h5py.File(out) as f:
        labels = f["label"][:]
        assert len(labels) == 151 and int(labels.sum()) == 98
