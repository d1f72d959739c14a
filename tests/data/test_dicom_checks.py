"""DICOM series checks: the real series pass, the tolerance is what the module documents."""

from __future__ import annotations

import pytest

from sam_mix_monai.data.dicom_checks import SPACING_TOLERANCE, SPACING_TOLERANCE_MM
from sam_mix_monai.data.io import read_volume
from sam_mix_monai.utils.errors import InputError
from tests.conftest import require_real
from tests.faults import write_dicom_series


@pytest.mark.parametrize("name, sub, slices", [("ircadb_07", "PATIENT_DICOM", 151),
                                               ("totalseg_example_dicom", "dicom", 20),
                                               ("dcmqi_liver_seg", "ct-3slice", 3)])
def test_real_series_pass(name, sub, slices):
    vol = read_volume(require_real(name) / sub)
    assert vol.shape[-1] == slices


def test_spacing_tolerance(tmp_path):
    dz = 2.5
    within = dz * (1 + SPACING_TOLERANCE) + SPACING_TOLERANCE_MM * 0.5  # one gap just inside the tolerance
    beyond = dz * (1 + 1.5 * SPACING_TOLERANCE) + SPACING_TOLERANCE_MM
    for gap, ok in ((within, True), (beyond, False)):
        z = [0.0, dz, 2 * dz, 2 * dz + gap, 3 * dz + gap, 4 * dz + gap]
        folder = write_dicom_series(tmp_path / f"s{gap:.4f}", n=6, positions=z)
        if ok:
            assert read_volume(folder).shape[-1] == 6
        else:
            with pytest.raises(InputError, match="uneven slice spacing"):
                read_volume(folder)


def test_stray_non_dicom_files_are_ignored(tmp_path):
    folder = write_dicom_series(tmp_path / "s", n=4)
    (folder / "README.txt").write_text("notes")
    (folder / "thumbs.png").write_bytes(b"\x89PNG")
    assert read_volume(folder).shape[-1] == 4
