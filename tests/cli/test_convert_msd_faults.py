"""``sam-mix convert --format msd``: dataset.json validated, the liver taken by name (issue 22 #3).

Each bad dataset: exit 2, one line naming dataset.json and the key or label, no store, inputs unchanged.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from sam_mix_monai.cli.main import main
from tests.conftest import make_case_arrays, save_nifti
from tests.faults import Snapshot, assert_clean_failure

AFF = np.diag([0.8, 0.8, 2.5, 1.0])


def _dataset(root: Path, meta: dict | None = None, ids=(0, 1, 2)) -> Path:
    for i in ids:
        img, lab = make_case_arrays((40, 36, 16), seed=i)
        save_nifti(root / "imagesTr" / f"liver_{i}.nii.gz", img, AFF)
        save_nifti(root / "labelsTr" / f"liver_{i}.nii.gz", lab, AFF)
    if meta is None:
        meta = {"modality": {"0": "CT"}, "labels": {"0": "background", "1": "liver", "2": "cancer"}}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def _convert(root: Path, out: Path, *extra: str) -> int:
    return main(["-q", "convert", "--format", "msd", "--input", str(root), "--output", str(out), "--image-size", "32",
                 "--split", "train=0.67,test=0.33", "--workers", "1", "--no-progress", *extra])


_SPLEEN = {"modality": {"0": "CT"}, "labels": {"0": "background", "1": "spleen", "2": "cancer"}}


@pytest.mark.parametrize("meta, match", [
    (_SPLEEN, "no label named liver"),
    ({}, "labels"),
    ({"modality": "CT", "labels": {"0": "background", "1": "liver", "2": "cancer"}}, "modality"),
    ({"modality": {"0": "CT"}, "labels": {"0": "background", "1": "liver", "2": "cancer"}, "training": 5}, "training"),
    ({"modality": {"0": "CT"}, "labels": {"0": "background", "1": "liver", "2": "cancer"}, "numTraining": "3"},
     "numTraining"),
    ({"labels": {"0": "background", "1": "liver", "2": "cancer"}}, "channel_names"),
    ({"modality": {"0": "CT"}, "labels": {"0": "background", "one": "liver"}}, "not an integer label id"),
])
def test_bad_dataset_json_is_refused(tmp_path, capfd, meta, match):
    root = _dataset(tmp_path / "msd", meta)
    inputs = Snapshot(root)
    rc = _convert(root, tmp_path / "out" / "s.h5")
    assert_clean_failure(rc, capfd, [root / "dataset.json"], inputs, [tmp_path / "out"], match)


def test_label_id_converts_a_dataset_without_a_liver_label(tmp_path, capfd):
    root = _dataset(tmp_path / "msd", _SPLEEN)
    assert _convert(root, tmp_path / "s.h5", "--label-id", "1") == 0, capfd.readouterr().err
    with h5py.File(tmp_path / "s.h5") as f:
        assert f["mask"][...].max() == 1


def test_label_id_not_declared_is_refused(tmp_path, capfd):
    root = _dataset(tmp_path / "msd")
    inputs = Snapshot(root)
    rc = _convert(root, tmp_path / "out" / "s.h5", "--label-id", "5")
    assert_clean_failure(rc, capfd, [root / "dataset.json", "--label-id 5"], inputs, [tmp_path / "out"])


def test_liver_taken_by_name_not_by_value(tmp_path, capfd):
    """labels {1: cancer, 2: liver}: both are liver (tumour lies in the liver); background stays out."""
    root = _dataset(tmp_path / "msd", {"channel_names": {"0": "CT"}, "labels": {"background": 0, "cancer": 1, "liver": 2}})
    assert _convert(root, tmp_path / "s.h5") == 0, capfd.readouterr().err
    root2 = _dataset(tmp_path / "msd2", {"channel_names": {"0": "CT"}, "labels": {"background": 0, "kidney": 1, "liver": 2}})
    assert _convert(root2, tmp_path / "s2.h5") == 0, capfd.readouterr().err
    with h5py.File(tmp_path / "s.h5") as a, h5py.File(tmp_path / "s2.h5") as b:
        # label 1 (kidney) is not liver in the second: fewer liver pixels than with "cancer" merged in
        assert 0 < b["mask"][...].sum() < a["mask"][...].sum()


def test_listed_training_case_missing_on_disk(tmp_path, capfd):
    meta = {"modality": {"0": "CT"}, "labels": {"0": "background", "1": "liver", "2": "cancer"},
            "training": [{"image": f"./imagesTr/liver_{i}.nii.gz", "label": f"./labelsTr/liver_{i}.nii.gz"}
                         for i in (0, 1, 2, 7)]}
    root = _dataset(tmp_path / "msd", meta)
    inputs = Snapshot(root)
    rc = _convert(root, tmp_path / "out" / "s.h5")
    assert_clean_failure(rc, capfd, [root / "dataset.json", "imagesTr/liver_7.nii.gz"], inputs, [tmp_path / "out"],
                         "training.3")


def test_training_list_is_the_case_list(tmp_path, capfd):
    meta = {"modality": {"0": "CT"}, "labels": {"0": "background", "1": "liver", "2": "cancer"},
            "training": [{"image": f"./imagesTr/liver_{i}.nii.gz", "label": f"./labelsTr/liver_{i}.nii.gz"}
                         for i in (0, 2)]}
    root = _dataset(tmp_path / "msd", meta)  # liver_1 is on disk but not listed
    assert _convert(root, tmp_path / "s.h5") == 0, capfd.readouterr().err
    assert re.search(r"^total\s+2\s", capfd.readouterr().out, re.M)
