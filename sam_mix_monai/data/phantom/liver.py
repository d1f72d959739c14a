"""The liver: lobed shape changing smoothly along z, hilum, fissure, vessels, lesions, gallbladder.

The shape is the union of four rotated ellipses per slice (right lobe, left lateral
segments, medial segment / quadrate lobe and caudate lobe) whose sizes and centres are
smooth functions of the craniocaudal position ``t = -zeta / 165`` (0 at the dome, 1 at
the tip), plus a smooth random 3-D deformation that makes the outline lobulated. It is
clipped by the diaphragm above and the body wall around (it is only drawn over the soft
abdominal contents), so the liver is absent above the dome and below the tip.
"""

from __future__ import annotations

import numpy as np

from sam_mix_monai.data.phantom.body import body_geometry
from sam_mix_monai.data.phantom.organs import kidney_frame
from sam_mix_monai.data.phantom.geometry import F32, Canvas, bump, ellipse_q, paint_polyline, paint_tube, smooth_noise, smoothstep
from sam_mix_monai.data.phantom.patient import LIVER_NOMINAL, Patient
from sam_mix_monai.data.phantom.thorax import DIAPHRAGM_MM, diaphragm_zeta
from sam_mix_monai.data.phantom.tissues import LESION_TISSUES, LIVER_TISSUES, SOFT_CONTENTS
from sam_mix_monai.data.phantom.tissues import Tissue as T
from sam_mix_monai.data.phantom.vessels import aorta_center, ivc_center, portal_points

_LESION_COUNTS = (0, 1, 2, 3, 4, 6, 9)
_LESION_P = (0.15, 0.25, 0.2, 0.15, 0.1, 0.1, 0.05)


def liver_field(p: Patient, U, V, Z, deform=None):
    """Signed liver field (< 0 inside the lobes) before clipping by diaphragm and wall.

    Args:
        p: case parameters.
        U, V: position (mm) relative to the body centre (broadcastable arrays).
        Z: nominal zeta.
        deform: optional callable ``(U, V, Zmm) -> field`` for lobulation.

    Returns:
        The field (float32), roughly the normalised distance outside the nearest lobe.
    """
    U, V, Z = (np.asarray(x, F32) for x in (U, V, Z))
    o = p.org
    Un = U / F32(p.ac)
    Vn = (V - F32(p.vc0)) / F32(p.bc)
    t = -Z / F32(LIVER_NOMINAL)
    t0 = F32(0.42 * o["liver_tip"])
    gR = np.sqrt(np.clip(1 - ((np.maximum(t - t0, 0)) / (1 - t0)) ** 2, 0, 1)) * (t < 1)
    low = smoothstep(0.45, 1.0, t)
    k = F32(o["liver_r"])
    lobes = [
        # (centre U, centre V, radius U, radius V, rotation): right lobe, left lateral, medial segment, caudate
        (0.40 + 0.2 * low + o["liver_shift"], -0.06 + 0.3 * low,
         0.72 * k * gR * (1 - 0.35 * smoothstep(0.25, 1.0, t)), 0.98 * k * gR * (1 - 0.25 * low), 0.3),
        (-0.22 - 0.12 * (o["liver_left"] - 1), 0.56, 0.48 * o["liver_left"] * bump(t, -0.1, 0.7, 0.5), 0.4 * bump(t, -0.1, 0.7, 0.5), -0.18),
        (0.1, 0.45, 0.32 * bump(t, -0.1, 0.85, 0.5), 0.47 * bump(t, -0.1, 0.85, 0.5), 0.0),
        (0.04, -0.04, 0.15 * bump(t, 0.12, 0.62, 0.7), 0.2 * bump(t, 0.12, 0.62, 0.7), 0.0),
    ]
    F = None
    for cu, cv, ru, rv, ang in lobes:
        f = np.sqrt(ellipse_q(Un, Vn, F32(cu) if np.isscalar(cu) else cu, F32(cv) if np.isscalar(cv) else cv, ru, rv, ang)) - 1
        F = f if F is None else np.minimum(F, f)
    if deform is not None:
        F = F + F32(o["liver_lob"]) * deform(U, V, Z * F32(p.zs))
    # keep clear of the spine and the aorta
    vv = p.vert_v(Z)
    spine = (U / F32(p.vb_rx + 16)) ** 2 + ((V - vv) / F32(p.vb_ry + 20)) ** 2
    au, av, ar = aorta_center(p, Z)
    aorta = ((U - au) / (ar + 6)) ** 2 + ((V - av) / (ar + 6)) ** 2
    out = (spine < 1) | (aorta < 1)
    # nothing of the liver behind the right kidney (that space is muscle and fat)
    k = kidney_frame(p, 1.0)
    ku, kv, kz = k["c"]
    kzs = ((Z - F32(kz)) * F32(p.zs) / F32(k["rz"] + 10)) ** 2
    behind = ((U - F32(ku)) / F32(k["rb"] + 12)) ** 2 + ((V - F32(kv - 12)) / F32(k["ra"] + 14)) ** 2 + kzs
    out |= (behind < 1) & (V < F32(kv + 4))
    return np.where(out, F32(1.0), F)


def _liver_bounds(p: Patient) -> tuple[float, float, float, float]:
    left = (0.22 + 0.12 * (p.org["liver_left"] - 1) + 0.5 * p.org["liver_left"] + 0.1) * p.ac
    return -left, 1.15 * p.ac, p.vc0 - 1.15 * p.bc, p.vc0 + 1.15 * p.bc


def paint_liver(canvas: Canvas, p: Patient, rng: np.random.Generator):
    """Paint the liver parenchyma, hilum fat, fissure and the hepatic and portal veins.

    Returns:
        The lobulation field (pass it to :func:`paint_lesions`), or None if the liver
        is outside the scan.
    """
    deform = smooth_noise(rng, 6, (50.0, 150.0))
    u0, u1, v0, v1 = _liver_bounds(p)
    box = canvas.box(u0, u1, v0, v1, -LIVER_NOMINAL - 1, 0.0)
    if box is None:
        return None
    F = liver_field(p, box.U, box.V, box.Z, deform)
    zd = diaphragm_zeta(p, box.U, box.V)
    mask = (F < 0) & (box.Z < zd - F32(DIAPHRAGM_MM / canvas.zs))
    box.paint(mask, T.LIVER, only=SOFT_CONTENTS)
    liverish = LIVER_TISSUES
    # porta hepatis fat and the fissure of the ligamentum teres
    porta = portal_points(p)["porta"]
    paint_tube(canvas, (porta[0] - 6, porta[1], porta[2] + 6), (porta[0] + 8, porta[1] + 4, porta[2] - 8), 13.0, 10.0, T.VISC_FAT, only=liverish)
    fu, fv = p.UV(-0.02, 0.75)
    paint_tube(canvas, (fu, fv, -60.0), (fu + 10, fv - 35, -100.0), 2.0, 1.2, T.VISC_FAT, only=liverish)
    _paint_liver_vessels(canvas, p, rng)
    return deform


def paint_lesions(canvas: Canvas, p: Patient, rng: np.random.Generator, deform=None) -> None:
    """Place and paint the liver lesions; call after every other organ is drawn.

    Args:
        canvas: the canvas (its liver decides where lesions fit).
        p: case parameters (``p.lesions`` is filled).
        rng: the case's liver generator.
        deform: the lobulation field returned by :func:`paint_liver`.
    """
    sample_lesions(p, rng, deform, canvas)
    _paint_lesions(canvas, p, rng)


def _branches(canvas, rng, pts, radii, tissue, n, only):
    """A main vessel through ``pts`` plus ``n`` random side branches."""
    paint_polyline(canvas, pts, radii, tissue, only=only)
    for _ in range(n):
        seg = int(rng.integers(0, len(pts) - 1))
        t = rng.uniform(0.25, 0.9)
        base = tuple(a + t * (b - a) for a, b in zip(pts[seg], pts[seg + 1]))
        r = radii[seg] + t * (radii[seg + 1] - radii[seg])
        d = rng.normal(size=3)
        d[2] = -abs(d[2]) * 0.6
        d /= np.linalg.norm(d)
        L = rng.uniform(20, 45)
        tip = (base[0] + L * d[0], base[1] + L * d[1], base[2] + L * d[2])
        paint_tube(canvas, base, tip, max(0.55 * r, 1.2), 0.8, tissue, only=only)


def _paint_liver_vessels(canvas: Canvas, p: Patient, rng: np.random.Generator) -> None:
    """Hepatic veins converging on the IVC below the dome and the portal vein branches."""
    iu, iv, _, _ = (float(x) for x in ivc_center(p, -14.0))
    hv = [((0.85, -0.15), -75.0, 6.0), ((0.36, 0.6), -85.0, 5.5), ((-0.4, 0.55), -42.0, 5.0)]
    for (U, V), z, r in hv:
        u, v = p.UV(U, V)
        mid = ((iu + u) / 2, (iv + v) / 2 + rng.normal(0, 5), (-14.0 + z) / 2)
        _branches(canvas, rng, [(iu, iv, -14.0), mid, (u, v, z)], [r, r * 0.7, 1.6], T.HEPATIC_VEIN, 3, LIVER_TISSUES)
    pu, pv, pz = portal_points(p)["porta"]
    targets = [
        [(0.55, 0.0, -92.0, 5.5), (0.72, 0.45, -70.0, 2.0)],
        [(0.55, 0.0, -92.0, 5.5), (0.74, -0.45, -118.0, 2.0)],
        [(-0.02, 0.32, -80.0, 4.5), (-0.38, 0.5, -58.0, 1.8)],
    ]
    for chain in targets:
        pts = [(pu, pv, pz)] + [(*p.UV(U, V), z) for U, V, z, _ in chain]
        radii = [6.0] + [r for *_, r in chain]
        _branches(canvas, rng, pts, radii, T.PORTAL_INTRA, 2, LIVER_TISSUES)


_DIRS = np.array(
    [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]] + [[a, b, c] for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)], float
)
_DIRS /= np.linalg.norm(_DIRS, axis=1, keepdims=True)


def _all_liver(canvas: Canvas, pts: np.ndarray) -> bool:
    """True when every point ``(u, v, zeta_mm)`` falls on a liver voxel of the canvas."""
    idx = []
    for axis, coords in ((2, canvas.u), (1, canvas.v), (0, canvas.zeta * canvas.zs)):
        c = pts[:, {2: 0, 1: 1, 0: 2}[axis]]
        i = np.searchsorted(coords, c)
        i = np.clip(i, 1, coords.size - 1)
        i = np.where(np.abs(coords[i - 1] - c) < np.abs(coords[i] - c), i - 1, i)
        if np.any((c < coords[0] - 1) | (c > coords[-1] + 1)):
            return False
        idx.append(i)
    vals = canvas.tissue[idx[2], idx[1], idx[0]]
    return bool(np.isin(vals, LIVER_TISSUES).all())


def sample_lesions(p: Patient, rng: np.random.Generator, deform=None, canvas: Canvas | None = None) -> list[dict]:
    """Draw lesions deep inside the liver.

    Candidates are drawn inside the analytic liver shape; with a canvas, a lesion is
    kept only where its centre and 14 points on its surface are liver voxels (so it
    does not run into the gallbladder, a kidney, a large vessel or the capsule), and
    its radius shrinks if no place fits.

    Args:
        p: case parameters (``p.lesions`` is filled).
        rng: the case's liver generator.
        deform: the lobulation field used for the liver.
        canvas: the painted canvas, or None to use the analytic shape only.

    Returns:
        The lesions as dicts with ``u, v, zeta, r, axes, kind``.
    """
    n = int(rng.choice(_LESION_COUNTS, p=_LESION_P))
    u0, u1, v0, v1 = _liver_bounds(p)
    out: list[dict] = []
    for _ in range(n):
        kind = "cyst" if rng.uniform() < 0.3 else "solid"
        r = float(np.clip(rng.lognormal(np.log(7.0 if kind == "cyst" else 11.0), 0.5), 3.5, 40.0))
        ax = np.clip(rng.normal(1.0, 0.12, 3), 0.75, 1.3)
        found = None
        for attempt in range(8):
            if attempt and attempt % 2 == 0:
                r = max(3.0, 0.7 * r)
            cu, cv = rng.uniform(u0, u1, 256), rng.uniform(v0, v1, 256)
            cz = rng.uniform(-LIVER_NOMINAL, 0, 256)
            F = liver_field(p, cu, cv, cz, deform)
            depth, fat, mus = body_geometry(p, cu, cv, cz)
            ok = (F < -0.12) & (depth > fat + mus + 0.7 * r)
            ok &= cz < diaphragm_zeta(p, cu, cv) - (DIAPHRAGM_MM + 0.7 * r) / p.zs
            for i in np.nonzero(ok)[0]:
                centre = np.array([cu[i], cv[i], cz[i] * p.zs])
                if canvas is None or _all_liver(canvas, np.vstack([centre, centre + 1.15 * r * _DIRS * ax])):
                    found = i
                    break
            if found is not None:
                out.append({"u": float(cu[found]), "v": float(cv[found]), "zeta": float(cz[found]), "r": r, "axes": ax.tolist(), "kind": kind})
                break
    p.lesions = out
    return out


def _paint_lesions(canvas: Canvas, p: Patient, rng: np.random.Generator) -> None:
    """Hypodense lesions, drawn only over liver tissue; large solid ones get a necrotic core."""
    wobble = smooth_noise(rng, 4, (12.0, 30.0))
    targets = (*LIVER_TISSUES, *LESION_TISSUES)
    for les in p.lesions:
        r, ax = les["r"], les["axes"]
        zs = canvas.zs
        h = 1.4 * r
        box = canvas.box(les["u"] - h, les["u"] + h, les["v"] - h, les["v"] + h, les["zeta"] - h / zs, les["zeta"] + h / zs)
        if box is None:
            continue
        q = ((box.U - F32(les["u"])) / F32(r * ax[0])) ** 2 + ((box.V - F32(les["v"])) / F32(r * ax[1])) ** 2
        q = q + ((box.Zmm - F32(les["zeta"] * zs)) / F32(r * ax[2])) ** 2
        q = q * (1 + F32(0.12) * wobble(box.U, box.V, box.Zmm))
        tissue = T.LESION_CYST if les["kind"] == "cyst" else T.LESION_SOLID
        box.paint(q < 1, tissue, only=targets)
        if les["kind"] == "solid" and r > 15:
            box.paint(q < 0.3, T.LESION_NECROTIC, only=(T.LESION_SOLID,))


def paint_gallbladder(canvas: Canvas, p: Patient) -> None:
    """A pear-shaped gallbladder in the fossa under the liver, fundus anterior and inferior."""
    k = p.org["gb"]
    if k <= 0:
        return
    neck = (*p.UV(0.2, 0.22), -98.0)
    fundus = (*p.UV(0.32, 0.62), -98.0 - 55.0 * k)
    bed = (*SOFT_CONTENTS, *LIVER_TISSUES, *LESION_TISSUES, T.PANCREAS)
    paint_tube(canvas, neck, fundus, 8.0 * k + 1.2, 15.0 * k + 1.2, T.BOWEL_WALL, only=bed)
    paint_tube(canvas, neck, fundus, 8.0 * k, 15.0 * k, T.BILE, only=(T.BOWEL_WALL,))
