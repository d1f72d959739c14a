"""Intensity synthesis: tissue map -> HU with texture, partial volume blur and scanner noise."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from sam_mix_monai.data.phantom.domains import DomainSpec
from sam_mix_monai.data.phantom.geometry import F32
from sam_mix_monai.data.phantom.patient import Patient
from sam_mix_monai.data.phantom.tissues import Tissue as T
from sam_mix_monai.data.phantom.tissues import tissue_lut


class SliceTexture:
    """A unit-variance random texture evaluated slice by slice, correlated over ``sigma_px`` in-plane.

    Each slice is a mixture of ``n_basis`` filtered 2-D noise images with weights that
    drift smoothly from slice to slice (correlation ``corr_slices``), which is much
    cheaper than filtering 3-D noise and looks the same at CT slice spacings.

    Args:
        rng: texture generator.
        shape: ``(nz, ny, nx)``.
        sigma_px: in-plane correlation (pixels).
        corr_slices: through-plane correlation (slices).
        n_basis: number of basis images.
    """

    def __init__(self, rng: np.random.Generator, shape: tuple[int, int, int], sigma_px: float, corr_slices: float, n_basis: int = 5) -> None:
        nz, ny, nx = shape
        self.bases = rng.standard_normal((n_basis, ny, nx), dtype=np.float32)
        for b in self.bases:
            ndi.gaussian_filter(b, max(sigma_px, 0.3), output=b, mode="wrap")
            b /= max(float(b.std()), 1e-6)
        w = rng.standard_normal((n_basis, nz + 8)).astype(np.float32)
        w = ndi.gaussian_filter1d(w, max(corr_slices, 0.3), axis=1, mode="nearest")[:, 4 : 4 + nz]
        self.w = w / (np.linalg.norm(w, axis=0, keepdims=True) + F32(1e-6))

    def slice(self, k: int, rows: slice, cols: slice) -> np.ndarray:
        """Texture of slice ``k`` over the rectangle ``rows x cols``."""
        out = self.bases[0, rows, cols] * self.w[0, k]
        for j in range(1, self.bases.shape[0]):
            out += self.bases[j, rows, cols] * self.w[j, k]
        return out


def _kernels(sigma_z: float, sigma_px: float) -> tuple[np.ndarray, float]:
    """3-tap through-plane weights and the noise gain of the whole blur."""
    wz = np.exp(-0.5 * (np.array([-1.0, 0.0, 1.0]) / max(sigma_z, 1e-3)) ** 2)
    wz /= wz.sum()
    k = np.zeros(41)
    k[20] = 1.0
    k = ndi.gaussian_filter1d(k, sigma_px, truncate=3.0)
    gain = float(np.sqrt((wz**2).sum()) * (k**2).sum())
    return wz.astype(np.float32), gain


def synthesize_hu(
    tissue: np.ndarray,
    p: Patient,
    dom: DomainSpec,
    tex_rng: np.random.Generator,
    noise_rng: np.random.Generator,
    canvas_uv=None,
) -> np.ndarray:
    """Turn a ``(z, y, x)`` tissue map into a float32 HU volume.

    Per slice: mean HU per tissue (+ calibration offset), fine (0.8 mm) and coarse
    (3 mm) texture with tissue-dependent amplitude, special textures (stool gas,
    pancreatic fat clefts, arterial-phase splenic stripes), white noise, and an
    in-plane Gaussian; then a 3-tap Gaussian through the slices. The blur acts as
    partial-volume averaging and shapes the noise grain (it stands in for the
    reconstruction kernel). Finally the circular reconstruction mask (domain b).

    Args:
        tissue: tissue map.
        p: case parameters (HU per tissue, noise level, blur).
        dom: domain.
        tex_rng: texture generator.
        noise_rng: noise generator (one draw per slice, in slice order).
        canvas_uv: ``(u, v)`` 1-D coordinate axes (mm) for stripes and the FOV circle.

    Returns:
        float32 HU volume (not yet rounded or clipped).
    """
    nz, ny, nx = tissue.shape
    lut = tissue_lut(p.hu) + F32(p.hu_offset)
    lut[int(T.PAD)] = dom.pad_value
    amp_f = tissue_lut(dict(dom.fine_texture))
    amp_c = tissue_lut(dict(dom.coarse_texture))
    fine = SliceTexture(tex_rng, tissue.shape, 0.8 / p.dx, 0.8 / p.dz)
    coarse = SliceTexture(tex_rng, tissue.shape, 3.0 / p.dx, 4.0 / p.dz)
    ang = tex_rng.uniform(0, np.pi)
    wz, gain = _kernels(p.pv_sigma_z, p.pv_sigma_px)
    noise_sd = F32(p.noise_sd / gain)
    gas_hu, fat_hu = F32(-900.0 + p.hu_offset), F32(-60.0 + p.hu_offset)
    out = np.empty(tissue.shape, np.float32)
    for k in range(nz):
        t = tissue[k]
        h = lut[t]
        body_rows = np.nonzero((t != T.AIR).any(axis=1))[0]
        if body_rows.size:
            body_cols = np.nonzero((t != T.AIR).any(axis=0))[0]
            rs, cs = slice(body_rows[0], body_rows[-1] + 1), slice(body_cols[0], body_cols[-1] + 1)
            ts, hs = t[rs, cs], h[rs, cs]
            tf, tc = fine.slice(k, rs, cs), coarse.slice(k, rs, cs)
            hs += amp_f[ts] * tf
            hs += amp_c[ts] * tc
            gas = (ts == T.FECES) & (tf > 1.0)
            hs[gas] = gas_hu + F32(80.0) * tc[gas]
            hs[(ts == T.PANCREAS) & (tc > 1.2)] = fat_hu
            if dom.spleen_moire > 0 and canvas_uv is not None:
                sp = ts == T.SPLEEN
                if sp.any():
                    u, v = canvas_uv
                    ph = (u[cs][None, :] * F32(np.cos(ang)) + v[rs][:, None] * F32(np.sin(ang))) * F32(2 * np.pi / 14.0)
                    hs[sp] += F32(dom.spleen_moire) * np.tanh(F32(2.0) * np.sin(ph[sp] + F32(2.5) * tc[sp]))
        h += noise_rng.standard_normal((ny, nx), dtype=np.float32) * noise_sd
        ndi.gaussian_filter(h, p.pv_sigma_px, output=out[k], mode="nearest", truncate=3.0)
    prev = out[0].copy()
    for k in range(nz):
        cur = out[k].copy()
        nxt = out[k + 1] if k + 1 < nz else cur
        np.multiply(cur, wz[1], out=out[k])
        out[k] += wz[0] * prev + wz[2] * nxt
        prev = cur
    if dom.fov_circle and canvas_uv is not None:
        u, v = canvas_uv
        cu, cv = 0.5 * (u[0] + u[-1]), 0.5 * (v[0] + v[-1])
        rad = 0.5 * (u[-1] - u[0])
        outside = (u[None, :] - cu) ** 2 + (v[:, None] - cv) ** 2 > rad**2
        out[:, outside] = dom.pad_value
    return out
