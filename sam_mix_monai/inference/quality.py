"""Anatomical plausibility of a predicted liver mask: the checks behind ``quality: "check"``.

A network's own scores (classifier confidence, predicted IoU) stay high when it segments the wrong
organ, for example on a scan whose header orientation is wrong. These checks look at the mask in the
CT itself. Each failed check adds one human-readable reason.

Mask only (:func:`extent_checks`):

* **volume** outside :data:`LIVER_ML_RANGE`; when the scan's first or last slice cuts the mask, the
  volume is a lower bound, so only the upper limit applies;
* **craniocaudal extent** above :data:`MAX_EXTENT_MM`;
* **largest axial cross-section** under :data:`MIN_MAX_AREA_CM2` (applies to cut masks too);
* **in-plane border**: the mask reaches the image's first or last row or column (the liver lies inside
  the body, which lies inside the field of view). The first/last *slice* only sets ``cut_by_scan``.

Mask in the CT (:func:`anatomy_checks`):

* **HU inside the mask** (liver parenchyma is soft tissue; the figures of
  :func:`~sam_mix_monai.inference.statistics.mask_statistics`): mean outside :data:`HU_MEAN_RANGE`, 5th
  percentile under :data:`HU_P5_MIN` (fat or air inside), 95th percentile over :data:`HU_P95_MAX`
  (bone inside);
* **position**, in the patient's frame that the affine gives (nibabel's RAS+: +x towards the patient's
  right, +y anterior, +z superior; :meth:`~sam_mix_monai.inference.geometry.AxialGeometry.to_ras`):
  * at least :data:`MIN_RIGHT_FRACTION` of the mask on the patient's right of the body's midline;
  * the spine (bone near the midline) posterior of the body's centre: if not, the image content does
    not match its header (an anterior-posterior flip or a 180° in-plane rotation);
  * the mask's centre anterior of the spine;
  * where the lungs are in the scan: the mask's centre below the lungs' centre (under the diaphragm).

Landmarks are found on a grid of about 3 mm (the CT strided, no interpolation): the body is the
largest 3D component above -400 HU; bone is above 250 HU; the lungs are air (below -400 HU) inside
the body outline, on slices where it fills over 8 % of the outline.

Calibration, on the three real CTs of the developers' ``../shared/data/real`` with their reference
masks (ircadb_07 / totalseg_example_dicom / dcmqi_liver_seg): HU mean 121 / 89 / 37, 5th percentile
98 / 52 / -61, 95th percentile 145 / 117 / 107; share of the liver on the patient's right
0.85 / 0.84 / 0.77; spine position (-1 posterior edge of the body, +1 anterior edge) -0.52 / -0.36 /
-0.53; largest axial cross-section 221 / - / 238 cm² (the spleen 38, the kidneys 24-36). Moving the content of
ircadb_07 (image and mask together, header unchanged) flips the right share to 0.15 (left-right), the
spine to +0.52 (anterior-posterior), or both (180°). The reference masks of other organs give: spleen
0.00 on the right; right kidney 138 mL; bone 95th percentile 814 HU; right lung mean -832 HU. The
thresholds sit between these groups with margin; they are screening heuristics for a second look,
not validated cut-offs. A fatty liver (mean under 20 HU) is flagged too, and the reason says why.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage as ndi

from sam_mix_monai.inference.geometry import AxialGeometry
from sam_mix_monai.inference.statistics import mask_statistics

__all__ = [
    "HU_MEAN_RANGE",
    "HU_P5_MIN",
    "HU_P95_MAX",
    "LIVER_ML_RANGE",
    "MAX_EXTENT_MM",
    "MIN_MAX_AREA_CM2",
    "MIN_RIGHT_FRACTION",
    "anatomy_checks",
    "extent_checks",
    "find_landmarks",
]

#: Liver volumes (mL) outside this range are flagged (adult livers: about 1000-2500 mL).
LIVER_ML_RANGE = (300.0, 5000.0)
#: Craniocaudal liver extents above this (mm) are flagged (livers reach about 120-250 mm).
MAX_EXTENT_MM = 300.0
#: A largest axial cross-section under this (cm²) is flagged: livers reach well over 100 cm² at their
#: widest slice (the three real CTs: 175-234 cm² on average per slice); a kidney or the spleen about 20-40.
MIN_MAX_AREA_CM2 = 50.0
#: Mean HU inside the mask: liver is soft tissue (unenhanced about 50-65 HU, portal venous up to ~150).
HU_MEAN_RANGE = (20.0, 200.0)
#: 5th percentile HU inside the mask below this: fat (about -100 HU) or air inside.
HU_P5_MIN = -100.0
#: 95th percentile HU inside the mask above this: bone inside.
HU_P95_MAX = 300.0
#: Share of mask voxels on the patient's right of the body midline below this is flagged.
MIN_RIGHT_FRACTION = 0.6
#: Spine position (body-relative, -1 posterior .. +1 anterior) above this means an AP-flipped image.
MAX_SPINE_AP = -0.1

_BODY_HU, _BONE_HU, _AIR_HU = -400.0, 250.0, -400.0
_GRID_MM = 3.0
_LUNG_SHARE = 0.08
_MIN_LUNG_MM = 20.0


def _round(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(float(x), nd)


def extent_checks(mask: np.ndarray, geometry: AxialGeometry) -> tuple[dict[str, Any], list[str]]:
    """Volume, craniocaudal extent and border contact of a mask (no image needed).

    Args:
        mask: ``(X, Y, Z)`` binary mask on the input grid.
        geometry: the input grid.

    Returns:
        The fields (``liver_extent_mm``, ``scan_extent_mm``, ``max_area_cm2``, ``cut_by_scan``,
        ``touches_image_border``)
        and the reasons for a check (empty for an empty mask: "no liver found" is the caller's).
    """
    m = geometry.to_ras(np.asarray(mask) != 0)
    fields: dict[str, Any] = {"scan_extent_mm": round(geometry.depth * geometry.ras_spacing[2], 1)}
    if not m.any():
        fields.update(liver_extent_mm=0.0, max_area_cm2=0.0, cut_by_scan=None, touches_image_border=False)
        return fields, []
    z = np.flatnonzero(m.any((0, 1)))
    cut = [name for name, hit in (("inferior", z[0] == 0), ("superior", z[-1] == m.shape[2] - 1)) if hit]
    border = bool(m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any())
    extent = (z[-1] - z[0] + 1) * geometry.ras_spacing[2]
    area = float(m.sum((0, 1)).max()) * geometry.ras_spacing[0] * geometry.ras_spacing[1] / 100.0
    fields.update(liver_extent_mm=round(float(extent), 1), max_area_cm2=round(area, 1), cut_by_scan="+".join(cut) or None,
                  touches_image_border=border)
    reasons = []
    ml = float(np.count_nonzero(m)) * geometry.voxel_volume_ml
    lo, hi = LIVER_ML_RANGE
    if ml > hi or (ml < lo and not cut):
        reasons.append(f"liver volume {ml:.0f} mL outside {lo:.0f}-{hi:.0f} mL")
    if extent > MAX_EXTENT_MM:
        reasons.append(f"liver spans {extent:.0f} mm craniocaudally (> {MAX_EXTENT_MM:.0f} mm)")
    if area < MIN_MAX_AREA_CM2:
        reasons.append(f"largest axial cross-section {area:.0f} cm² is small for a liver (< {MIN_MAX_AREA_CM2:.0f} cm²)")
    if border:
        reasons.append("mask touches the image's in-plane border")
    return fields, reasons


def find_landmarks(image: np.ndarray, geometry: AxialGeometry) -> dict[str, Any]:
    """Body midline and extent, spine and lungs of a CT, in RAS voxel coordinates of the input grid.

    Args:
        image: ``(X, Y, Z)`` HU on the input grid.
        geometry: the input grid.

    Returns:
        ``body`` (centre and half-size in x and y, voxels), ``spine_ap`` (-1 posterior .. +1 anterior
        edge of the body, ``None`` without midline bone), ``lung_z`` (mean RAS z index of lung air,
        ``None`` when under 20 mm of lung slices).
    """
    sx, sy, sz = (max(1, int(round(_GRID_MM / s))) for s in geometry.ras_spacing)
    ct = np.asarray(geometry.to_ras(image)[::sx, ::sy, ::sz], dtype=np.float32)
    body = ct > _BODY_HU
    lab, n = ndi.label(body)
    if n == 0:
        return {"body": None, "spine_ap": None, "lung_z": None}
    body = lab == (1 + int(np.argmax(np.bincount(lab.ravel())[1:])))
    wx = body.sum((1, 2)).astype(np.float64)
    wy = body.sum((0, 2)).astype(np.float64)
    x0, x1 = _weighted_range(wx)
    y0, y1 = _weighted_range(wy)
    cx, cy, hx, hy = (x0 + x1) / 2, (y0 + y1) / 2, max((x1 - x0) / 2, 1.0), max((y1 - y0) / 2, 1.0)
    band = np.abs(np.arange(ct.shape[0]) - cx) < 0.15 * hx
    bone_y = np.nonzero(((ct > _BONE_HU) & body)[band])[1]
    spine_ap = float((np.median(bone_y) - cy) / hy) if bone_y.size >= 10 else None
    outline = np.stack([ndi.binary_fill_holes(body[:, :, k]) for k in range(ct.shape[2])], axis=2)
    air = (outline & (ct < _AIR_HU)).sum((0, 1)).astype(np.float64)
    share = air / np.maximum(outline.sum((0, 1)), 1)
    lung = share > _LUNG_SHARE
    lung_z = None
    if lung.sum() * sz * geometry.ras_spacing[2] >= _MIN_LUNG_MM:
        k = np.flatnonzero(lung)
        lung_z = float(np.average(k, weights=air[k]) * sz)
    return {"body": (cx * sx, cy * sy, hx * sx, hy * sy), "spine_ap": spine_ap, "lung_z": lung_z}


def _weighted_range(w: np.ndarray) -> tuple[float, float]:
    """Indices of the 2nd and 98th percentile of a profile (robust to arms, table edges, noise)."""
    c = np.cumsum(w) / max(w.sum(), 1.0)
    return float(np.searchsorted(c, 0.02)), float(np.searchsorted(c, 0.98))


def anatomy_checks(mask: np.ndarray, image: np.ndarray, geometry: AxialGeometry,
                   statistics: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[str]]:
    """HU and position checks of a liver mask in its CT.

    Args:
        mask: ``(X, Y, Z)`` binary mask on the input grid.
        image: ``(X, Y, Z)`` HU on the same grid.
        geometry: the input grid.
        statistics: :func:`~sam_mix_monai.inference.statistics.mask_statistics` of the mask (its HU
            mean and percentiles are what the HU checks read); computed here when ``None``.

    Returns:
        The fields (``right_fraction``, ``liver_ap``, ``spine_ap``, ``below_lungs``) and the reasons
        for a check (none for an empty mask).
    """
    if np.shape(mask) != np.shape(image):
        raise ValueError(f"mask {np.shape(mask)} and image {np.shape(image)} differ in shape")
    m = np.asarray(mask) != 0
    fields: dict[str, Any] = dict.fromkeys(("right_fraction", "liver_ap", "spine_ap", "below_lungs"))
    if not m.any():
        return fields, []
    stats = statistics if statistics is not None else mask_statistics(m, image, geometry.affine)
    mean, p5, p95 = stats["hu_mean"], stats["hu_p5"], stats["hu_p95"]
    reasons = []
    lo, hi = HU_MEAN_RANGE
    if not lo <= mean <= hi:
        reasons.append(f"mean {mean:.0f} HU inside the mask is not liver tissue ({lo:.0f}-{hi:.0f} HU)")
    if p5 < HU_P5_MIN:
        reasons.append(f"fat or air inside the mask (5th percentile {p5:.0f} HU < {HU_P5_MIN:.0f})")
    if p95 > HU_P95_MAX:
        reasons.append(f"bone inside the mask (95th percentile {p95:.0f} HU > {HU_P95_MAX:.0f})")

    marks = find_landmarks(image, geometry)
    if marks["body"] is None:
        return fields, reasons
    cx, cy, hx, hy = marks["body"]
    ras = geometry.to_ras(m)
    wx, wy, wz = (ras.sum(tuple(a for a in range(3) if a != ax)).astype(np.float64) for ax in range(3))
    right = float(wx[int(np.floor(cx)) + 1:].sum() / wx.sum())  # RAS +x: the patient's right
    liver_ap = float((np.average(np.arange(wy.size), weights=wy) - cy) / hy)
    fields.update(right_fraction=_round(right), liver_ap=_round(liver_ap), spine_ap=_round(marks["spine_ap"]))
    if right < MIN_RIGHT_FRACTION:
        reasons.append(f"only {right:.0%} of the mask lies on the patient's right (liver: mostly right)")
    spine = marks["spine_ap"]
    if spine is not None and spine > MAX_SPINE_AP:
        reasons.append("the spine lies anterior in this image: image content and header orientation disagree")
    if spine is not None and liver_ap <= spine:
        reasons.append("mask lies posterior of the spine")
    if marks["lung_z"] is not None:
        below = bool(np.average(np.arange(wz.size), weights=wz) < marks["lung_z"])
        fields["below_lungs"] = below
        if not below:
            reasons.append("mask centre lies above the lungs' centre (liver: under the diaphragm)")
    return fields, reasons
