"""Lower thorax: diaphragm domes, lung bases with vessels, heart, mediastinum and oesophagus."""

from __future__ import annotations

import numpy as np

from sam_mix_monai.data.phantom.geometry import F32, Canvas, paint_polyline, paint_tube, smoothstep
from sam_mix_monai.data.phantom.patient import Patient
from sam_mix_monai.data.phantom.tissues import Tissue as T
from sam_mix_monai.data.phantom.vessels import aorta_center

#: Thickness of the diaphragm muscle (physical mm).
DIAPHRAGM_MM = 4.0


def diaphragm_zeta(p: Patient, U, V):
    """Nominal zeta of the upper surface of the diaphragm above ``(U, V)`` (mm).

    The right dome peaks at zeta 0 (the top of the liver), the left dome lower; the
    surface falls towards the lateral and (more steeply) the posterior recesses.
    """
    Un = np.asarray(U, F32) / F32(p.ac)
    Vn = (np.asarray(V, F32) - F32(p.vc0)) / F32(p.bc)
    rho = np.sqrt(Un * Un + Vn * Vn)
    recess = F32(60.0) * smoothstep(0.8, 1.08, rho) + F32(35.0) * smoothstep(0.3, 1.0, -Vn) * smoothstep(0.5, 1.0, rho)
    right = -F32(22.0) * (((Un - F32(0.42)) / F32(0.55)) ** 2 + (Vn / F32(0.8)) ** 2)
    left = -F32(p.org["dome_l"]) - F32(22.0) * (((Un + F32(0.42)) / F32(0.55)) ** 2 + (Vn / F32(0.8)) ** 2)
    return np.maximum(right, left) - recess


def _mediastinum(p: Patient, U, V):
    """2-D mask of the posterior mediastinum (spine, aorta, oesophagus)."""
    return ((U + 12) / (p.vb_rx + 30)) ** 2 + ((V - p.vb_v - 6) / (p.vb_ry + 34)) ** 2 < 1


def paint_thorax(canvas: Canvas, p: Patient, rng: np.random.Generator) -> None:
    """Lungs above the diaphragm, the diaphragm itself, mediastinal fat, heart and oesophagus."""
    lo, hi = canvas.zrange()
    U, V = canvas.u[None, :], canvas.v[:, None]
    zd = diaphragm_zeta(p, U, V)  # (ny, nx)
    if hi < zd.min() - DIAPHRAGM_MM / canvas.zs - 1:
        return
    box = canvas.box(-np.inf, np.inf, -np.inf, np.inf, float(zd.min()) - 10, hi)
    if box is None:
        return
    cav = box.view == T.VISC_FAT
    above = box.Z > zd[None]
    med = _mediastinum(p, U, V)[None]
    box.view[cav & above & ~med] = T.LUNG
    box.view[cav & above & med] = T.MEDIASTINAL_FAT
    dia = cav & ~above & (box.Z > zd[None] - F32(DIAPHRAGM_MM / canvas.zs))
    box.view[dia] = T.MUSCLE
    _paint_heart(canvas, p, zd)
    _paint_lung_vessels(canvas, p, rng)
    # oesophagus: right of the descending aorta, then forward and left to the cardia
    a_top = [float(x) for x in aorta_center(p, hi + 20)]
    a_low = [float(x) for x in aorta_center(p, 5.0)]
    ge = p.UV(-0.3, 0.08)
    pts = [(a_top[0] + a_top[2] + 8, a_top[1] + 6, hi + 20), (a_low[0] + a_low[2] + 5, a_low[1] + 12, 5.0), (ge[0], ge[1], -30.0)]
    bed = (T.MEDIASTINAL_FAT, T.LUNG, T.MUSCLE, T.VISC_FAT)
    paint_polyline(canvas, pts, [7.5, 7.5, 9.0], T.BOWEL_WALL, only=bed)
    if rng.uniform() < 0.5:
        paint_polyline(canvas, pts[:2], [2.0, 2.0], T.GI_AIR, only=(T.BOWEL_WALL,))


def _paint_heart(canvas: Canvas, p: Patient, zd: np.ndarray) -> None:
    """Heart resting on the central tendon: pericardial fat, myocardium, blood pool, septum."""
    k = p.org["heart"]
    cu, cv = p.UV(-0.16, 0.22)
    ru, rv, rz = 0.43 * p.ac * k, 0.47 * p.bc * k, 80.0 * k
    cz = 45.0
    box = canvas.box(cu - ru - 8, cu + ru + 8, cv - rv - 8, cv + rv + 8, cz - rz - 10, cz + rz + 10)
    if box is None:
        return
    zdb = zd[box.sl[1], box.sl[2]][None]
    above = box.Z > zdb + F32(1.5)
    dz2 = ((box.Zmm - F32(cz * canvas.zs)) / F32(rz * canvas.zs)) ** 2
    ang = 0.5
    c, s = F32(np.cos(ang)), F32(np.sin(ang))
    du, dv = box.U - F32(cu), box.V - F32(cv)
    a1, a2 = du * c + dv * s, dv * c - du * s

    def q(scale_mm):
        return (a1 / F32(ru + scale_mm)) ** 2 + (a2 / F32(rv + scale_mm)) ** 2 + dz2 * F32(rz / (rz + scale_mm)) ** 2

    bed = (T.LUNG, T.MEDIASTINAL_FAT, T.VISC_FAT, T.MUSCLE)
    box.paint((q(8.0) < 1) & above, T.MEDIASTINAL_FAT, only=(T.LUNG, T.MEDIASTINAL_FAT))
    box.paint((q(0.0) < 1) & above, T.MYOCARDIUM, only=bed)
    inner = (q(-10.0) < 1) & above
    septum = np.abs(a1 * F32(0.3) - a2 * F32(0.95) + F32(6.0)) < 5.0
    box.paint(inner & ~septum, T.BLOOD_POOL, only=(T.MYOCARDIUM,))


def _paint_lung_vessels(canvas: Canvas, p: Patient, rng: np.random.Generator) -> None:
    """Branching pulmonary vessels radiating from the hila into the lung bases."""
    lo, hi = canvas.zrange()
    if hi < -60:
        return
    for s in (-1.0, 1.0):
        hil = (s * 0.35 * p.ac - 10, p.vb_v + 45, 120.0)
        for _ in range(14):
            ang = rng.uniform(-np.pi, np.pi)
            tgt_u = hil[0] + s * abs(np.cos(ang)) * 0.55 * p.ac
            tgt_v = hil[1] + np.sin(ang) * 0.7 * p.bc - 20
            tgt_z = rng.uniform(-60, 60)
            r0 = rng.uniform(2.0, 4.0)
            mid = ((hil[0] + tgt_u) / 2 + rng.normal(0, 10), (hil[1] + tgt_v) / 2 + rng.normal(0, 10), (hil[2] + tgt_z) / 2)
            paint_polyline(canvas, [hil, mid, (tgt_u, tgt_v, tgt_z)], [r0 * 1.3, r0, 0.8], T.LUNG_VESSEL, only=(T.LUNG,))
            for _ in range(2):
                t = rng.uniform(0.4, 0.9)
                base = tuple(m + t * (e - m) for m, e in zip(mid, (tgt_u, tgt_v, tgt_z)))
                tip = (base[0] + rng.normal(0, 25), base[1] + rng.normal(0, 25), base[2] - rng.uniform(5, 30))
                paint_tube(canvas, base, tip, r0 * 0.6, 0.6, T.LUNG_VESSEL, only=(T.LUNG,))
