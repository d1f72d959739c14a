"""Body wall and musculoskeletal system: outline, skin, fat, muscles, spine, ribs, pelvis, table."""

from __future__ import annotations

import numpy as np

from sam_mix_monai.data.phantom.geometry import F32, Canvas, bump, ellipse_q, paint_column, smoothstep
from sam_mix_monai.data.phantom.patient import Patient
from sam_mix_monai.data.phantom.tissues import SOFT_CONTENTS
from sam_mix_monai.data.phantom.tissues import Tissue as T

_NOT_OUTSIDE = tuple(t for t in T if t not in (T.AIR, T.SKIN, T.TABLE_SHELL, T.TABLE_FOAM, T.PAD))


def body_geometry(p: Patient, U, V, Z):
    """Outline radius and wall layers of the body along rays from the body centre.

    Works on grids (``U`` ``(1,1,nx)``, ``V`` ``(1,ny,1)``, ``Z`` ``(nz,1,1)``) and on
    points (equal-length 1-D arrays).

    Args:
        p: case parameters.
        U, V: position (mm) relative to the body centre.
        Z: nominal zeta.

    Returns:
        ``(depth, fat, muscle)``: depth (mm) below the skin along the ray (negative
        outside the body), subcutaneous fat thickness and muscle wall thickness (mm).
    """
    U, V, Z = (np.asarray(x, F32) for x in (U, V, Z))
    r = np.sqrt(U * U + V * V) + F32(1e-3)
    c, s = U / r, V / r
    th = np.arctan2(V, U)
    harm = 1 + sum(F32(cn) * np.cos(F32(n) * th + F32(ph)) for n, cn, ph in p.harmonics)
    A = F32(p.a) * (1 + F32(p.flare) * smoothstep(-40, 60, Z) - F32(p.waist) * bump(Z, -280, -120) + F32(p.hip) * smoothstep(-240, -330, Z))
    Ba = F32(p.b_ant) * (1 + F32(p.belly) * smoothstep(-60, -230, Z))
    pw = F32(p.p_super)
    sa, sp = np.maximum(s, 0), np.maximum(-s, 0)
    R = (np.abs(c) ** pw * A ** (-pw) + sa**pw * Ba ** (-pw) + sp**pw * F32(p.b_post) ** (-pw)) ** (-1 / pw) * harm
    flat = np.where(s < -1e-3, F32(p.v_table) / np.minimum(s, F32(-1e-3)), F32(1e9))
    R = np.minimum(R, flat)
    c2, sa2, sp2 = c * c, sa * sa, sp * sp
    fat = (F32(p.f_ant) * sa2 + F32(p.f_lat) * c2 + F32(p.f_post) * sp2) * (1 - F32(0.25) * smoothstep(-30, 60, Z))
    alba = 1 - F32(0.85) * np.exp(-((F32(p.b_ant) * c / F32(5.0)) ** 2))
    thorax = 1 - F32(0.35) * smoothstep(-60, 10, Z)
    muscle = (F32(p.m_ant) * sa2 * alba + F32(p.m_lat) * c2 * thorax + F32(p.m_post) * sp2)
    return R - r, fat, muscle


def paint_body(canvas: Canvas, p: Patient) -> None:
    """Paint air, table, skin, subcutaneous fat, muscle wall, the (fatty) body cavities and back muscles.

    The outline and wall thicknesses depend on the ray angle only (per slice), so they
    are tabulated over 4096 angles per slice and looked up, which is exact to a
    fraction of a millimetre and much cheaper than evaluating them per voxel.
    """
    U, V = canvas.u[None, :], canvas.v[:, None]
    r = np.sqrt(U * U + V * V)
    n_tab = 4096
    th = np.arctan2(V, U)
    idx = (np.floor((th + np.pi) / (2 * np.pi) * n_tab).astype(np.int32)) % n_tab
    th_tab = (-np.pi + (np.arange(n_tab) + 0.5) * 2 * np.pi / n_tab).astype(F32)
    ct, st = np.cos(th_tab), np.sin(th_tab)
    layer = np.array([T.AIR, T.SKIN, T.SUBCUT_FAT, T.MUSCLE, T.VISC_FAT], np.uint8)
    for k, z in enumerate(canvas.zeta):
        d, fat, mus = body_geometry(p, ct, st, np.full(n_tab, z, F32))
        R = d + 1  # depth at r = 1 is R - 1
        fat = np.maximum(fat, F32(2.5))
        cnt = (r < R[idx]).astype(np.uint8)
        cnt += r < (R - 2.0)[idx]
        cnt += r < (R - fat)[idx]
        cnt += r < (R - fat - mus)[idx]
        canvas.tissue[k] = layer[cnt]
    _paint_table(canvas, p)
    _paint_back_muscles(canvas, p)


def _paint_back_muscles(canvas: Canvas, p: Patient) -> None:
    """Erector spinae and multifidus on both sides of the spinous processes."""
    lo, hi = canvas.zrange()
    wall = -p.b_post + p.f_post
    cv = 0.5 * (wall + p.lamina_v)
    rv = 0.5 * (p.lamina_v - wall) + 12.0
    for s in (-1.0, 1.0):
        params = lambda Z, s=s: (F32(s * 30.0) + 0 * Z, F32(cv) + 0 * Z, F32(32.0) + 0 * Z, F32(rv) + 0 * Z)  # noqa: E731
        paint_column(canvas, lo, hi, params, T.MUSCLE, only=(T.VISC_FAT, T.MUSCLE))


def _paint_table(canvas: Canvas, p: Patient) -> None:
    """A curved carbon-fibre table with a foam core below the patient's back."""
    U, V = canvas.u[None, :], canvas.v[:, None]
    w0 = 0.45 * p.a
    top = F32(p.v_table - 1.0) + F32(0.004 if p.table_style == 0 else 0.0025) * np.maximum(np.abs(U) - F32(w0), 0) ** 2
    half = 235.0 if p.table_style == 0 else 215.0
    shell = 2.5 if p.table_style == 0 else 3.5
    core = 28.0 if p.table_style == 0 else 16.0
    inside = np.abs(U) < half
    depth = top - V
    m_shell = inside & (((depth >= 0) & (depth < shell)) | ((depth >= shell + core) & (depth < 2 * shell + core)))
    m_foam = inside & (depth >= shell) & (depth < shell + core)
    air = canvas.tissue == T.AIR
    canvas.tissue[air & m_shell[None]] = T.TABLE_SHELL
    canvas.tissue[air & m_foam[None]] = T.TABLE_FOAM


def _phase(p: Patient, Z):
    """Position (0..1) within the vertebral period (0: top of a vertebral body)."""
    return np.mod((F32(p.vert_period * p.vert_phase) - Z) / F32(p.vert_period), 1.0)


def _element(p: Patient, du, dv, ru, rv, phase_range, canal_v):
    """Column parameters of a posterior element present in part of each vertebral period.

    ``du``, ``ru`` and ``rv`` may be callables of zeta; ``dv`` is relative to the canal centre.
    """
    lo_ph, hi_ph = phase_range
    val = lambda x, Z: (x(Z) if callable(x) else F32(x)) + 0 * Z  # noqa: E731

    def params(Z):
        ph = _phase(p, Z)
        on = ((ph > lo_ph) & (ph < hi_ph)) if lo_ph < hi_ph else ((ph > lo_ph) | (ph < hi_ph))
        return val(du, Z), canal_v(Z) + F32(dv), np.where(on, val(ru, Z), 0), np.where(on, val(rv, Z), 0)

    return params


def paint_spine(canvas: Canvas, p: Patient) -> None:
    """Vertebral bodies with cortex and discs, the canal with CSF and cord, posterior elements.

    Each vertebral period (about 33 nominal mm) is 80 % vertebral body and 20 % disc;
    pedicles, transverse processes, laminae and the spinous process occupy their own
    parts of the period, so consecutive slices show the familiar sequence of shapes.
    """
    lo, hi = canvas.zrange()
    lumbar = lambda Z: 1 + 0.18 * smoothstep(-40, -240, Z)  # noqa: E731
    zero = F32(0)

    def body(sel, shrink=0.0):
        def f(Z):
            ok = sel(_phase(p, Z))
            k = lumbar(Z)
            return zero, p.vert_v(Z), np.where(ok, p.vb_rx * k - shrink, 0), np.where(ok, p.vb_ry * k - shrink, 0)
        return f

    soft = (*SOFT_CONTENTS, T.MUSCLE, T.LIVER, T.PANCREAS, T.VEIN, T.IVC, T.AORTA, T.KIDNEY_CORTEX)
    canal_v = lambda Z: p.vert_v(Z) - F32(p.vb_ry) * lumbar(Z) - F32(p.canal_r + 1)  # noqa: E731
    is_body = lambda ph: ph < 0.8  # noqa: E731
    paint_column(canvas, lo, hi, body(is_body), T.CORTICAL_BONE)
    paint_column(canvas, lo, hi, body(lambda ph: ph >= 0.8), T.DISC)
    paint_column(canvas, lo, hi, body(is_body, 2.2), T.CANCELLOUS_BONE, only=(T.CORTICAL_BONE,))
    cr = p.canal_r
    pe = T.POSTERIOR_ELEMENT
    for s in (-1.0, 1.0):
        paint_column(canvas, lo, hi, _element(p, s * (cr + 3.5), 0.0, 4.0, cr + 2, (0.1, 0.5), canal_v), pe)  # pedicle
        tp_len = lambda Z: F32(17.0) - 4 * smoothstep(-60, 20, Z)  # noqa: E731
        paint_column(canvas, lo, hi, _element(p, s * (cr + 20.0), -2.0, tp_len, 3.5, (0.22, 0.45), canal_v), pe, angle=-0.25 * s)
    paint_column(canvas, lo, hi, _element(p, 0.0, 0.0, cr + 6, cr + 6, (0.3, 0.93), canal_v), pe, only=soft + (pe,))  # laminae
    sp_half = 0.375 * (p.lamina_v - (-p.b_post + p.f_post))
    paint_column(canvas, lo, hi, _element(p, 0.0, -cr - 4 - sp_half, 3.5, sp_half, (0.42, 0.05), canal_v), pe)  # spinous
    paint_column(canvas, lo, hi, _element(p, 0.0, 0.0, cr, 0.95 * cr, (0.0, 1.01), canal_v), T.CSF)
    cord = lambda Z: np.where(Z > -100, F32(cr * 0.5), 0)  # noqa: E731  conus medullaris at about L1
    paint_column(canvas, lo, hi, _element(p, 0.0, 1.0, cord, lambda Z: 0.85 * cord(Z), (0.0, 1.01), canal_v), T.CORD, only=(T.CSF,))


def paint_trunk_muscles(canvas: Canvas, p: Patient, aorta_uv) -> None:
    """Psoas, quadratus lumborum and diaphragmatic crura.

    Args:
        canvas: the canvas.
        p: case parameters.
        aorta_uv: callable ``Z -> (u, v, r)`` of the aorta centre line.
    """
    lo, hi = canvas.zrange()
    soft = (*SOFT_CONTENTS, T.LIVER, T.SPLEEN, T.PANCREAS, T.KIDNEY_CORTEX, T.KIDNEY_MEDULLA)
    k = F32(p.org["psoas"])
    rx = F32(p.vb_rx)
    for s in (-1.0, 1.0):
        def psoas(Z, s=s):
            r = (F32(3.0) + F32(17.0) * k * smoothstep(-95, -250, Z)) * (Z < -90)
            low = np.maximum(F32(-250) - Z, 0)
            return F32(s) * (rx * 1.18 + r * 0.85 + 2 + 0.25 * low), p.vert_v(Z) + 2 + 0.2 * low, r, r * 1.1
        paint_column(canvas, lo, hi, psoas, T.MUSCLE, only=soft)
        ql = lambda Z, s=s: (F32(s) * (rx + 45), p.vert_v(Z) - 24, 16 * bump(Z, -270, -105, 0.4), 9 * bump(Z, -270, -105, 0.4))  # noqa: E731
        paint_column(canvas, lo, hi, ql, T.MUSCLE, only=soft)  # quadratus lumborum

    def crus(Z, s):
        au, av, ar = aorta_uv(Z)
        w = bump(Z, -135, 5, 0.4) * (1.3 if s > 0 else 1.0)
        return au + s * (ar + 5), av + 2 - 3 * smoothstep(-120, -20, Z) * 0, 4.5 * w, 15 * w

    for s in (-1.0, 1.0):
        paint_column(canvas, lo, hi, lambda Z, s=s: crus(Z, s), T.MUSCLE, only=soft, angle=-s * 0.35)


def _band(U, V, pts, t0):
    """In-plane distance to a polyline and the arc-length fraction of the closest point."""
    seg = np.diff(np.asarray(pts, F32), axis=0)
    lens = np.sqrt((seg**2).sum(1))
    cum = np.concatenate([[0], np.cumsum(lens)]) / lens.sum()
    best, frac = None, None
    for i, (a, d) in enumerate(zip(pts[:-1], seg)):
        t = np.clip(((U - F32(a[0])) * F32(d[0]) + (V - F32(a[1])) * F32(d[1])) / F32(lens[i] ** 2), 0, 1)
        dist = np.sqrt((U - F32(a[0]) - t * F32(d[0])) ** 2 + (V - F32(a[1]) - t * F32(d[1])) ** 2)
        f = F32(cum[i]) + t * F32(cum[i + 1] - cum[i])
        if best is None:
            best, frac = dist, f
        else:
            closer = dist < best
            best, frac = np.where(closer, dist, best), np.where(closer, f, frac)
    return best, frac >= t0


def paint_pelvis(canvas: Canvas, p: Patient) -> None:
    """Iliac wings below the crest (about zeta -235): curved bony plates (cortex and marrow).

    Each wing runs from the sacro-iliac joint (posteromedial) to the anterior superior
    iliac spine (anterolateral), convex posterolaterally; near the crest only its middle
    part is cut, lower down the whole plate.
    """
    lo, _ = canvas.zrange()
    crest = -235.0
    if lo > crest:
        return
    for k in np.nonzero(canvas.zeta <= crest)[0]:
        z = float(canvas.zeta[k])
        depth = float(np.clip((crest - z) / 50.0, 0, 1))
        vv = float(p.vert_v(z))
        for s in (-1.0, 1.0):
            pts = [(s * (p.vb_rx + 20), vv - 14), (s * 0.45 * p.ac, vv - 24), (s * 0.68 * p.ac, vv - 8), (s * 0.8 * p.ac, vv + 25 + 15 * depth)]
            box = canvas.box(min(pt[0] for pt in pts) - 12, max(pt[0] for pt in pts) + 12, vv - 40, vv + 60, z - 1e-3, z + 1e-3)
            if box is None:
                continue
            dist, along = _band(box.U, box.V, pts, 0.45 * (1 - depth))
            half = 3.0 + 3.0 * depth
            box.paint((dist < half) & along, T.CORTICAL_BONE, exclude=(T.AIR, T.SKIN, T.SUBCUT_FAT))
            box.paint((dist < half - 2.0) & along, T.CANCELLOUS_BONE, only=(T.CORTICAL_BONE,))


def _rib_curves(p: Patient) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Centre lines of the ribs as (alpha, zeta, kind) with alpha from the posterior midline."""
    out = []
    per = p.vert_period
    x_zeta = 15.0  # xiphoid level
    for k in range(5, 13):
        z0 = (11 - k) * per * 0.9 + 4.0
        a0 = 0.16 * np.pi
        if k <= 10:
            a_end, drop = 0.78 * np.pi, 100.0 + 10.0 * (k - 5)
        elif k == 11:
            a_end, drop = 0.6 * np.pi, 110.0
        else:
            a_end, drop = 0.45 * np.pi, 80.0
        al = np.linspace(a0, a_end, 160)
        ze = z0 - drop * ((al - a0) / (a_end - a0)) ** 1.3
        out.append((al, ze, 0))
        if k <= 10:  # costal cartilage rising towards the xiphoid
            ac = np.linspace(a_end, 0.96 * np.pi, 60)
            top = x_zeta + 10 * (10 - k)
            zc = ze[-1] + (top - ze[-1]) * ((ac - a_end) / (0.96 * np.pi - a_end)) ** 1.5
            out.append((ac, zc, 1))
    return out


def paint_ribs(canvas: Canvas, p: Patient) -> None:
    """Rib and costal cartilage cross-sections around the body wall, plus the sternum."""
    curves = _rib_curves(p)
    h_rib, t_rib = 12.0 * p.org["bone"], 7.5 * p.org["bone"]
    for k, zeta in enumerate(canvas.zeta):
        secs = []
        for al, ze, kind in curves:
            dzv = ze - zeta
            idx = np.nonzero(np.sign(dzv[:-1]) * np.sign(dzv[1:]) <= 0)[0]
            for i in idx:
                if dzv[i] == dzv[i + 1]:
                    continue
                w = dzv[i] / (dzv[i] - dzv[i + 1])
                secs.append((al[i] + w * (al[i + 1] - al[i]), (ze[i + 1] - ze[i]) / (al[i + 1] - al[i]), kind))
        if not secs:
            continue
        al = np.array([s[0] for s in secs] * 2)
        slope = np.abs(np.array([s[1] for s in secs] * 2))
        kinds = [s[2] for s in secs] * 2
        side = np.repeat([1.0, -1.0], len(secs))
        th = np.arctan2(-np.cos(al), side * np.sin(al))
        zz = np.full(al.shape, zeta, np.float32)
        d, fat, mus = body_geometry(p, np.cos(th), np.sin(th), zz)
        R = d + 1.0  # depth at r=1 is R-1
        deep = 25.0 * np.clip((0.33 * np.pi - al) / (0.17 * np.pi), 0, 1)
        rr = R - fat - 0.5 * mus - deep - t_rib * 0.15
        ring = R * np.float64(1.0)
        sin_b = np.sin(np.arctan(slope * p.zs / np.maximum(ring, 50.0)))
        length = np.minimum(h_rib / np.maximum(sin_b, 0.25), 4 * h_rib)
        for j in range(al.size):
            cu, cv = rr[j] * np.cos(th[j]), rr[j] * np.sin(th[j])
            hl = length[j] / 2 * (0.8 if kinds[j] else 1.0)
            b = canvas.box(cu - hl - 1, cu + hl + 1, cv - hl - 1, cv + hl + 1, float(zeta) - 1e-3, float(zeta) + 1e-3)
            if b is None:
                continue
            ang = float(th[j] + np.pi / 2)
            q = ellipse_q(b.U, b.V, cu, cv, hl, t_rib / 2, ang)
            if kinds[j]:
                b.paint(q < 1, T.CARTILAGE, only=_NOT_OUTSIDE)
            else:
                b.paint(q < 1, T.CORTICAL_BONE, only=_NOT_OUTSIDE)
                marrow = ellipse_q(b.U, b.V, cu, cv, max(hl - 1.6, 0.5), max(t_rib / 2 - 1.6, 0.5), ang) < 1
                b.paint(marrow, T.CANCELLOUS_BONE, only=(T.CORTICAL_BONE,))
    # sternum body above and xiphoid just below the dome
    lo, hi = canvas.zrange()
    if hi > -35:
        zb = canvas.box(-60, 60, 0, p.b_ant * 1.3, -35, hi)
        if zb is not None:
            d, fat, mus = body_geometry(p, np.zeros(zb.Z.shape[0], F32), np.ones(zb.Z.shape[0], F32), zb.Z[:, 0, 0])
            vfront = (d + 1 - fat - 0.5 * mus)[:, None, None]
            big = smoothstep(-10, 20, zb.Z)
            rx, ry = 8 + 10 * big, 4 + 3.5 * big
            q = ellipse_q(zb.U, zb.V, 0, vfront - ry * 0.3, rx, ry)
            zb.paint(q < 1, T.CORTICAL_BONE, only=_NOT_OUTSIDE)
            zb.paint(ellipse_q(zb.U, zb.V, 0, vfront - ry * 0.3, rx - 1.5, ry - 1.5) < 1, T.CANCELLOUS_BONE, only=(T.CORTICAL_BONE,))
