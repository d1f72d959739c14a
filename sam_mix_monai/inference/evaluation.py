"""Folder evaluation: a folder of predicted masks against a folder of references, at full resolution.

The counterpart of ``nnUNetv2_evaluate_folder``, for masks written by any tool (ours, TotalSegmentator,
nnU-Net). Per case: 3D Dice, 95th-percentile Hausdorff distance in mm (MONAI ``DiceMetric`` and the
engines' :class:`~sam_mix_monai.engines.protocols.BoundedHausdorffDistanceMetric`, the ``volume3d``
protocol's metrics) and the volume difference (prediction minus reference) in mL.

* **Pairing by case id**, never by listing order: the id of a file is its name without the volume
  suffix and without a trailing ``_liver`` / ``_seg`` / ``_mask`` / ``_label`` (``case7_liver.nii.gz``,
  ``case7.nii.gz`` and ``case7.seg.dcm`` are all ``case7``); LiTS' ``segmentation-N`` and
  ``volume-N`` are both ``N``; a sub-folder ``<id>/`` holding a DICOM series or one mask file
  (TotalSegmentator's ``<id>/liver.nii.gz``) is ``<id>``. A case found on one side only stops the
  run with one line naming it.
* **Files**: anything :func:`~sam_mix_monai.data.io.read_volume` reads (NIfTI, NRRD, MHA, DICOM
  series folders or zips) and DICOM-SEG files (``.dcm``). A voxel is foreground where the label is
  non-zero, or equal to ``label`` when one is given (multi-label references). A prediction must be a
  binary mask (:mod:`.mask_values`): a label map ({0, 3, 7}), a probability map or NaN voxels are
  refused unless ``threshold`` is given; ``*_probabilities`` files of ``sam-mix infer`` are skipped.
* **Physical space**: the two grids must describe the same voxels in world coordinates, whatever
  their header orientation (:func:`~sam_mix_monai.data.io.check_same_grid`); both are then compared
  in RAS order. Different grids are an error unless ``resample=True``, which resamples the
  prediction onto the reference grid (nearest neighbour, SimpleITK).
* An empty prediction where the reference has liver scores HD95 = the volume diagonal (as in
  ``volume3d``); both empty: Dice 1, HD95 0.

Example:
    >>> from sam_mix_monai.inference.evaluation import case_id
    >>> [case_id(n) for n in ("case7_liver.nii.gz", "segmentation-3.nii", "volume-3_liver.nii.gz", "s01.nrrd")]
    ['case7', '3', '3', 's01']
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from sam_mix_monai.data.io import check_same_grid, is_volume_file, read_volume, volume_suffix
from sam_mix_monai.inference.geometry import AxialGeometry
from sam_mix_monai.inference.mask_values import binary_prediction
from sam_mix_monai.utils.atomic import atomic_output, output_set
from sam_mix_monai.utils.errors import InputError, PathLike

__all__ = ["CSV_FIELDS", "case_id", "evaluate_folders", "evaluate_pair", "find_masks", "summarize", "write_results"]

logger = logging.getLogger(__name__)

#: Columns of ``evaluation.csv``.
CSV_FIELDS = ("case", "dice", "hd95_mm", "volume_pred_ml", "volume_ref_ml", "volume_diff_ml", "resampled",
              "prediction", "reference")
_TAIL = re.compile(r"(_liver|_seg|_mask|_label|\.seg)$", re.IGNORECASE)
_LITS = re.compile(r"^(segmentation|volume)-(\d+)$")


def case_id(path: PathLike) -> str:
    """The case id of a mask file or folder name (see the module docstring)."""
    name = Path(path).name
    sfx = volume_suffix(name) or (".dcm" if name.lower().endswith(".dcm") else "")
    stem = name[: -len(sfx)] if sfx else name
    stem = _TAIL.sub("", stem)
    m = _LITS.match(stem)
    return m.group(2) if m else stem


def _is_mask_file(p: Path) -> bool:
    return p.is_file() and (is_volume_file(p) or p.name.lower().endswith(".dcm")) and ".part" not in p.name


_PROBABILITIES = re.compile(r"_probabilities$", re.IGNORECASE)


def _is_probability_file(p: Path) -> bool:
    """``<case>_liver_probabilities.nii.gz`` of ``sam-mix infer --save-probabilities`` (not a mask)."""
    sfx = volume_suffix(p.name)
    return bool(sfx) and bool(_PROBABILITIES.search(p.name[: -len(sfx)]))


def find_masks(folder: PathLike) -> dict[str, Path]:
    """Case id -> mask file (or DICOM folder) in ``folder``.

    Raises:
        InputError: a missing folder, an empty one, or two masks with the same case id.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(root, "folder not found")
    found: dict[str, Path] = {}
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        path: Path | None = None
        if _is_mask_file(entry) and _is_probability_file(entry):
            logger.info("%s: skipped, a probability map (sam-mix infer --save-probabilities), not a mask", entry)
            continue
        if _is_mask_file(entry):
            path = entry
        elif entry.is_dir():
            files = [f for f in sorted(entry.iterdir()) if _is_mask_file(f)]
            volumes = [f for f in files if is_volume_file(f)]
            if len(volumes) == 1:
                path = volumes[0]  # <id>/liver.nii.gz
            elif files:
                path = entry  # a DICOM series folder
        if path is None:
            continue
        key = case_id(entry)
        if key in found:
            raise InputError(path, f"case id {key!r} appears twice (also {found[key]})")
        found[key] = path
    if not found:
        raise InputError(root, "no mask files (NIfTI, NRRD, MHA, DICOM-SEG, DICOM series) found in folder")
    return found


def _read_mask(path: Path, label: int | None, prediction: bool = False, threshold: float | None = None) -> Any:
    from sam_mix_monai.data.dicom_seg import is_dicom_seg, read_dicom_seg

    vol = read_dicom_seg(path) if is_dicom_seg(path) else read_volume(path)
    arr = vol.as_tensor()[0]
    if prediction:
        binary = binary_prediction(arr, path, threshold)
    else:
        binary = (arr != 0) if label is None else (arr == label)
    vol = vol.clone()
    vol.set_array(binary.to(torch.uint8)[None])
    return vol


def _resample_onto(moving: Any, reference: Any) -> Any:
    """``moving`` resampled onto ``reference``'s grid, nearest neighbour (SimpleITK)."""
    import SimpleITK as sitk

    def to_sitk(vol: Any) -> "sitk.Image":
        arr = np.asarray(vol.as_tensor()[0].numpy(), dtype=np.uint8)
        img = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(2, 1, 0)))  # ITK wants (z, y, x)
        lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(vol.affine, dtype=np.float64)
        spacing = np.sqrt((lps[:3, :3] ** 2).sum(0))
        img.SetSpacing([float(s) for s in spacing])
        img.SetDirection([float(d) for d in (lps[:3, :3] / spacing).ravel()])
        img.SetOrigin([float(o) for o in lps[:3, 3]])
        return img

    out = sitk.Resample(to_sitk(moving), to_sitk(reference), sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    res = reference.clone()
    res.set_array(torch.from_numpy(sitk.GetArrayFromImage(out).transpose(2, 1, 0).copy())[None])
    return res


def _crop_box(a: np.ndarray, b: np.ndarray) -> tuple[slice, ...]:
    """The union bounding box of two masks plus one voxel: surfaces and distances stay the same."""
    both = a | b
    box = []
    for axis in range(3):
        hit = np.flatnonzero(both.any(axis=tuple(i for i in range(3) if i != axis)))
        box.append(slice(max(int(hit[0]) - 1, 0), int(hit[-1]) + 2))
    return tuple(box)


def evaluate_pair(prediction: PathLike, reference: PathLike, resample: bool = False,
                  label: int | None = None, threshold: float | None = None) -> dict[str, Any]:
    """Dice, HD95 (mm) and volumes of one prediction against its reference.

    The prediction must be a binary mask (0 and one other value); a probability map or a label map
    is scored only with ``threshold`` (foreground: value >= ``threshold``).

    Raises:
        InputError: unreadable files, a prediction that is not a binary mask (without ``threshold``) or
            holds NaN, or grids that differ in physical space (without ``resample``).
    """
    from monai.metrics import DiceMetric

    from sam_mix_monai.engines.protocols import BoundedHausdorffDistanceMetric

    pred_path, ref_path = Path(prediction), Path(reference)
    pred, ref = _read_mask(pred_path, None, True, threshold), _read_mask(ref_path, label)
    resampled = False
    try:
        check_same_grid(ref, pred, ref_path, pred_path)
    except InputError as e:
        if not resample:
            raise InputError(pred_path, f"{e.problem} (pass --resample to resample the prediction onto the "
                                        f"reference grid)") from None
        pred, resampled = _resample_onto(pred, ref), True
    geo_p = AxialGeometry(np.asarray(pred.affine, dtype=np.float64), tuple(pred.shape[1:]))
    geo_r = AxialGeometry(np.asarray(ref.affine, dtype=np.float64), tuple(ref.shape[1:]))
    p = np.ascontiguousarray(geo_p.to_ras(pred.as_tensor()[0].numpy())).astype(bool)
    y = np.ascontiguousarray(geo_r.to_ras(ref.as_tensor()[0].numpy())).astype(bool)
    spacing = list(geo_r.ras_spacing)
    voxel_ml = geo_r.voxel_volume_ml
    vp, vr = float(p.sum()) * voxel_ml, float(y.sum()) * voxel_ml
    if not y.any() and not p.any():
        dice, hd95 = 1.0, 0.0
    elif not y.any() or not p.any():
        dice = 0.0
        hd95 = math.sqrt(sum((n * s) ** 2 for n, s in zip(y.shape, spacing)))  # the volume diagonal
    else:
        box = _crop_box(p, y)
        pt = torch.from_numpy(p[box])[None, None].float()
        yt = torch.from_numpy(y[box])[None, None].float()
        dice = float(DiceMetric(include_background=True, reduction="none")(pt, yt)[0, 0])
        hd95 = float(BoundedHausdorffDistanceMetric(percentile=95, reduction="none")(pt, yt, spacing=spacing)[0, 0])
    return {"dice": round(dice, 5), "hd95_mm": round(hd95, 3), "volume_pred_ml": round(vp, 3),
            "volume_ref_ml": round(vr, 3), "volume_diff_ml": round(vp - vr, 3), "resampled": resampled,
            "prediction": str(pred_path), "reference": str(ref_path)}


#: Unpaired cases named in the error line, per side (the rest are counted).
MAX_NAMED_UNPAIRED = 5


def _unpaired(keys: list[str], masks: dict[str, Path], root: PathLike, what: str) -> str:
    """``"2 prediction(s) in DIR without a reference: a.nii.gz (case a), b.nii.gz (case b)"``, first few named."""
    named = []
    for k in keys[:MAX_NAMED_UNPAIRED]:
        try:
            shown = masks[k].relative_to(root)
        except ValueError:
            shown = masks[k]
        named.append(f"{shown} (case {k})")
    more = f" and {len(keys) - MAX_NAMED_UNPAIRED} more" if len(keys) > MAX_NAMED_UNPAIRED else ""
    return f"{len(keys)} {what} in {root}: {', '.join(named)}{more}"


def _pairs(pred_dir: PathLike, ref_dir: PathLike) -> list[tuple[str, Path, Path]]:
    """Pair the two folders' masks by case id; every unpaired case (the first few, and a count) in one error."""
    preds, refs = find_masks(pred_dir), find_masks(ref_dir)
    only_pred = sorted(set(preds) - set(refs), key=_natural)
    only_ref = sorted(set(refs) - set(preds), key=_natural)
    if only_pred or only_ref:
        parts = []
        if only_pred:
            parts.append(_unpaired(only_pred, preds, pred_dir, "prediction(s) without a reference"))
        if only_ref:
            parts.append(_unpaired(only_ref, refs, ref_dir, "reference(s) without a prediction"))
        raise InputError(pred_dir if only_pred else ref_dir,
                         "unpaired cases (paired by case id): " + "; ".join(parts))
    return [(k, preds[k], refs[k]) for k in sorted(preds, key=_natural)]


def _natural(key: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean, standard deviation, median, minimum and maximum of each metric over the cases."""
    out: dict[str, Any] = {"cases": len(rows)}
    for key in ("dice", "hd95_mm", "volume_diff_ml"):
        v = np.asarray([r[key] for r in rows], dtype=np.float64)
        out[key] = {"mean": round(float(v.mean()), 5), "std": round(float(v.std()), 5),
                    "median": round(float(np.median(v)), 5), "min": round(float(v.min()), 5),
                    "max": round(float(v.max()), 5)} if v.size else None
    out["abs_volume_diff_ml_mean"] = round(float(np.mean([abs(r["volume_diff_ml"]) for r in rows])), 3) if rows else None
    return out


def write_results(rows: Sequence[dict[str, Any]], summary: dict[str, Any], output_dir: PathLike) -> list[Path]:
    """``evaluation.csv`` (one row per case) and ``evaluation_summary.json``, written together."""
    out = Path(output_dir)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: r.get(k) for k in CSV_FIELDS} for r in rows)
    targets = [out / "evaluation.csv", out / "evaluation_summary.json"]
    with output_set():
        with atomic_output(targets[0]) as tmp:
            tmp.write_text(buf.getvalue())
        with atomic_output(targets[1]) as tmp:
            tmp.write_text(json.dumps(summary, indent=1) + "\n")
    return targets


def evaluate_folders(pred_dir: PathLike, ref_dir: PathLike, resample: bool = False,
                     label: int | None = None, threshold: float | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Score every prediction in ``pred_dir`` against its reference in ``ref_dir``.

    Returns:
        ``(rows, summary)``: per-case metrics (with ``case``) and :func:`summarize` of them.

    Raises:
        InputError: unpaired cases, unreadable files, or grids that differ (without ``resample``).
    """
    rows = []
    for key, pred, ref in _pairs(pred_dir, ref_dir):
        rows.append({"case": key, **evaluate_pair(pred, ref, resample, label, threshold)})
    return rows, summarize(rows)
