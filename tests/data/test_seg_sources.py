"""DICOM-SEG on real and stripped series (issue 22 #1): the committed scanner example, series without
optional modules or a Frame of Reference UID; a missing geometry attribute is named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from sam_mix_monai.cli.main import main
from sam_mix_monai.data.dicom_seg import read_dicom_seg, write_dicom_seg
from sam_mix_monai.data.io import read_volume
from sam_mix_monai.inference.geometry import AxialGeometry
from sam_mix_monai.utils.errors import InputError
from tests.conftest import ROOT
from tests.faults import Snapshot, assert_clean_failure, write_dicom_series
from tests.inference.tiny_model import tiny_checkpoint

EXAMPLE = ROOT / "examples" / "totalseg_example_dicom" / "dicom"
_OPTIONAL = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID",
             "AccessionNumber", "ReferringPhysicianName", "Manufacturer", "SeriesNumber", "InstitutionName")


def _ras(vol) -> np.ndarray:
    return AxialGeometry(np.asarray(vol.affine), tuple(vol.shape[1:])).to_ras(np.asarray(vol)[0])


def _strip(folder: Path, remove: tuple[str, ...]) -> Path:
    for f in sorted(folder.iterdir()):
        ds = pydicom.dcmread(str(f))
        for keyword in remove:
            if keyword in ds:
                delattr(ds, keyword)
        ds.save_as(str(f))
    return folder


def _cube(vol) -> np.ndarray:
    m = np.zeros(tuple(vol.shape[1:]), np.uint8)
    x, y, z = m.shape
    m[x // 4 : x // 2, y // 3 : 2 * y // 3, 1 : z - 1] = 1
    return m


def _round_trip(source: Path, seg: Path) -> None:
    vol = read_volume(source)
    mask = _cube(vol)
    write_dicom_seg(mask, source, seg)
    import highdicom as hd

    assert hd.seg.segread(str(seg)).number_of_frames == mask.shape[2]
    back = read_dicom_seg(seg)
    mask_vol = vol.clone()
    mask_vol.set_array(mask[None])
    np.testing.assert_array_equal(_ras(back), _ras(mask_vol))


def test_seg_of_the_committed_scanner_example_reads_back(tmp_path):
    inputs = Snapshot(EXAMPLE)
    _round_trip(EXAMPLE, tmp_path / "seg.dcm")
    assert inputs.unchanged()


@pytest.mark.parametrize("remove", [_OPTIONAL, ("FrameOfReferenceUID",), ("StudyInstanceUID", "SeriesInstanceUID"),
                                    (*_OPTIONAL, "FrameOfReferenceUID")])
def test_seg_of_a_series_missing_optional_modules(tmp_path, remove):
    src = _strip(write_dicom_series(tmp_path / "series", n=12), remove)
    _round_trip(src, tmp_path / "seg.dcm")


@pytest.mark.parametrize("keyword", ["ImageOrientationPatient", "PixelSpacing"])
def test_missing_geometry_attribute_is_named(tmp_path, keyword):
    src = write_dicom_series(tmp_path / "series", n=12)
    vol = read_volume(src)
    _strip(src, (keyword,))
    with pytest.raises(InputError, match=f"{keyword} is missing or empty: .*--output-type nifti"):
        write_dicom_seg(_cube(vol), src, tmp_path / "seg.dcm")
    assert not (tmp_path / "seg.dcm").exists()


def test_infer_dicom_seg_on_the_committed_example_equals_the_nifti_mask(tmp_path, capfd):
    inputs = Snapshot(EXAMPLE)
    rc = main(["-q", "infer", "-i", str(EXAMPLE), "--checkpoint", str(tiny_checkpoint()), "-o", str(tmp_path / "out"),
               "-ot", "nifti,dicom_seg", "--no-progress"])
    assert rc == 0, capfd.readouterr().err
    nifti = read_volume(tmp_path / "out" / "dicom_liver.nii.gz")
    seg = read_dicom_seg(tmp_path / "out" / "dicom_liver.dcm")
    np.testing.assert_array_equal(_ras(seg), _ras(nifti))
    assert inputs.unchanged()


def test_infer_dicom_seg_with_a_missing_attribute_is_one_line(tmp_path, capfd):
    src = _strip(write_dicom_series(tmp_path / "in" / "series", n=12), ("SOPClassUID",))
    for f in src.iterdir():  # and none in the file meta header either
        ds = pydicom.dcmread(str(f))
        ds.file_meta.MediaStorageSOPClassUID = ""
        ds.save_as(str(f))
    inputs = Snapshot(src)
    rc = main(["-q", "infer", str(src), "--checkpoint", str(tiny_checkpoint()), "-o", str(tmp_path / "out"),
               "-ot", "dicom_seg", "--no-progress"])
    assert_clean_failure(rc, capfd, [src], inputs, [tmp_path / "out"], "SOPClassUID is missing or empty")
