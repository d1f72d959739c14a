"""Folder evaluation: pairing by case id, physical-space comparison, Dice / HD95 / volume, DICOM-SEG references."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.metrics import compute_hausdorff_distance

from sam_mix_monai.cli.main import main
from sam_mix_monai.inference.evaluation import case_id, evaluate_pair, find_masks
from sam_mix_monai.utils.errors import InputError

SPACING = (0.8, 0.7, 2.5)


def _boxes(shape=(40, 36, 20)):
    ref = np.zeros(shape, np.uint8)
    ref[10:30, 8:26, 5:15] = 1
    pred = np.zeros(shape, np.uint8)
    pred[12:30, 8:28, 4:15] = 1
    return pred, ref


def _save(path: Path, arr: np.ndarray, affine: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, affine), str(path))
    return path


def _ras_affine() -> np.ndarray:
    return np.diag([*SPACING, 1.0])


def _lps_copy(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same voxels stored with the first two axes reversed (an LPS header)."""
    aff = _ras_affine().copy()
    aff[0, 0], aff[1, 1] = -SPACING[0], -SPACING[1]
    aff[0, 3], aff[1, 3] = (arr.shape[0] - 1) * SPACING[0], (arr.shape[1] - 1) * SPACING[1]
    return np.ascontiguousarray(arr[::-1, ::-1]), aff


def test_known_pair_in_another_orientation(tmp_path: Path) -> None:
    pred, ref = _boxes()
    lps, lps_aff = _lps_copy(pred)
    p = _save(tmp_path / "pred" / "case1_liver.nii.gz", lps, lps_aff)
    r = _save(tmp_path / "ref" / "case1.nii.gz", ref * 2, _ras_affine())  # label 2 counts as foreground
    res = evaluate_pair(p, r)
    inter = (pred & ref).sum()
    assert res["dice"] == pytest.approx(2 * inter / (pred.sum() + ref.sum()), abs=1e-5)
    hd = float(compute_hausdorff_distance(torch.from_numpy(pred)[None, None], torch.from_numpy(ref)[None, None],
                                          percentile=95, spacing=list(SPACING))[0, 0])
    assert res["hd95_mm"] == pytest.approx(hd, abs=1e-3) and hd > 0
    voxel_ml = np.prod(SPACING) / 1000
    assert res["volume_diff_ml"] == pytest.approx((int(pred.sum()) - int(ref.sum())) * voxel_ml, abs=1e-3)
    assert res["resampled"] is False


def test_other_grid_needs_resample(tmp_path: Path) -> None:
    pred, ref = _boxes()
    coarse = pred[::2, ::2, :]  # boxes start and end on even indices: exact on the coarse grid
    aff = np.diag([SPACING[0] * 2, SPACING[1] * 2, SPACING[2], 1.0])
    aff[:2, 3] = [SPACING[0] / 2, SPACING[1] / 2]  # voxel centres of the 2x grid
    p = _save(tmp_path / "case1_liver.nii.gz", coarse, aff)
    r = _save(tmp_path / "case1.nii.gz", ref, _ras_affine())
    with pytest.raises(InputError, match="--resample") as e:
        evaluate_pair(p, r)
    assert str(p) in str(e.value)
    res = evaluate_pair(p, r, resample=True)
    expected = 2 * (pred & ref).sum() / (pred.sum() + ref.sum())
    assert res["resampled"] and res["dice"] == pytest.approx(expected, abs=1e-5)


def test_cli_folders_csv_summary_and_unpaired(tmp_path: Path, capsys) -> None:
    pred, ref = _boxes()
    for i in (1, 2):
        _save(tmp_path / "pred" / f"volume-{i}_liver.nii.gz", pred if i == 1 else ref, _ras_affine())
        _save(tmp_path / "ref" / f"segmentation-{i}.nii", ref, _ras_affine())
    out = tmp_path / "scores"
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"), "--output", str(out)]) == 0
    rows = list(csv.DictReader((out / "evaluation.csv").open()))
    assert [r["case"] for r in rows] == ["1", "2"] and float(rows[1]["dice"]) == 1.0 and float(rows[1]["hd95_mm"]) == 0
    summary = json.loads((out / "evaluation_summary.json").read_text())
    assert summary["cases"] == 2 and summary["dice"]["max"] == 1.0 and summary["dice"]["min"] < 0.9
    assert "2 case(s): Dice" in capsys.readouterr().out
    # an unpaired case: exit 2, one line naming it, nothing written
    extra = _save(tmp_path / "pred" / "volume-3_liver.nii.gz", pred, _ras_affine())
    out2 = tmp_path / "scores2"
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"), "--output", str(out2)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"sam-mix evaluate: error: {tmp_path / 'pred'}:")
    assert f"1 prediction(s) without a reference in {tmp_path / 'pred'}: {extra.name} (case 3)" in err
    assert not out2.exists() or not any(out2.iterdir())
    # every unpaired case on both sides: the first five named per side, the rest counted
    for i in range(4, 10):
        _save(tmp_path / "pred" / f"volume-{i}_liver.nii.gz", pred, _ras_affine())
    _save(tmp_path / "ref" / "segmentation-11.nii", ref, _ras_affine())
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"), "--output", str(out2)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "7 prediction(s) without a reference" in err and "and 2 more" in err
    assert all(f"volume-{i}_liver.nii.gz (case {i})" in err for i in range(3, 8)) and "volume-8_" not in err
    assert f"1 reference(s) without a prediction in {tmp_path / 'ref'}: segmentation-11.nii (case 11)" in err
    assert not out2.exists() or not any(out2.iterdir())


def test_case_ids_and_duplicates(tmp_path: Path) -> None:
    assert [case_id(n) for n in ("a_liver.nii.gz", "a.nrrd", "a_seg.dcm", "segmentation-7.nii.gz", "b.mha")] == [
        "a", "a", "a", "7", "b"]
    _save(tmp_path / "x" / "s01" / "liver.nii.gz", np.zeros((4, 4, 4), np.uint8), np.eye(4))  # TotalSegmentator
    assert {k: p.name for k, p in find_masks(tmp_path / "x").items()} == {"s01": "liver.nii.gz"}
    _save(tmp_path / "y" / "a.nii.gz", np.zeros((4, 4, 4), np.uint8), np.eye(4))
    _save(tmp_path / "y" / "a_liver.nii.gz", np.zeros((4, 4, 4), np.uint8), np.eye(4))
    with pytest.raises(InputError, match="appears twice"):
        find_masks(tmp_path / "y")


def test_dicom_seg_reference_against_nrrd(tmp_path: Path, dcmqi_liver_seg: Path) -> None:
    (tmp_path / "ref").mkdir()
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref" / "liver.dcm").symlink_to(dcmqi_liver_seg / "liver.dcm")
    (tmp_path / "pred" / "liver.nrrd").symlink_to(dcmqi_liver_seg / "liver_seg.nrrd")
    res = evaluate_pair(tmp_path / "pred" / "liver.nrrd", tmp_path / "ref" / "liver.dcm")
    assert res["dice"] == 1.0 and res["hd95_mm"] == 0.0 and res["volume_diff_ml"] == 0.0
    assert res["volume_ref_ml"] == pytest.approx(107098 * 0.810547 ** 2 * 1.0 / 1000, rel=1e-4)
