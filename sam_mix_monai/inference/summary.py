"""Per-case JSON summary: liver volume, extent, classifier confidence, predicted IoU, a quality flag.

Fields (``None`` where the network gives no scores, e.g. a U-Net or an exported model):

* ``liver_volume_ml``: mask voxels times the voxel volume of the input grid;
* ``slices_with_liver`` / ``slices``: axial slices (canonical z) that hold mask voxels, out of all;
* ``mean_classifier_confidence``: mean over all slices of ``max(p, 1 - p)``, ``p`` the liver
  probability: how decided the classifier gate was (0.5 = coin toss, 1 = certain);
* ``mean_liver_prob``: mean liver probability over the slices that hold mask voxels;
* ``mean_predicted_iou``: mean of SAM's IoU prediction for the chosen mask over those slices
  (slices the classifier gate skipped have no prediction, NaN, and no mask voxels: they never count;
  NaN values are ignored, and a mean over none is ``None``);
* ``anatomy``: the fields of the anatomical checks of :mod:`.quality` (side, spine and lungs,
  craniocaudal extent against the scan's, largest cross-section, in-plane border, ``cut_by_scan``);
* ``statistics``: given the CT, the liver statistics of :mod:`.statistics` (volume, HU inside the
  mask, ``touches_border`` per array axis), which the HU checks of :mod:`.quality` read;
* ``quality``: ``"ok"`` or ``"check"``; ``quality_reasons`` lists why (no liver found, a mean
  classifier confidence under :data:`MIN_CONFIDENCE`, a mean predicted IoU under :data:`MIN_IOU`,
  and every failed check of :mod:`.quality`: volume, extent, border and, given the CT, HU and
  position).

The thresholds are screening heuristics for a human to take a second look, not validated cut-offs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from nibabel.orientations import aff2axcodes

from sam_mix_monai.inference.geometry import AxialGeometry
from sam_mix_monai.inference.quality import LIVER_ML_RANGE, anatomy_checks, extent_checks
from sam_mix_monai.inference.statistics import mask_statistics
from sam_mix_monai.utils.atomic import atomic_output
from sam_mix_monai.utils.errors import PathLike

__all__ = ["case_summary", "write_summary", "MIN_CONFIDENCE", "MIN_IOU", "LIVER_ML_RANGE"]

#: Mean classifier confidence ``max(p, 1-p)`` below which a case is flagged.
MIN_CONFIDENCE = 0.75
#: Mean predicted IoU (liver slices) below which a case is flagged.
MIN_IOU = 0.5


def _mean(x: np.ndarray | None) -> float | None:
    if x is None or x.size == 0 or np.all(np.isnan(x)):
        return None
    return round(float(np.nanmean(x)), 4)


def case_summary(
    mask: np.ndarray,
    geometry: AxialGeometry,
    liver_prob: np.ndarray | None = None,
    chosen_iou: np.ndarray | None = None,
    image: np.ndarray | None = None,
    statistics: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Summarise one predicted mask.

    Args:
        mask: ``(X, Y, Z)`` binary mask on the input grid.
        geometry: the input grid.
        liver_prob: per canonical slice classifier probability, or ``None``.
        chosen_iou: per canonical slice predicted IoU (NaN where SAM did not run), or ``None``.
        image: ``(X, Y, Z)`` HU of the input, same grid: enables the HU and position checks.
        statistics: :func:`.statistics.mask_statistics` of the mask, stored under ``"statistics"``
            (computed here when ``image`` is given and this is ``None``).
        extra: more fields to store first (case id, paths, timings).

    Returns:
        A JSON-serialisable dict.
    """
    voxels = int(np.count_nonzero(mask))
    other = tuple(a for a in range(3) if a != geometry.axis)
    per_slice = np.asarray(mask.any(axis=other))  # along the array axis
    if geometry.flipped:
        per_slice = per_slice[::-1]  # canonical (inferior -> superior) order
    has_liver = per_slice.astype(bool)
    conf = None if liver_prob is None else np.maximum(liver_prob, 1.0 - liver_prob)
    prob_liver = None if liver_prob is None else liver_prob[has_liver]
    iou_liver = None if chosen_iou is None else chosen_iou[has_liver]
    z = np.flatnonzero(has_liver)
    out: dict[str, Any] = dict(extra)
    out.update(
        shape=list(mask.shape),
        orientation="".join(aff2axcodes(geometry.affine)),
        spacing_ras_mm=[round(s, 4) for s in geometry.ras_spacing],
        liver_voxels=voxels,
        liver_volume_ml=round(voxels * geometry.voxel_volume_ml, 2),
        slices=int(geometry.depth),
        slices_with_liver=int(has_liver.sum()),
        liver_slice_range=[int(z[0]), int(z[-1])] if z.size else None,
        mean_classifier_confidence=_mean(conf),
        mean_liver_prob=_mean(prob_liver),
        mean_predicted_iou=_mean(iou_liver),
    )
    reasons = ["no liver found"] if voxels == 0 else []
    anatomy, why = extent_checks(mask, geometry)
    reasons += why
    if image is not None:
        if statistics is None:
            statistics = mask_statistics(mask, image, geometry.affine)
        fields, why = anatomy_checks(mask, image, geometry, statistics)
        anatomy.update(fields)
        reasons += why
    out["anatomy"] = anatomy
    if statistics is not None:
        out["statistics"] = statistics
    if out["mean_classifier_confidence"] is not None and out["mean_classifier_confidence"] < MIN_CONFIDENCE:
        reasons.append(f"low classifier confidence {out['mean_classifier_confidence']:.2f} < {MIN_CONFIDENCE}")
    if out["mean_predicted_iou"] is not None and out["mean_predicted_iou"] < MIN_IOU:
        reasons.append(f"low predicted IoU {out['mean_predicted_iou']:.2f} < {MIN_IOU}")
    out["quality"] = "check" if reasons else "ok"
    out["quality_reasons"] = reasons
    return out


def write_summary(summary: dict[str, Any], path: PathLike) -> Path:
    """Write ``summary`` as indented JSON, atomically."""
    target = Path(path)
    with atomic_output(target) as tmp:
        tmp.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return target
