"""Great vessels: aorta with branches and calcifications, IVC, iliac, mesenteric and portal veins."""

from __future__ import annotations

import numpy as np

from sam_mix_monai.data.phantom.geometry import F32, Canvas, paint_column, paint_polyline, paint_tube, smoothstep
from sam_mix_monai.data.phantom.patient import Patient
from sam_mix_monai.data.phantom.tissues import SOFT_CONTENTS
from sam_mix_monai.data.phantom.tissues import Tissue as T

#: Nominal zeta of the aortic bifurcation and of the portal confluence.
BIFURCATION = -218.0
CONFLUENCE = -118.0

_VESSEL_BED = (*SOFT_CONTENTS, T.PANCREAS, T.MEDIASTINAL_FAT, T.MUSCLE)
_LIVERISH = (T.LIVER, T.HEPATIC_VEIN, T.PORTAL_INTRA)


def _lumbar(Z):
    return 1 + 0.18 * smoothstep(-40, -240, Z)


def aorta_center(p: Patient, Z):
    """Centre ``(u, v)`` and radius (mm) of the aorta at nominal ``Z`` (arrays)."""
    Z = np.asarray(Z, F32)
    vv = p.vert_v(Z)
    ry = F32(p.vb_ry) * _lumbar(Z)
    r = F32(p.org["aorta_r"]) * (1 - 0.2 * smoothstep(0, BIFURCATION, Z))
    w = smoothstep(-50, 30, Z)  # 1 in the chest: descending aorta beside the spine
    u = (1 - w) * F32(-0.45 * p.vb_rx) + w * (-F32(p.vb_rx) - 0.5 * r)
    v = (1 - w) * (vv + ry + r + 2) + w * (vv + 0.25 * ry)
    return u, v, r


def ivc_center(p: Patient, Z):
    """Centre ``(u, v)`` and radii ``(ru, rv)`` (mm) of the inferior vena cava at ``Z``."""
    Z = np.asarray(Z, F32)
    vv = p.vert_v(Z)
    ry = F32(p.vb_ry) * _lumbar(Z)
    r = F32(p.org["ivc_r"])
    up = smoothstep(-90, -20, Z)  # intrahepatic course, then into the right atrium
    u = (1 - up) * (F32(0.8 * p.vb_rx) + r) + up * F32(0.16 * p.ac)
    v = (1 - up) * (vv + 0.8 * ry + 0.5 * r) + up * (vv + ry + 26)
    return u, v, r * (1.25 - 0.1 * up), r * (0.75 + 0.2 * up)


def portal_points(p: Patient) -> dict[str, tuple[float, float, float]]:
    """Landmarks of the portal system: confluence and porta hepatis."""
    au, av, ar = (float(x) for x in aorta_center(p, CONFLUENCE))
    pu, pv = p.UV(0.22, 0.02)
    return {"confluence": (au + 20.0, av + ar + 16.0, CONFLUENCE), "porta": (pu, pv, -95.0)}


def paint_great_vessels(canvas: Canvas, p: Patient, rng: np.random.Generator) -> None:
    """Aorta (with calcified plaques), IVC, iliac vessels, celiac trunk, SMA, SMV, portal trunk."""
    lo, hi = canvas.zrange()
    zb = BIFURCATION + p.org.get("bif_shift", 0.0)
    paint_column(canvas, zb, hi, lambda Z: (*aorta_center(p, Z)[:2], aorta_center(p, Z)[2], aorta_center(p, Z)[2]), T.AORTA, only=_VESSEL_BED)
    paint_column(canvas, lo, 12.0, lambda Z: ivc_center(p, Z), T.IVC, only=(*_VESSEL_BED, *_LIVERISH))
    # iliac arteries and veins below the bifurcation
    au, av, ar = (float(x) for x in aorta_center(p, zb))
    iu, iv, ir, _ = (float(x) for x in ivc_center(p, zb - 12))
    for s in (-1.0, 1.0):
        end = (s * 0.42 * p.ac, av + 8, lo - 40)
        paint_polyline(canvas, [(au, av, zb + 2), (au + s * 18, av + 2, zb - 25), end], [ar * 0.75, ar * 0.65, ar * 0.6], T.ARTERY, only=_VESSEL_BED)
        vend = (s * 0.42 * p.ac + s * 4, av - 6, lo - 40)
        vpts = [(iu, iv, zb - 8), (iu * 0.3 + s * 22, iv - 6, zb - 30), vend]
        paint_polyline(canvas, vpts, [ir * 0.9, ir * 0.8, ir * 0.75], T.VEIN, only=_VESSEL_BED)
    # celiac trunk with hepatic and splenic arteries, SMA
    pts = portal_points(p)
    cz, sz = -98.0, -112.0
    cu, cv, cr = (float(x) for x in aorta_center(p, cz))
    paint_polyline(canvas, [(cu, cv, cz), (cu, cv + cr + 12, cz + 2), (cu - 4, cv + cr + 18, cz + 1)], [3.5, 3.5, 3.0], T.ARTERY, only=_VESSEL_BED)
    porta = pts["porta"]
    hepatic_artery = [(cu - 4, cv + cr + 18, cz + 1), (cu + 25, cv + cr + 20, cz - 2), (porta[0] - 8, porta[1] + 10, porta[2] - 4)]
    paint_polyline(canvas, hepatic_artery, [3.0, 2.5, 2.2], T.ARTERY, only=_VESSEL_BED)
    su, sv, sr = (float(x) for x in aorta_center(p, sz))
    sma = [(su, sv, sz), (su + 2, sv + sr + 12, sz - 6), (su + 4, sv + sr + 11, lo - 30)]
    paint_polyline(canvas, sma, [3.8, 3.8, 3.0], T.ARTERY, only=_VESSEL_BED)
    # superior mesenteric vein and portal trunk
    cf = pts["confluence"]
    paint_polyline(canvas, [(cf[0] + 4, cf[1], lo - 30), (cf[0] + 2, cf[1], cf[2] - 10), cf], [5.0, 5.5, 6.5], T.VEIN, only=_VESSEL_BED)
    paint_tube(canvas, cf, porta, 7.0, 7.0, T.PORTAL_VEIN, only=(*_VESSEL_BED, *_LIVERISH))
    # calcified plaques on the aortic wall
    for _ in range(int(p.org["aorta_calc"])):
        z = float(rng.uniform(max(lo, zb), min(hi, 0.0))) if min(hi, 0.0) > max(lo, zb) else None
        ang = rng.uniform(0, 2 * np.pi)
        if z is None:
            continue
        u0, v0, r0 = (float(x) for x in aorta_center(p, z))
        pu, pv = u0 + (r0 - 0.8) * np.cos(ang), v0 + (r0 - 0.8) * np.sin(ang)
        paint_tube(canvas, (pu, pv, z), (pu, pv, z - rng.uniform(2, 8)), 1.4, 1.2, T.CALCIFICATION, only=(T.AORTA, *_VESSEL_BED))

