"""Input discovery: files, folders, TotalSegmentator sub-folders, DICOM series, names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sam_mix_monai.inference import find_cases
from sam_mix_monai.utils.errors import InputError
from tests.inference.tiny_model import save_case


def _nii(path: Path) -> Path:
    return save_case(path, np.zeros((4, 4, 4), np.int16), np.eye(4))


def test_folder_layouts(tmp_path: Path) -> None:
    d = tmp_path / "in"
    for name in ("volume-10.nii", "volume-2.nii", "segmentation-2.nii", "a_liver.nii.gz"):
        _nii(d / name)
    (d / "a_liver.json").write_text("{}")  # a_liver.nii.gz is an infer output only beside its JSON
    _nii(d / "s0001" / "ct.nii.gz")
    _nii(d / "s0001" / "segmentations" / "liver.nii.gz")
    (d / "notes").mkdir()
    (d / "notes" / "readme.txt").write_text("x")
    cases = find_cases([d])
    assert [c.name for c in cases] == ["s0001", "volume-2", "volume-10"]
    assert cases[0].path == d / "s0001" / "ct.nii.gz"


def test_files_dicom_and_unique_names(tmp_path: Path, real_ct: Path) -> None:
    a = _nii(tmp_path / "x" / "ct.nii.gz")
    b = _nii(tmp_path / "y" / "ct.nii.gz")
    cases = find_cases([a, b, real_ct / "dicom"])
    assert [c.name for c in cases] == ["x", "y", "dicom"]
    c = _nii(tmp_path / "z" / "case.nii.gz")
    assert [k.name for k in find_cases([c, c])] == ["case", "case_2"]


@pytest.mark.parametrize("what", ["missing", "txt", "empty"])
def test_bad_inputs(tmp_path: Path, what: str) -> None:
    p = {"missing": tmp_path / "nope.nii.gz", "txt": tmp_path / "a.txt", "empty": tmp_path / "empty"}[what]
    if what == "txt":
        p.write_text("x")
    if what == "empty":
        p.mkdir()
    with pytest.raises(InputError):
        find_cases([p])


def test_other_formats_and_our_outputs_in_a_folder(tmp_path: Path) -> None:
    for name in ("a.nrrd", "b.mha", "c.zip", "a_liver.nii.gz", "a_liver_probabilities.nii.gz", "a_liver.json", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    cases = find_cases([tmp_path])
    assert [(c.name, c.path.name) for c in cases] == [("a", "a.nrrd"), ("b", "b.mha"), ("c", "c.zip")]
    with pytest.raises(InputError, match="unsupported file type"):
        find_cases([tmp_path / "notes.txt"])
