"""Liver statistics: volume, HU percentiles inside the mask, border contact per array axis, the CSV."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from sam_mix_monai.inference.statistics import CSV_FIELDS, mask_statistics, statistics_row, write_statistics_csv


def test_values_against_numpy() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(60, 15, (20, 18, 10))
    mask = np.zeros(image.shape, bool)
    mask[4:12, 3:9, 2:7] = True
    affine = np.diag([0.8, 0.7, 2.5, 1.0])
    s = mask_statistics(mask, image, affine)
    inside = image[mask]
    assert s["volume_ml"] == pytest.approx(mask.sum() * 0.8 * 0.7 * 2.5 / 1000, abs=1e-3)
    assert s["hu_mean"] == pytest.approx(inside.mean(), abs=0.01)
    assert s["hu_median"] == pytest.approx(np.median(inside), abs=0.01)
    assert s["hu_p5"] == pytest.approx(np.percentile(inside, 5), abs=0.01)
    assert s["hu_p95"] == pytest.approx(np.percentile(inside, 95), abs=0.01)
    assert s["touches_border"] == {"i": False, "j": False, "k": False}


@pytest.mark.parametrize("index, axis", [((0, 5, 5), "i"), ((19, 5, 5), "i"), ((5, 17, 5), "j"), ((5, 5, 0), "k")])
def test_touches_border_per_axis(index: tuple, axis: str) -> None:
    mask = np.zeros((20, 18, 10), bool)
    mask[5:8, 5:8, 3:6] = True
    mask[index] = True
    s = mask_statistics(mask, np.zeros(mask.shape), np.eye(4))
    assert s["touches_border"] == {a: a == axis for a in "ijk"}


def test_empty_mask_and_csv(tmp_path: Path) -> None:
    empty = mask_statistics(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), np.eye(4))
    assert empty["volume_ml"] == 0 and empty["hu_mean"] is None
    full = mask_statistics(np.ones((4, 4, 4)), np.full((4, 4, 4), 50.0), np.eye(4))
    path = write_statistics_csv([statistics_row("a", full, "a_liver.nii.gz"), statistics_row("b", empty)],
                                tmp_path / "statistics.csv")
    rows = list(csv.DictReader(path.open()))
    assert tuple(rows[0]) == CSV_FIELDS
    assert rows[0]["case"] == "a" and float(rows[0]["hu_median"]) == 50.0 and rows[0]["touches_border_k"] == "True"
    assert rows[1]["hu_mean"] == "" and rows[1]["volume_ml"] == "0.0"
    with pytest.raises(ValueError, match="same 3D shape"):
        mask_statistics(np.zeros((4, 4, 4)), np.zeros((4, 4, 3)), np.eye(4))
