"""Liver statistics of a predicted mask: volume, HU inside the mask, whether the scan edge cuts it.

Fields of :func:`mask_statistics` (HU fields ``None`` for an empty mask):

* ``volume_ml``: mask voxels times the voxel volume of the input grid;
* ``hu_mean``, ``hu_median``, ``hu_p5``, ``hu_p95``: intensity of the input inside the mask (HU for CT);
* ``touches_border``: per array axis of the input (``i``, ``j``, ``k``: nibabel / ITK-SNAP / Slicer IJK
  order), whether the mask reaches the first or last index along it: the scan edge may cut the liver
  off there, so the volume is a lower bound (TotalSegmentator users met this, its issue #204).

:func:`write_statistics_csv` writes one row per case for a folder of inputs.

Example:
    >>> import numpy as np
    >>> img = np.full((10, 10, 4), -1000.0); img[2:5, 2:5, :] = 60.0
    >>> s = mask_statistics(img > 0, img, np.diag([1.0, 1.0, 2.0, 1.0]))
    >>> s["volume_ml"], s["hu_mean"], s["touches_border"]
    (0.072, 60.0, {'i': False, 'j': False, 'k': True})
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from sam_mix_monai.utils.atomic import atomic_output
from sam_mix_monai.utils.errors import PathLike

__all__ = ["AXES", "CSV_FIELDS", "mask_statistics", "statistics_row", "write_statistics_csv"]

#: Names of the input's array axes, as nibabel, ITK-SNAP and 3D Slicer (IJK) show them.
AXES = ("i", "j", "k")
#: Columns of ``statistics.csv``.
CSV_FIELDS = ("case", "volume_ml", "hu_mean", "hu_median", "hu_p5", "hu_p95",
              "touches_border_i", "touches_border_j", "touches_border_k", "mask_file")


def mask_statistics(mask: np.ndarray, image: np.ndarray, affine: np.ndarray) -> dict[str, Any]:
    """Volume, intensity percentiles and border contact of ``mask`` on ``image``'s grid.

    Args:
        mask: ``(X, Y, Z)`` binary mask in the input's array order.
        image: the input ``(X, Y, Z)`` intensities (HU), same shape.
        affine: 4x4 voxel-to-world affine (mm).

    Returns:
        A JSON-serialisable dict (see the module docstring).
    """
    m = np.asarray(mask).astype(bool, copy=False)
    if m.shape != np.shape(image) or m.ndim != 3:
        raise ValueError(f"mask {m.shape} and image {np.shape(image)} must be the same 3D shape")
    voxel_ml = float(abs(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3]))) / 1000.0
    n = int(np.count_nonzero(m))
    out: dict[str, Any] = {"volume_ml": round(n * voxel_ml, 3)}
    if n:
        values = np.asarray(image)[m].astype(np.float64)
        p5, median, p95 = np.percentile(values, [5, 50, 95])
        out.update(hu_mean=round(float(values.mean()), 2), hu_median=round(float(median), 2),
                   hu_p5=round(float(p5), 2), hu_p95=round(float(p95), 2))
    else:
        out.update(hu_mean=None, hu_median=None, hu_p5=None, hu_p95=None)
    touches = {}
    for axis, name in enumerate(AXES):
        first = np.take(m, 0, axis=axis)
        last = np.take(m, m.shape[axis] - 1, axis=axis)
        touches[name] = bool(first.any() or last.any())
    out["touches_border"] = touches
    return out


def statistics_row(case: str, stats: Mapping[str, Any], mask_file: PathLike | None = None) -> dict[str, Any]:
    """One ``statistics.csv`` row of a case's :func:`mask_statistics`."""
    row: dict[str, Any] = {"case": case, **{k: stats.get(k) for k in CSV_FIELDS[1:6]}}
    for name in AXES:
        row[f"touches_border_{name}"] = stats["touches_border"][name]
    row["mask_file"] = "" if mask_file is None else str(mask_file)
    return row


def write_statistics_csv(rows: Sequence[Mapping[str, Any]], path: PathLike) -> Path:
    """Write the per-case rows (:func:`statistics_row`) as CSV, atomically; empty HU fields stay blank."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in CSV_FIELDS})
    target = Path(path)
    with atomic_output(target) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")
    return target
