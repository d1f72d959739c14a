"""Per-case parameters: patient build, scan geometry and appearance, drawn from one generator.

Scan geometry (documented choice):

* In-plane: the body width (290-370 mm) and the fraction of the field of view it fills
  (domain dependent) give the pixel spacing of a 512 matrix, clipped to the domain's
  range (a: 0.6-0.9 mm, b: 0.68-0.98 mm). Another matrix keeps the same field of view,
  so ``matrix=128`` gives 4x coarser pixels of the same patient.
* Through-plane: the scan covers a random margin above the liver dome (lower thorax:
  lung bases, heart) and below the liver tip (kidneys, bowel, iliac crests); the slice
  spacing is that extent divided by the slice count, rounded to 0.25 mm and clipped to
  1-5 mm (about 2-3.5 mm for 120 slices). At least 2.5 slice spacings are kept above
  the dome and below the tip, so the first and last slices never show liver; when the
  slice count is too small for the whole anatomy it is compressed along z.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sam_mix_monai.data.phantom.domains import DomainSpec
from sam_mix_monai.data.phantom.tissues import Tissue

#: Header orientations (axis codes of the stored array) and their probabilities.
ORIENTATIONS: tuple[tuple[str, str, str], ...] = (
    ("R", "A", "S"),
    ("L", "P", "S"),
    ("L", "A", "S"),
    ("L", "P", "I"),
    ("P", "L", "S"),
    ("A", "R", "I"),
)
_ORIENTATION_P = (0.25, 0.25, 0.15, 0.15, 0.1, 0.1)

#: Nominal craniocaudal length of the liver (mm); zeta runs from 0 (dome) to -LIVER_NOMINAL (tip).
LIVER_NOMINAL = 165.0
MIN_SLICES = 16


@dataclass
class Patient:
    """Everything drawn at random for one case (see the module docstring for the geometry)."""

    domain: str
    matrix: int
    slices: int
    dx: float
    dz: float
    x0: float
    y0: float
    z0: float
    xc: float
    yc: float
    z_dome: float
    zs: float
    orientation: tuple[str, str, str]
    # body outline and wall (mm)
    a: float
    b_ant: float
    b_post: float
    p_super: float
    harmonics: list[tuple[int, float, float]]
    belly: float
    flare: float
    waist: float
    hip: float
    f_ant: float
    f_lat: float
    f_post: float
    m_ant: float
    m_lat: float
    m_post: float
    v_table: float
    table_style: int
    # spine
    vb_rx: float
    vb_ry: float
    vb_v: float
    canal_r: float
    lamina_v: float
    vert_period: float
    vert_phase: float
    lordosis: float
    # organ shape jitter (named factors) and appearance
    org: dict[str, float] = field(default_factory=dict)
    hu: dict[int, float] = field(default_factory=dict)
    hu_offset: float = 0.0
    noise_sd: float = 10.0
    pv_sigma_px: float = 0.6
    pv_sigma_z: float = 0.35
    lesions: list[dict] = field(default_factory=list)

    @property
    def ac(self) -> float:
        """Half-width (mm) of the abdominal cavity."""
        return self.a - self.f_lat - self.m_lat

    @property
    def bc(self) -> float:
        """Half AP depth (mm) of the abdominal cavity."""
        return 0.5 * (self.b_ant - self.f_ant - self.m_ant + self.b_post - self.f_post - self.m_post)

    @property
    def vc0(self) -> float:
        """v (mm) of the centre of the abdominal cavity."""
        return 0.5 * ((self.b_ant - self.f_ant - self.m_ant) - (self.b_post - self.f_post - self.m_post))

    def UV(self, U: float, V: float) -> tuple[float, float]:
        """Cavity-normalised position -> (u, v) mm (U=1: right cavity wall, V=1: anterior)."""
        return U * self.ac, self.vc0 + V * self.bc

    def vert_v(self, zeta):
        """v (mm) of the vertebral body centre at nominal ``zeta`` (lumbar lordosis)."""
        z = np.asarray(zeta, np.float32)
        return np.float32(self.vb_v) + np.float32(self.lordosis) * np.exp(-(((z + 190.0) / 90.0) ** 2)).astype(np.float32)

    def summary(self) -> dict:
        """JSON-friendly summary for the manifest."""
        return {
            "domain": self.domain,
            "spacing_mm": [round(self.dx, 6), round(self.dx, 6), round(self.dz, 4)],
            "shape_ras": [self.matrix, self.matrix, self.slices],
            "orientation": "".join(self.orientation),
            "body_width_mm": round(2 * self.a, 1),
            "liver_height_mm": round(LIVER_NOMINAL * self.zs, 1),
            "hu_offset": round(self.hu_offset, 2),
            "noise_sd_hu": round(self.noise_sd, 2),
            "liver_hu": round(self.hu[int(Tissue.LIVER)] + self.hu_offset, 1),
            "lesions": len(self.lesions),
        }


def _z_layout(rng: np.random.Generator, dom: DomainSpec, slices: int) -> tuple[float, float, float]:
    """Slice spacing, physical mm above the dome (to the top slice centre) and zs."""
    zs = rng.uniform(150.0, 190.0) / LIVER_NOMINAL
    top_n, bot_n = rng.uniform(*dom.top_margin), rng.uniform(*dom.bottom_margin)
    wanted = (top_n + LIVER_NOMINAL + bot_n) * zs
    dz = float(np.clip(np.round(wanted / (slices - 1) / 0.25) * 0.25, 1.0, 5.0))
    extent = (slices - 1) * dz
    margin = 2.5 * dz
    if extent >= wanted:
        extra = extent - wanted
        top = top_n * zs + extra * top_n / (top_n + bot_n)
    else:
        s = extent / wanted
        top = max(top_n * zs * s, margin)
        bot = max(bot_n * zs * s, margin)
        zs = (extent - top - bot) / LIVER_NOMINAL
    return dz, top, zs


def sample_patient(rng: np.random.Generator, dom: DomainSpec, matrix: int, slices: int, orientation=None) -> Patient:
    """Draw the parameters of one case.

    Args:
        rng: the case's anatomy generator (its draws do not depend on matrix or slices,
            except for the z layout, which is drawn with a fixed number of draws).
        dom: acquisition domain.
        matrix: in-plane matrix size.
        slices: number of slices (>= ``MIN_SLICES``).
        orientation: header axis codes, or None to draw one.

    Returns:
        The case parameters.
    """
    u = rng.uniform
    ob = float(rng.beta(2.0, 2.5))  # adiposity
    width = float(np.clip(285 + 75 * ob + rng.normal(0, 10), 270, 380))
    a = width / 2
    b_tot = a * u(0.66, 0.8)
    b_ant = b_tot * u(1.0, 1.12)
    b_post = 2 * b_tot - b_ant
    frac = u(*dom.body_fov_fraction)
    fov = round(float(np.clip(width / frac / 512, *dom.spacing_512)) * 512)
    dx = fov / matrix
    fx, fy = u(-25, 25), u(-20, 30)
    max_off = max(0.0, fov / 2 - a - 8)
    off_x = u(-0.4, 0.4) * max_off
    off_y = float(np.clip(u(-0.05, 0.03) * fov, -(fov / 2 - b_ant - 5), fov / 2 - b_post - 25))
    dz, top, zs = _z_layout(rng, dom, slices)
    z0 = round(u(-650, -250), 1)
    z_dome = z0 + (slices - 1) * dz - top
    choice = rng.choice(len(ORIENTATIONS), p=_ORIENTATION_P)
    orient = tuple(orientation) if orientation is not None else ORIENTATIONS[int(choice)]

    f_ant = 6 + 38 * ob * u(0.7, 1.3)
    f_lat = 5 + 30 * ob * u(0.7, 1.3)
    f_post = 7 + 28 * ob * u(0.7, 1.3)
    m_post = u(5, 9)
    psd = u(28, 36)  # back muscle depth behind the laminae
    canal_r = u(7.0, 8.5)
    bone = u(0.92, 1.08)
    vb_rx, vb_ry = 20.5 * bone, 16.0 * bone
    lamina_v = -b_post + f_post + psd
    vb_v = lamina_v + 4 + 2 * canal_r + 1 + vb_ry

    p = Patient(
        domain=dom.name, matrix=matrix, slices=slices, dx=dx, dz=dz,
        x0=fx - (matrix - 1) / 2 * dx, y0=fy - (matrix - 1) / 2 * dx, z0=z0,
        xc=fx + off_x, yc=fy + off_y, z_dome=z_dome, zs=zs, orientation=orient,  # type: ignore[arg-type]
        a=a, b_ant=b_ant, b_post=b_post, p_super=u(2.15, 2.6),
        harmonics=[(n, float(rng.normal(0, 0.012)), u(0, 2 * np.pi)) for n in (2, 3, 4, 5)],
        belly=u(0.0, 0.1) * (1 + ob), flare=u(0.0, 0.06), waist=u(0.02, 0.06), hip=u(0.03, 0.08),
        f_ant=f_ant, f_lat=f_lat, f_post=f_post, m_ant=u(8, 13), m_lat=u(10, 16), m_post=m_post,
        v_table=-b_post * u(0.95, 0.985), table_style=0 if dom.name == "a" else 1,
        vb_rx=vb_rx, vb_ry=vb_ry, vb_v=vb_v, canal_r=canal_r, lamina_v=lamina_v,
        vert_period=u(31, 35), vert_phase=u(0, 1), lordosis=u(4, 14),
    )
    p.org = {
        "bone": bone,
        "ob": ob,
        "liver_r": u(0.92, 1.08),
        "liver_left": u(0.7, 1.25),
        "liver_lob": u(0.05, 0.11),
        "liver_tip": u(0.92, 1.1) if u() > 0.2 else u(1.1, 1.25),
        "liver_shift": rng.normal(0, 0.03),
        "spleen": u(0.82, 1.18),
        "spleen_z": rng.normal(0, 8),
        "kid_r": u(0.9, 1.1),
        "kid_l": u(0.9, 1.1),
        "kid_rz": rng.normal(0, 8),
        "kid_lz": u(8, 22),
        "stomach": u(0.65, 1.15),
        "stomach_air": u(0.05, 0.55),
        "gb": u(0.7, 1.3) if u() < 0.85 else 0.0,
        "aorta_r": u(10.0, 13.0),
        "aorta_calc": float(rng.integers(0, 7)),
        "ivc_r": u(9.0, 12.0),
        "heart": u(0.9, 1.1),
        "colon_air": u(0.1, 0.6),
        "pancreas": u(0.8, 1.15),
        "psoas": u(0.85, 1.2),
        "dome_l": u(8, 22),
    }
    hu = {int(t): u(*rng_range) for t, rng_range in dom.hu.items()}
    delta = u(*dom.lesion_delta)
    hu[int(Tissue.LESION_SOLID)] = hu[int(Tissue.LIVER)] - delta
    hu[int(Tissue.LESION_NECROTIC)] = max(12.0, hu[int(Tissue.LESION_SOLID)] - u(15, 35))
    hu[int(Tissue.PAD)] = dom.pad_value
    p.hu = hu
    p.hu_offset = u(*dom.hu_offset)
    p.noise_sd = float(u(*dom.noise_sd) * np.clip((a / 165) ** 0.8, 0.85, 1.2))
    p.pv_sigma_px = u(*dom.pv_sigma_px)
    p.pv_sigma_z = dom.pv_sigma_z
    return p
