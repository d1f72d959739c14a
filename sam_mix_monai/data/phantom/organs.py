"""Abdominal organs other than the liver: spleen, kidneys, stomach, bowel, colon, pancreas."""

from __future__ import annotations

import numpy as np

from sam_mix_monai.data.phantom.geometry import F32, Canvas, ellipse_q, paint_polyline
from sam_mix_monai.data.phantom.patient import Patient
from sam_mix_monai.data.phantom.thorax import DIAPHRAGM_MM, diaphragm_zeta
from sam_mix_monai.data.phantom.tissues import LESION_TISSUES, LIVER_TISSUES, SOFT_CONTENTS
from sam_mix_monai.data.phantom.tissues import Tissue as T
from sam_mix_monai.data.phantom.vessels import aorta_center, ivc_center, portal_points

_BED = (*SOFT_CONTENTS, T.PANCREAS)


def paint_spleen(canvas: Canvas, p: Patient) -> None:
    """Crescent-shaped spleen in the left upper quadrant against the posterolateral wall."""
    k = p.org["spleen"]
    cz, hz = -68.0 + p.org["spleen_z"], 58.0 * k
    cu, cv = p.UV(-0.66, -0.3)
    ru, rv = 0.27 * p.ac * k, 0.5 * p.bc * k
    box = canvas.box(cu - rv - 10, cu + rv + 10, cv - rv - 10, cv + rv + 10, cz - hz, min(cz + hz, 0.0))
    if box is None:
        return
    g = np.sqrt(np.clip(1 - ((box.Z - F32(cz)) / F32(hz)) ** 2, 0, 1)) ** 0.8
    ang = -0.75  # long axis along the posterolateral wall
    outer = ellipse_q(box.U, box.V, cu, cv, ru * g, rv * g, ang) < 1
    hil = ellipse_q(box.U, box.V, cu + 0.75 * ru * np.cos(0.4), cv + 0.75 * ru * np.sin(0.4), 0.55 * ru * g, 0.7 * rv * g, ang) < 1
    zd = diaphragm_zeta(p, box.U, box.V)
    box.paint(outer & ~hil & (box.Z < zd - F32(DIAPHRAGM_MM / canvas.zs)), T.SPLEEN, only=_BED)


def kidney_frame(p: Patient, side: float) -> dict:
    """Centre, radii and hilum direction of a kidney (``side`` +1 right, -1 left)."""
    k = p.org["kid_r" if side > 0 else "kid_l"]
    cz = -128.0 + (p.org["kid_rz"] if side > 0 else p.org["kid_rz"] + p.org["kid_lz"])
    cu = side * (p.vb_rx + 40.0 * k + 0.06 * p.ac)
    cv = float(p.vert_v(cz)) - 20.0
    h = np.array([-side, 0.9]) / np.hypot(1, 0.9)
    return {"c": (cu, cv, cz), "ra": 23.0 * k, "rb": 30.0 * k, "rz": 55.0 * k, "h": h, "side": side}


def paint_kidneys(canvas: Canvas, p: Patient) -> None:
    """Kidneys in perirenal fat: cortex, medullary pyramids, sinus fat, pelvis, renal vessels."""
    for side in (1.0, -1.0):
        f = kidney_frame(p, side)
        cu, cv, cz = f["c"]
        ra, rb, rz, (hx, hy) = f["ra"], f["rb"], f["rz"], f["h"]
        zs = canvas.zs
        box = canvas.box(cu - 60, cu + 60, cv - 60, cv + 60, cz - (rz + 12) / zs, cz + (rz + 12) / zs)
        if box is None:
            continue
        dzmm = box.Zmm - F32(cz * zs)
        tilt = dzmm / F32(rz)  # upper pole more medial and posterior
        du = box.U - F32(cu) + F32(side * 10.0) * tilt
        dv = box.V - F32(cv) + F32(6.0) * tilt
        a = du * F32(hx) + dv * F32(hy)  # towards the hilum
        b = -du * F32(hy) + dv * F32(hx)
        zq = (dzmm / F32(rz)) ** 2
        q = (a / F32(ra)) ** 2 + (b / F32(rb)) ** 2 + zq
        qf = (a / F32(ra + 5)) ** 2 + (b / F32(rb + 5)) ** 2 + (dzmm / F32(rz + 8)) ** 2
        box.paint(qf < 1, T.VISC_FAT, only=(*_BED, *LIVER_TISSUES, *LESION_TISSUES, T.SPLEEN))
        notch = (a > 0.6 * ra) & (np.abs(b) < 0.3 * rb) & (zq < 0.2)
        box.paint((q < 1) & ~notch, T.KIDNEY_CORTEX, only=(T.VISC_FAT,))
        inner = q < (1 - 6.5 / ra) ** 2
        ang = np.arctan2(dzmm / F32(rz), b / F32(rb))
        pyramids = inner & (np.cos(F32(7.0) * ang) > -0.35) & (q > 0.18)
        box.paint(pyramids, T.KIDNEY_MEDULLA, only=(T.KIDNEY_CORTEX,))
        qs = ((a - F32(0.62 * ra)) / F32(0.5 * ra)) ** 2 + (b / F32(0.3 * rb)) ** 2 + zq / F32(0.2)
        box.paint(qs < 1, T.VISC_FAT, only=(T.KIDNEY_CORTEX, T.KIDNEY_MEDULLA))
        qp = ((a - F32(0.7 * ra)) / F32(0.5 * ra)) ** 2 + (b / F32(0.16 * rb)) ** 2 + zq / F32(0.06)
        box.paint(qp < 1, T.URINE, only=(T.VISC_FAT,))
        # renal vein to the IVC (the left one crossing in front of the aorta) and artery
        hil = (cu + hx * ra, cv + hy * ra, cz + 5.0)
        iu, iv, iru, _ = (float(x) for x in ivc_center(p, cz + 8))
        au, av, ar = (float(x) for x in aorta_center(p, cz + 12))
        if side > 0:
            vpts = [hil, (iu, iv, cz + 8)]
        else:
            vpts = [hil, (au - ar - 8, av + ar + 4, cz + 10), (au, av + ar + 5, cz + 10), (iu, iv, cz + 8)]
        paint_polyline(canvas, vpts, [5.0] * len(vpts), T.VEIN, only=_BED)
        paint_polyline(canvas, [(au, av, cz + 12), (hil[0] - hx * 4, hil[1] - 6, cz + 6)], [3.2, 2.8], T.ARTERY, only=(*_BED, T.IVC))


def paint_stomach(canvas: Canvas, p: Patient, rng: np.random.Generator) -> None:
    """J-shaped stomach and duodenal C-loop with enhancing wall, fluid and an air-fluid level."""
    k = p.org["stomach"]
    pts_n = [(-0.42, 0.0, -12.0), (-0.38, 0.25, -55.0), (-0.22, 0.45, -95.0), (0.05, 0.48, -122.0), (0.22, 0.35, -122.0)]
    rad = [38.0 * k, 36.0 * k, 30.0 * k, 22.0 * k, 11.0]
    pts = [(*p.UV(U, V), z) for U, V, z in pts_n]
    duo_n = [(0.22, 0.35, -122.0), (0.33, 0.15, -128.0), (0.36, 0.05, -160.0), (0.25, -0.02, -192.0), (-0.05, 0.05, -196.0), (-0.22, 0.12, -178.0)]
    duo = [(*p.UV(U, V), z) for U, V, z in duo_n]
    _hollow(canvas, pts, rad, T.STOMACH_WALL, 4.0, p.org["stomach_air"], rng, fluid=T.GI_FLUID)
    _hollow(canvas, duo, [11.0, 12.0, 12.0, 11.0, 10.0, 10.0], T.BOWEL_WALL, 2.5, 0.25, rng, fluid=T.GI_FLUID)


def _hollow(canvas, pts, radii, wall, wall_mm, air_frac, rng, fluid, bed=_BED) -> None:
    """A hollow tube: wall, then lumen with gas above a horizontal level (patient supine)."""
    paint_polyline(canvas, pts, [r + wall_mm for r in radii], wall, only=bed)
    inner = [max(r, 0.5) for r in radii]
    paint_polyline(canvas, pts, inner, fluid, only=(wall,))
    if air_frac > 0:
        top = max(pt[1] + r for pt, r in zip(pts, radii))
        low = min(pt[1] - r for pt, r in zip(pts, radii))
        level = top - air_frac * (top - low) * 0.6
        paint_polyline(canvas, pts, inner, T.GI_AIR, only=(fluid,), v_above=level)


def paint_bowel(canvas: Canvas, p: Patient, rng: np.random.Generator) -> None:
    """Small-bowel loops (random walks) and the colon frame with stool and gas."""
    lo, _ = canvas.zrange()
    if lo > -120:
        return
    # colon: caecum/ascending (right), hepatic flexure, transverse, splenic flexure, descending
    bottom = lo - 20
    col_n = [
        (0.45, 0.22, bottom), (0.55, 0.12, -240.0), (0.62, -0.05, -190.0), (0.58, 0.15, -158.0), (0.35, 0.6, -168.0),
        (-0.1, 0.62, -178.0), (-0.45, 0.45, -135.0), (-0.66, 0.05, -112.0), (-0.68, -0.15, -150.0), (-0.6, 0.0, -240.0), (-0.45, 0.2, bottom),
    ]
    col = [(*p.UV(U + rng.normal(0, 0.03), V + rng.normal(0, 0.03)), z) for U, V, z in col_n]
    crad = [30.0, 28.0, 26.0, 24.0, 22.0, 22.0, 22.0, 20.0, 18.0, 18.0, 18.0]
    for a, b, ra, rb in zip(col[:-1], col[1:], crad[:-1], crad[1:]):
        _hollow(canvas, [a, b], [ra, rb], T.BOWEL_WALL, 2.5, p.org["colon_air"] * rng.uniform(0.3, 1.2), rng, fluid=T.FECES)
    # small bowel loops in the central abdomen
    z_top = -135.0
    n_loops = int(np.clip((z_top - lo) / 25, 2, 9))
    for _ in range(n_loops):
        U, V = rng.uniform(-0.4, 0.35), rng.uniform(-0.05, 0.6)
        z = rng.uniform(max(lo, -330.0), z_top)
        d = rng.normal(size=3)
        pts, rads = [], []
        r = rng.uniform(9.0, 13.0)
        content = rng.choice(3, p=[0.6, 0.25, 0.15])
        for _ in range(int(rng.integers(5, 10))):
            pts.append((*p.UV(U, V), z))
            rads.append(r)
            d = 0.6 * d + 0.8 * rng.normal(size=3)
            d /= np.linalg.norm(d)
            U = float(np.clip(U + 0.16 * d[0], -0.62, 0.55))
            V = float(np.clip(V + 0.2 * d[1], -0.25, 0.78))
            z = float(np.clip(z + 18.0 * d[2], lo - 10, z_top))
        if content == 2:  # collapsed loop: thick wall, no lumen
            paint_polyline(canvas, pts, [x * 0.6 for x in rads], T.BOWEL_WALL, only=_BED)
        else:
            _hollow(canvas, pts, rads, T.BOWEL_WALL, 2.0, 0.35 if content == 1 else 0.0, rng, fluid=T.GI_FLUID)


def paint_pancreas(canvas: Canvas, p: Patient) -> None:
    """Pancreas from the head (in the duodenal C) over the vessels to the splenic hilum, with the splenic vein."""
    k = p.org["pancreas"]
    cf = portal_points(p)["confluence"]
    au, av, ar = (float(x) for x in aorta_center(p, -108.0))
    pts = [
        (*p.UV(0.22, 0.1), -140.0),
        (cf[0] + 6, cf[1] + 14, -122.0),
        (au - 10, av + ar + 26, -110.0),
        (*p.UV(-0.35, 0.05), -100.0),
        (*p.UV(-0.5, -0.12), -90.0),
    ]
    rad = [17.0 * k, 11.0 * k, 11.0 * k, 10.0 * k, 9.0 * k]
    paint_polyline(canvas, pts, rad, T.PANCREAS, only=(*SOFT_CONTENTS,))
    sv = [cf, (au - 10, av + ar + 12, -111.0), (pts[3][0], pts[3][1] - 10, -101.0), (pts[4][0] - 5, pts[4][1] - 12, -90.0)]
    paint_polyline(canvas, sv, [5.0, 4.5, 4.5, 4.0], T.VEIN, only=(*SOFT_CONTENTS, T.PANCREAS))

