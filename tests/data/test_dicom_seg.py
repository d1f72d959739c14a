"""DICOM-SEG: reading dcmqi's liver SEG, writing ours from the CT series, read-back with pydicom and highdicom."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from nibabel.orientations import apply_orientation

from sam_mix_monai.data.dicom_seg import is_dicom_seg, read_dicom_seg, write_dicom_seg
from sam_mix_monai.data.io import check_same_grid, read_volume
from sam_mix_monai.inference.geometry import AxialGeometry
from sam_mix_monai.utils.errors import InputError
from tests.conftest import save_nifti


def _ras(vol) -> np.ndarray:
    return AxialGeometry(np.asarray(vol.affine), tuple(vol.shape[1:])).to_ras(vol.numpy()[0])


def _on_grid(mask_vol, image_vol) -> np.ndarray:
    """``mask_vol``'s voxels in ``image_vol``'s array order (the grids must agree in physical space)."""
    geo = AxialGeometry(np.asarray(image_vol.affine), tuple(image_vol.shape[1:]))
    return apply_orientation(_ras(mask_vol).astype(np.uint8), geo.inverse_ornt)


def test_reference_seg_reads_onto_the_ct(dcmqi_liver_seg: Path) -> None:
    ct = read_volume(dcmqi_liver_seg / "ct-3slice")
    ref = read_dicom_seg(dcmqi_liver_seg / "liver.dcm")
    check_same_grid(ct, ref, "ct", "seg")
    mask = _on_grid(ref, ct)
    assert int(mask.sum()) == 107098
    assert ct.numpy()[0][mask > 0].mean() == pytest.approx(37, abs=2)  # the README's fact (flipped: -125 or -43)
    nrrd = read_volume(dcmqi_liver_seg / "liver_seg.nrrd")
    np.testing.assert_array_equal(_ras(nrrd) > 0, _ras(ref) > 0)
    assert is_dicom_seg(dcmqi_liver_seg / "liver.dcm") and not is_dicom_seg(dcmqi_liver_seg / "ct-3slice" / "01.dcm")


def test_written_seg_reads_back_on_the_reference_frames(tmp_path: Path, dcmqi_liver_seg: Path) -> None:
    ct_dir = dcmqi_liver_seg / "ct-3slice"
    ct = read_volume(ct_dir)
    ref_path = dcmqi_liver_seg / "liver.dcm"
    mask = _on_grid(read_dicom_seg(ref_path), ct)
    ours = write_dicom_seg(mask, ct_dir, tmp_path / "ours.dcm")
    back, ref = read_dicom_seg(ours), read_dicom_seg(ref_path)  # highdicom
    np.testing.assert_array_equal(back.numpy(), ref.numpy())
    np.testing.assert_allclose(np.asarray(back.affine), np.asarray(ref.affine), atol=1e-4)
    # pydicom: the same source frames, positions and UIDs as dcmqi's SEG
    a, b = pydicom.dcmread(str(ours)), pydicom.dcmread(str(ref_path))
    assert a.SOPClassUID == b.SOPClassUID and a.SegmentationType == "BINARY"
    assert a.FrameOfReferenceUID == b.FrameOfReferenceUID
    assert a.ReferencedSeriesSequence[0].SeriesInstanceUID == b.ReferencedSeriesSequence[0].SeriesInstanceUID

    def frames(ds):
        return sorted((f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID,
                       tuple(round(float(v), 2) for v in f.PlanePositionSequence[0].ImagePositionPatient))
                      for f in ds.PerFrameFunctionalGroupsSequence)

    assert frames(a) == frames(b) and int(a.NumberOfFrames) == 3
    assert a.SegmentSequence[0].SegmentLabel == "Liver"
    assert a.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Liver"
    assert {p.name for p in tmp_path.iterdir()} == {"ours.dcm"}  # nothing else left (atomic write)


def test_nifti_source_is_refused(tmp_path: Path) -> None:
    src = save_nifti(tmp_path / "ct.nii.gz", np.zeros((8, 8, 4), np.int16), np.eye(4))
    with pytest.raises(InputError, match="needs a DICOM series input") as e:
        write_dicom_seg(np.zeros((8, 8, 4), np.uint8), src, tmp_path / "x.dcm")
    assert str(src) in str(e.value) and not (tmp_path / "x.dcm").exists()
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"not dicom")
    with pytest.raises(InputError, match="cannot read DICOM-SEG"):
        read_dicom_seg(broken)
