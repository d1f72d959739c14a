"""One phantom case: parameters -> tissue map -> HU image, label and affine in a header orientation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform

from sam_mix_monai.data.phantom import body, liver, organs, thorax, vessels
from sam_mix_monai.data.phantom.domains import get_domain
from sam_mix_monai.data.phantom.geometry import Canvas
from sam_mix_monai.data.phantom.patient import MIN_SLICES, Patient, sample_patient
from sam_mix_monai.data.phantom.texture import synthesize_hu
from sam_mix_monai.data.phantom.tissues import label_lut
from sam_mix_monai.utils.errors import InputError

HU_MIN, HU_MAX = -1024, 3071
_DOMAIN_KEY = {"a": 0, "b": 1}


@dataclass
class PhantomCase:
    """A generated case, arrays in the stored (header) orientation.

    Attributes:
        image: int16 HU volume.
        label: uint8 label (0 background, 1 liver, 2 lesion in the LiTS layout).
        affine: 4x4 voxel-to-RAS+ world (mm) matrix of both arrays.
        tissue: uint8 tissue map (see :class:`~sam_mix_monai.data.phantom.tissues.Tissue`).
        patient: the case parameters.
        liver_slices: number of axial slices that contain liver.
        liver_range: first and last axial slice (RAS order, 0 = most inferior) with
            liver, or None.
    """

    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    tissue: np.ndarray
    patient: Patient
    liver_slices: int
    liver_range: tuple[int, int] | None = None

    @property
    def axcodes(self) -> tuple[str, str, str]:
        """Header orientation as axis codes, e.g. ``('L', 'P', 'S')``."""
        return self.patient.orientation


def case_seed(seed: int, case_id: int, domain: str) -> np.random.SeedSequence:
    """The seed sequence of one case: ``SeedSequence(seed).spawn`` child ``case_id``, per domain.

    Args:
        seed: cohort seed.
        case_id: case number (the file id, so a cohort can be extended with ``start_id``).
        domain: ``"a"`` or ``"b"``.

    Returns:
        ``SeedSequence(seed, spawn_key=(case_id, domain_index))``.
    """
    return np.random.SeedSequence(int(seed), spawn_key=(int(case_id), _DOMAIN_KEY[domain]))


def build_tissue_map(p: Patient, rngs: dict[str, np.random.Generator]) -> Canvas:
    """Paint all structures, lowest priority first, on the patient's canvas.

    Args:
        p: case parameters.
        rngs: generators ``liver``, ``bowel`` and ``misc``.

    Returns:
        The canvas with its tissue map ``(z, y, x)``.
    """
    n, k = p.matrix, p.slices
    u = p.x0 + np.arange(n) * p.dx - p.xc
    v = p.y0 + np.arange(n) * p.dx - p.yc
    zeta = (p.z0 + np.arange(k) * p.dz - p.z_dome) / p.zs
    cv = Canvas(u, v, zeta, p.zs)
    body.paint_body(cv, p)
    thorax.paint_thorax(cv, p, rngs["misc"])
    organs.paint_bowel(cv, p, rngs["bowel"])
    organs.paint_stomach(cv, p, rngs["bowel"])
    organs.paint_pancreas(cv, p)
    organs.paint_spleen(cv, p)
    deform = liver.paint_liver(cv, p, rngs["liver"])
    liver.paint_gallbladder(cv, p)
    organs.paint_kidneys(cv, p)
    vessels.paint_great_vessels(cv, p, rngs["misc"])
    body.paint_trunk_muscles(cv, p, lambda Z: vessels.aorta_center(p, Z))
    body.paint_spine(cv, p)
    body.paint_pelvis(cv, p)
    body.paint_ribs(cv, p)
    liver.paint_lesions(cv, p, rngs["liver"], deform)
    return cv


def reorient(arr_zyx: np.ndarray, affine_ras: np.ndarray, axcodes) -> tuple[np.ndarray, np.ndarray]:
    """Store a canonical ``(z, y, x)`` array in the orientation ``axcodes``.

    The array is transposed to RAS ``(x, y, z)`` and then flipped/permuted with
    :mod:`nibabel.orientations`; the affine is updated so every voxel keeps its world
    position (the anatomy is identical whatever the header orientation).

    Args:
        arr_zyx: array indexed ``[z, y, x]`` with x, y, z increasing to R, A, S.
        affine_ras: affine of the RAS ``(x, y, z)`` array.
        axcodes: target axis codes, e.g. ``('L', 'P', 'S')``.

    Returns:
        ``(array, affine)`` in the target orientation (the array may be a view).
    """
    ras = arr_zyx.transpose(2, 1, 0)
    ornt = ornt_transform(axcodes2ornt(("R", "A", "S")), axcodes2ornt(tuple(axcodes)))
    data = apply_orientation(ras, ornt)
    aff = affine_ras @ inv_ornt_aff(ornt, ras.shape)
    return data, aff


def generate_case(
    seed: int,
    case_id: int,
    domain: str = "a",
    matrix: int = 512,
    slices: int = 120,
    orientation=None,
    layout: str = "lits",
) -> PhantomCase:
    """Generate one synthetic abdominal CT with its liver (and lesion) label.

    Deterministic: the same arguments give bit-identical arrays in any process.

    Args:
        seed: cohort seed.
        case_id: case number.
        domain: ``"a"`` (portal venous) or ``"b"`` (shifted hospital, late arterial).
        matrix: in-plane matrix size.
        slices: number of axial slices (>= 16).
        orientation: header axis codes (e.g. ``"LPS"``); None draws one per case.
        layout: ``"lits"`` (lesions = 2) or ``"totalseg"`` (lesions part of liver = 1).

    Returns:
        The case.

    Raises:
        InputError: for bad arguments.
    """
    dom = get_domain(domain)
    if int(matrix) < 32:
        raise InputError(None, f"matrix must be at least 32 (got {matrix})")
    if int(slices) < MIN_SLICES:
        raise InputError(None, f"slices must be at least {MIN_SLICES} (got {slices})")
    ss = case_seed(seed, case_id, dom.name)
    anat, lv, bowel, misc, tex, noise = (np.random.default_rng(s) for s in ss.spawn(6))
    p = sample_patient(anat, dom, int(matrix), int(slices), orientation)
    cv = build_tissue_map(p, {"liver": lv, "bowel": bowel, "misc": misc})
    hu = synthesize_hu(cv.tissue, p, dom, tex, noise, (cv.u, cv.v))
    np.clip(hu, HU_MIN, HU_MAX, out=hu)
    image = np.rint(hu).astype(np.int16)
    del hu
    label = label_lut(layout)[cv.tissue]
    has_liver = np.nonzero(label.reshape(label.shape[0], -1).any(axis=1))[0]
    liver_range = (int(has_liver[0]), int(has_liver[-1])) if has_liver.size else None
    aff = np.diag([p.dx, p.dx, p.dz, 1.0])
    aff[:3, 3] = (p.x0, p.y0, p.z0)
    img_o, aff_o = reorient(image, aff, p.orientation)
    lab_o, _ = reorient(label, aff, p.orientation)
    tis_o, _ = reorient(cv.tissue, aff, p.orientation)
    return PhantomCase(img_o, lab_o, aff_o, tis_o, p, int(has_liver.size), liver_range)
