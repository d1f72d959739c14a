"""``sam-mix evaluate --pred/--ref`` refuses garbage predictions instead of scoring them (issue 22 #4)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from sam_mix_monai.cli.main import main
from tests.faults import Snapshot, assert_clean_failure

SHAPE = (40, 36, 20)
AFFINE = np.diag([0.8, 0.8, 2.5, 1.0])


def _ref() -> np.ndarray:
    ref = np.zeros(SHAPE, np.uint8)
    ref[10:30, 8:28, 4:16] = 1
    return ref


def _save(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, AFFINE), str(path))
    return path


def _folders(tmp_path: Path, pred: np.ndarray) -> tuple[Path, Path, Path]:
    p = _save(tmp_path / "pred" / "case0_liver.nii.gz", pred)
    _save(tmp_path / "ref" / "case0.nii.gz", _ref())
    return p, tmp_path / "pred", tmp_path / "ref"


def _evaluate(pred: Path, ref: Path, out: Path, *extra: str) -> int:
    return main(["-q", "evaluate", "--pred", str(pred), "--ref", str(ref), "--output", str(out), *extra])


def _label_map() -> np.ndarray:
    a = _ref() * 3
    a[20:30, 8:28, 4:16] = 7
    return a


def _probabilities() -> np.ndarray:
    return (0.02 + 0.9 * _ref()).astype(np.float32)  # every voxel > 0


def _nan() -> np.ndarray:
    a = _ref().astype(np.float32)
    a[0, 0, 0] = np.nan
    return a


@pytest.mark.parametrize("make, match", [(_label_map, "not binary: values {0, 3, 7}"),
                                         (_probabilities, "a probability map"),
                                         (_nan, "NaN or infinite voxel")])
def test_garbage_prediction_is_refused(tmp_path, capfd, make, match):
    p, pred, ref = _folders(tmp_path, make())
    inputs = Snapshot(pred, ref)
    rc = _evaluate(pred, ref, tmp_path / "out")
    assert_clean_failure(rc, capfd, [p], inputs, [tmp_path / "out"], match)


def test_threshold_scores_a_probability_map(tmp_path, capfd):
    _, pred, ref = _folders(tmp_path, _probabilities())
    rc = _evaluate(pred, ref, tmp_path / "out", "--threshold", "0.5")
    out = capfd.readouterr().out
    assert rc == 0 and "Dice 1.0000" in out, out
    assert "[case0_liver.nii.gz vs case0.nii.gz]" in out  # what was paired


def test_threshold_must_be_finite(tmp_path, capfd):
    _, pred, ref = _folders(tmp_path, _probabilities())
    inputs = Snapshot(pred, ref)
    rc = _evaluate(pred, ref, tmp_path / "out", "--threshold", "nan")
    assert_clean_failure(rc, capfd, ["--threshold"], inputs, [tmp_path / "out"], "finite")


def test_infer_output_folder_skips_probability_maps(tmp_path, capfd, caplog):
    import logging

    _, pred, ref = _folders(tmp_path, _ref())
    _save(pred / "case0_liver_probabilities.nii.gz", _probabilities())
    (pred / "case0_liver.json").write_text("{}")
    with caplog.at_level(logging.INFO, logger="sam_mix_monai.inference.evaluation"):
        rc = _evaluate(pred, ref, tmp_path / "out")
    out = capfd.readouterr().out
    assert rc == 0 and "Dice 1.0000" in out, out
    assert "case0_liver_probabilities.nii.gz: skipped, a probability map" in caplog.text
