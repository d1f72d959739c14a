"""Acquisition domains: scanner, protocol and contrast phase of a simulated hospital.

* ``a``: portal venous phase (about 70 s after contrast), sharp soft-tissue kernel,
  moderate noise, body filling most of the field of view, 2-3 mm slices for 120 slices.
* ``b``: "another hospital": late arterial phase (about 35 s) with a bright aorta, a
  barely enhanced liver, unopacified hepatic veins, a striped ("moire") spleen and
  cortico-medullary kidneys; a smoother reconstruction kernel with more, coarser noise;
  a calibration offset of -20..-8 HU; a larger field of view (the body fills a smaller
  fraction of the image) with a circular reconstruction mask padded with -1024; and a
  longer scan range (thicker slices for the same slice count).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from sam_mix_monai.data.phantom.tissues import Tissue as T
from sam_mix_monai.utils.errors import InputError

Range = tuple[float, float]

_COMMON_HU: dict[T, Range] = {
    T.AIR: (-1000, -1000),
    T.SKIN: (25, 50),
    T.SUBCUT_FAT: (-112, -95),
    T.MUSCLE: (45, 60),
    T.VISC_FAT: (-105, -88),
    T.MEDIASTINAL_FAT: (-105, -88),
    T.LUNG: (-880, -830),
    T.BILE: (0, 18),
    T.URINE: (0, 15),
    T.GI_AIR: (-1000, -990),
    T.GI_FLUID: (5, 28),
    T.FECES: (-40, 20),
    T.CORTICAL_BONE: (700, 950),
    T.CANCELLOUS_BONE: (180, 260),
    T.POSTERIOR_ELEMENT: (420, 620),
    T.DISC: (75, 100),
    T.CSF: (5, 15),
    T.CORD: (30, 40),
    T.CARTILAGE: (110, 180),
    T.CALCIFICATION: (550, 900),
    T.TABLE_SHELL: (150, 350),
    T.TABLE_FOAM: (-960, -900),
    T.LESION_CYST: (5, 18),
}

_HU_A: dict[T, Range] = {
    **_COMMON_HU,
    T.LIVER: (96, 114),
    T.HEPATIC_VEIN: (160, 190),
    T.PORTAL_INTRA: (165, 195),
    T.PORTAL_VEIN: (165, 195),
    T.SPLEEN: (110, 125),
    T.KIDNEY_CORTEX: (170, 200),
    T.KIDNEY_MEDULLA: (140, 165),
    T.AORTA: (150, 185),
    T.ARTERY: (150, 185),
    T.IVC: (135, 165),
    T.VEIN: (145, 175),
    T.MYOCARDIUM: (90, 110),
    T.BLOOD_POOL: (150, 180),
    T.LUNG_VESSEL: (110, 160),
    T.STOMACH_WALL: (80, 100),
    T.BOWEL_WALL: (70, 90),
    T.PANCREAS: (95, 110),
}

_HU_B: dict[T, Range] = {
    **_COMMON_HU,
    T.LIVER: (68, 82),
    T.HEPATIC_VEIN: (45, 60),
    T.PORTAL_INTRA: (115, 145),
    T.PORTAL_VEIN: (120, 150),
    T.SPLEEN: (115, 140),
    T.KIDNEY_CORTEX: (200, 250),
    T.KIDNEY_MEDULLA: (70, 95),
    T.AORTA: (280, 360),
    T.ARTERY: (270, 350),
    T.IVC: (70, 100),
    T.VEIN: (90, 120),
    T.MYOCARDIUM: (110, 140),
    T.BLOOD_POOL: (260, 340),
    T.LUNG_VESSEL: (160, 260),
    T.STOMACH_WALL: (95, 125),
    T.BOWEL_WALL: (85, 110),
    T.PANCREAS: (115, 140),
}

# Standard deviation (HU) of the fine (about 0.8 mm) and coarse (about 3 mm) texture per tissue.
_FINE_A: dict[T, float] = {
    T.LIVER: 4.0, T.SPLEEN: 3.0, T.MUSCLE: 5.0, T.SUBCUT_FAT: 7.0, T.VISC_FAT: 8.0, T.MEDIASTINAL_FAT: 6.0,
    T.LUNG: 22.0, T.CANCELLOUS_BONE: 45.0, T.CORTICAL_BONE: 60.0, T.POSTERIOR_ELEMENT: 60.0,
    T.FECES: 80.0, T.PANCREAS: 8.0, T.KIDNEY_CORTEX: 6.0, T.KIDNEY_MEDULLA: 6.0,
    T.LESION_SOLID: 6.0, T.LESION_NECROTIC: 5.0, T.GI_FLUID: 4.0, T.TABLE_FOAM: 15.0,
    T.MYOCARDIUM: 5.0, T.BLOOD_POOL: 4.0,
}
_COARSE_A: dict[T, float] = {
    T.LIVER: 4.0, T.SPLEEN: 3.0, T.MUSCLE: 4.0, T.SUBCUT_FAT: 5.0, T.VISC_FAT: 8.0,
    T.LUNG: 25.0, T.CANCELLOUS_BONE: 35.0, T.FECES: 60.0, T.PANCREAS: 12.0,
    T.LESION_SOLID: 10.0, T.LESION_NECROTIC: 6.0, T.GI_FLUID: 6.0, T.BILE: 3.0,
}
_FINE_B = {**_FINE_A, T.LIVER: 6.0, T.SPLEEN: 5.0, T.KIDNEY_CORTEX: 10.0}
_COARSE_B = {**_COARSE_A, T.LIVER: 9.0, T.SPLEEN: 8.0, T.PANCREAS: 16.0}


@dataclass(frozen=True)
class DomainSpec:
    """Acquisition and appearance parameters of one domain (ranges are sampled per case).

    Attributes:
        name: ``"a"`` or ``"b"``.
        phase: contrast phase in words.
        hu: mean HU range per tissue (before the calibration offset).
        fine_texture: HU standard deviation of fine texture per tissue.
        coarse_texture: HU standard deviation of coarse texture per tissue.
        noise_sd: standard deviation range (HU) of the final image noise.
        pv_sigma_px: in-plane Gaussian (pixels) for partial volume and noise grain.
        pv_sigma_z: through-plane Gaussian (slices).
        hu_offset: calibration offset range (HU) added to every tissue.
        body_fov_fraction: body width as a fraction of the field of view.
        spacing_512: in-plane spacing range (mm) for a 512 matrix.
        top_margin: nominal mm of scan above the liver dome.
        bottom_margin: nominal mm of scan below the liver tip.
        fov_circle: pad outside the reconstruction circle.
        pad_value: HU of the padding.
        spleen_moire: amplitude (HU) of arterial-phase splenic stripes.
        lesion_delta: how much darker (HU) than liver solid lesions are.
    """

    name: str
    phase: str
    hu: Mapping[T, Range]
    fine_texture: Mapping[T, float]
    coarse_texture: Mapping[T, float]
    noise_sd: Range
    pv_sigma_px: Range
    pv_sigma_z: float
    hu_offset: Range
    body_fov_fraction: Range
    spacing_512: Range
    top_margin: Range
    bottom_margin: Range
    fov_circle: bool
    pad_value: float
    spleen_moire: float
    lesion_delta: Range
    extra: Mapping[str, float] = field(default_factory=dict)


DOMAINS: dict[str, DomainSpec] = {
    "a": DomainSpec(
        name="a",
        phase="portal venous",
        hu=_HU_A,
        fine_texture=_FINE_A,
        coarse_texture=_COARSE_A,
        noise_sd=(9.0, 15.0),
        pv_sigma_px=(0.55, 0.7),
        pv_sigma_z=0.35,
        hu_offset=(0.0, 0.0),
        body_fov_fraction=(0.74, 0.9),
        spacing_512=(0.6, 0.9),
        top_margin=(20.0, 80.0),
        bottom_margin=(50.0, 120.0),
        fov_circle=False,
        pad_value=-1024.0,
        spleen_moire=0.0,
        lesion_delta=(30.0, 65.0),
    ),
    "b": DomainSpec(
        name="b",
        phase="late arterial",
        hu=_HU_B,
        fine_texture=_FINE_B,
        coarse_texture=_COARSE_B,
        noise_sd=(18.0, 28.0),
        pv_sigma_px=(0.9, 1.15),
        pv_sigma_z=0.45,
        hu_offset=(-20.0, -8.0),
        body_fov_fraction=(0.6, 0.74),
        spacing_512=(0.68, 0.98),
        top_margin=(40.0, 100.0),
        bottom_margin=(80.0, 130.0),
        fov_circle=True,
        pad_value=-1024.0,
        spleen_moire=28.0,
        lesion_delta=(22.0, 45.0),
    ),
}


def get_domain(name: str) -> DomainSpec:
    """Look up a domain by name.

    Args:
        name: ``"a"`` or ``"b"``.

    Returns:
        The domain parameters.

    Raises:
        InputError: for an unknown domain.
    """
    try:
        return DOMAINS[str(name).lower()]
    except KeyError:
        raise InputError(None, f"unknown domain {name!r} (choose from {', '.join(DOMAINS)})") from None
