"""The voxel canvas of one phantom and vectorised shape primitives drawn on it.

Coordinates (all float32, millimetres) are relative to the patient:

* ``u``: left-right, **positive towards the patient's right** (RAS+ world ``x``);
* ``v``: posterior-anterior, positive anterior (RAS+ ``y``);
* ``zeta``: "nominal" craniocaudal position, positive superior, 0 at the liver dome.
  Physical mm below the dome are ``zeta * zs`` (``zs`` scales the anatomy to the
  patient's liver height), so organ z-ranges are written once in nominal mm.

The tissue map is stored ``(z, y, x)`` (C order); array axis 2 runs along ``u``,
axis 1 along ``v`` and axis 0 along ``zeta``, all increasing with the index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from sam_mix_monai.data.phantom.tissues import mask_lut

F32 = np.float32


@dataclass
class Box:
    """An axis-aligned block of the canvas with broadcastable coordinates.

    Attributes:
        sl: the block as slices of the tissue map.
        U: ``(1, 1, nx)`` u coordinates (mm).
        V: ``(1, ny, 1)`` v coordinates (mm).
        Z: ``(nz, 1, 1)`` nominal zeta.
        Zmm: ``(nz, 1, 1)`` physical mm relative to the dome.
        view: the tissue map block (a view: painting it paints the canvas).
    """

    sl: tuple[slice, slice, slice]
    U: np.ndarray
    V: np.ndarray
    Z: np.ndarray
    Zmm: np.ndarray
    view: np.ndarray

    def paint(self, mask: np.ndarray, tissue: int, only: Iterable[int] | None = None, exclude: Iterable[int] | None = None) -> None:
        """Set ``tissue`` where ``mask`` holds (optionally only over / never over some tissues).

        Args:
            mask: boolean array broadcastable to the block.
            tissue: the tissue id to paint.
            only: paint only voxels that currently hold one of these tissues.
            exclude: never paint voxels that hold one of these tissues.
        """
        mask = np.broadcast_to(mask, self.view.shape)
        if only is not None:
            mask = mask & mask_lut(only)[self.view]
        if exclude is not None:
            mask = mask & ~mask_lut(exclude)[self.view]
        self.view[mask] = tissue

    def has(self, tissues: Iterable[int]) -> np.ndarray:
        """Boolean map of the voxels of the block holding one of ``tissues``."""
        return mask_lut(tissues)[self.view]


class Canvas:
    """Tissue map of one case plus its coordinate axes.

    Args:
        u: ``(nx,)`` increasing u coordinates (mm).
        v: ``(ny,)`` increasing v coordinates (mm).
        zeta: ``(nz,)`` increasing nominal z coordinates.
        zs: physical mm per nominal mm along z.
    """

    def __init__(self, u: np.ndarray, v: np.ndarray, zeta: np.ndarray, zs: float) -> None:
        self.u = np.asarray(u, F32)
        self.v = np.asarray(v, F32)
        self.zeta = np.asarray(zeta, F32)
        self.zs = float(zs)
        self.tissue = np.zeros((self.zeta.size, self.v.size, self.u.size), np.uint8)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape ``(nz, ny, nx)`` of the tissue map."""
        return self.tissue.shape  # type: ignore[return-value]

    def box(self, u0: float, u1: float, v0: float, v1: float, z0: float, z1: float) -> Box | None:
        """The block covering ``[u0,u1] x [v0,v1] x [z0,z1]`` (zeta nominal), or None if empty."""
        i0, i1 = np.searchsorted(self.u, u0, side="left"), np.searchsorted(self.u, u1, side="right")
        j0, j1 = np.searchsorted(self.v, v0, side="left"), np.searchsorted(self.v, v1, side="right")
        k0, k1 = np.searchsorted(self.zeta, z0, side="left"), np.searchsorted(self.zeta, z1, side="right")
        if i1 <= i0 or j1 <= j0 or k1 <= k0:
            return None
        sl = (slice(int(k0), int(k1)), slice(int(j0), int(j1)), slice(int(i0), int(i1)))
        Z = self.zeta[sl[0]][:, None, None]
        return Box(sl, self.u[sl[2]][None, None, :], self.v[sl[1]][None, :, None], Z, Z * F32(self.zs), self.tissue[sl])

    def full(self) -> Box:
        """The block covering the whole canvas."""
        box = self.box(-np.inf, np.inf, -np.inf, np.inf, -np.inf, np.inf)
        assert box is not None
        return box

    def zrange(self) -> tuple[float, float]:
        """Nominal zeta of the lowest and highest slice."""
        return float(self.zeta[0]), float(self.zeta[-1])


def smoothstep(e0: float, e1: float, x):
    """Cubic smooth step from 0 (at ``e0``) to 1 (at ``e1``); ``e0 > e1`` is allowed."""
    t = np.clip((np.asarray(x, F32) - F32(e0)) / F32(e1 - e0), 0, 1)
    return t * t * (3 - 2 * t)


def bump(x, lo: float, hi: float, power: float = 0.5):
    """Half-sine profile: 0 outside ``[lo, hi]``, 1 at the centre, ``sin(pi t) ** power``."""
    t = np.clip((np.asarray(x, F32) - F32(lo)) / F32(hi - lo), 0, 1)
    return np.maximum(np.sin(np.pi * t).astype(F32), 0) ** F32(power)


def ellipse_q(U, V, cu, cv, ru, rv, angle: float = 0.0):
    """Squared normalised radius of a (rotated) ellipse: < 1 inside.

    Args:
        U, V: coordinates (broadcastable).
        cu, cv: centre (scalars or arrays broadcastable with ``U``/``V``).
        ru, rv: semi-axes along the rotated u and v directions.
        angle: rotation (radians, counter-clockwise from +u towards +v).

    Returns:
        ``((du'/ru)^2 + (dv'/rv)^2)`` as float32.
    """
    du = U - F32(cu) if np.isscalar(cu) else U - cu
    dv = V - F32(cv) if np.isscalar(cv) else V - cv
    if angle:
        c, s = F32(np.cos(angle)), F32(np.sin(angle))
        du, dv = du * c + dv * s, dv * c - du * s
    ru = np.maximum(ru, F32(1e-3))
    rv = np.maximum(rv, F32(1e-3))
    return (du / ru) ** 2 + (dv / rv) ** 2


def paint_column(
    canvas: Canvas,
    z0: float,
    z1: float,
    params,
    tissue: int,
    only: Iterable[int] | None = None,
    exclude: Iterable[int] | None = None,
    angle: float = 0.0,
    scale: float = 1.0,
) -> Box | None:
    """Paint a stack of ellipses whose centre and radii vary with zeta.

    Args:
        canvas: the canvas.
        z0, z1: nominal zeta range.
        params: callable ``zeta (k,1,1) -> (cu, cv, ru, rv)`` arrays of the same shape;
            slices with a radius below 0.3 mm are empty.
        tissue: tissue id.
        only, exclude: see :meth:`Box.paint`.
        angle: in-plane rotation of the ellipses (radians).
        scale: factor applied to both radii.

    Returns:
        The painted block (None when nothing was in range).
    """
    zb = canvas.box(-np.inf, np.inf, -np.inf, np.inf, z0, z1)
    if zb is None:
        return None
    cu, cv, ru, rv = (np.broadcast_to(np.asarray(a, F32), zb.Z.shape) for a in params(zb.Z))
    ru, rv = ru * F32(scale), rv * F32(scale)
    ok = (ru[:, 0, 0] > 0.3) & (rv[:, 0, 0] > 0.3)
    if not ok.any():
        return None
    r = np.maximum(ru, rv)[ok]
    box = canvas.box(float((cu[ok] - r).min()), float((cu[ok] + r).max()), float((cv[ok] - r).min()), float((cv[ok] + r).max()), z0, z1)
    if box is None:
        return None
    q = ellipse_q(box.U, box.V, cu, cv, ru, rv, angle)
    box.paint((q < 1) & ok[:, None, None], tissue, only, exclude)
    return box


def tube_field(box: Box, p0: Sequence[float], p1: Sequence[float], zs: float):
    """Distance (mm) from the voxels of a block to the segment ``p0-p1`` and the segment parameter.

    Args:
        box: the block.
        p0, p1: segment ends ``(u, v, zeta)`` with zeta nominal.
        zs: physical mm per nominal mm.

    Returns:
        ``(dist, t)`` arrays; ``t`` in ``[0, 1]`` is the position of the closest point.
    """
    a = np.array([p0[0], p0[1], p0[2] * zs], np.float64)
    d = np.array([p1[0], p1[1], p1[2] * zs], np.float64) - a
    L2 = max(float(d @ d), 1e-6)
    du, dv, dz = box.U - F32(a[0]), box.V - F32(a[1]), box.Zmm - F32(a[2])
    t = np.clip((du * F32(d[0] / L2) + dv * F32(d[1] / L2)) + dz * F32(d[2] / L2), 0, 1)
    dist2 = (du - t * F32(d[0])) ** 2 + (dv - t * F32(d[1])) ** 2 + (dz - t * F32(d[2])) ** 2
    return np.sqrt(dist2), t


def paint_tube(
    canvas: Canvas,
    p0: Sequence[float],
    p1: Sequence[float],
    r0: float,
    r1: float,
    tissue: int,
    only: Iterable[int] | None = None,
    exclude: Iterable[int] | None = None,
    v_above: float | None = None,
    v_below: float | None = None,
) -> None:
    """Paint a tapered capsule from ``p0`` (radius ``r0``) to ``p1`` (radius ``r1``).

    Args:
        canvas: the canvas.
        p0, p1: ends ``(u, v, zeta)`` (mm, mm, nominal).
        r0, r1: radii in physical mm.
        tissue: tissue id.
        only, exclude: see :meth:`Box.paint`.
        v_above: paint only voxels with ``v >= v_above`` (an air level, say).
        v_below: paint only voxels with ``v < v_below``.
    """
    if max(r0, r1) <= 0.2:
        return
    r = max(r0, r1) + 1.0
    zs = canvas.zs
    box = canvas.box(
        min(p0[0], p1[0]) - r, max(p0[0], p1[0]) + r,
        min(p0[1], p1[1]) - r, max(p0[1], p1[1]) + r,
        min(p0[2], p1[2]) - r / zs, max(p0[2], p1[2]) + r / zs,
    )
    if box is None:
        return
    dist, t = tube_field(box, p0, p1, zs)
    mask = dist < F32(r0) + t * F32(r1 - r0)
    if v_above is not None:
        mask &= box.V >= F32(v_above)
    if v_below is not None:
        mask &= box.V < F32(v_below)
    box.paint(mask, tissue, only, exclude)


def paint_polyline(
    canvas: Canvas,
    points: Sequence[Sequence[float]],
    radii: Sequence[float],
    tissue: int,
    only: Iterable[int] | None = None,
    exclude: Iterable[int] | None = None,
    v_above: float | None = None,
    v_below: float | None = None,
) -> None:
    """Paint a chain of tapered capsules through ``points`` with per-point ``radii``."""
    for k in range(len(points) - 1):
        paint_tube(canvas, points[k], points[k + 1], radii[k], radii[k + 1], tissue, only, exclude, v_above, v_below)


def smooth_noise(rng: np.random.Generator, n_waves: int = 5, wavelength: tuple[float, float] = (50.0, 140.0)):
    """A random smooth 3-D field (sum of plane waves) with unit-ish amplitude.

    Args:
        rng: random generator.
        n_waves: number of plane waves.
        wavelength: range of wavelengths (mm).

    Returns:
        A callable ``f(U, V, Zmm)`` evaluating the field on broadcastable arrays.
    """
    dirs = rng.normal(size=(n_waves, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    k = 2 * np.pi / rng.uniform(*wavelength, size=n_waves)
    phase = rng.uniform(0, 2 * np.pi, size=n_waves)
    amp = rng.uniform(0.5, 1.0, size=n_waves)
    amp /= np.sqrt((amp**2).sum() / 2)

    def field(U, V, Zmm):
        out = None
        for j in range(n_waves):
            kk = dirs[j] * k[j]
            arg = (U * F32(kk[0]) + V * F32(kk[1])) + (Zmm * F32(kk[2]) + F32(phase[j]))
            term = F32(amp[j]) * np.cos(arg)
            out = term if out is None else out + term
        return out

    return field
