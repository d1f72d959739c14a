"""Tissue classes of the phantom and their mapping to segmentation labels.

A phantom is first drawn as a ``uint8`` map of tissue ids (one per voxel); intensities
(HU) and labels are both derived from that map, so the image and the label always agree.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Tissue(IntEnum):
    """Tissue ids painted into the tissue map."""

    AIR = 0
    SKIN = 1
    SUBCUT_FAT = 2
    MUSCLE = 3
    VISC_FAT = 4
    LUNG = 5
    LUNG_VESSEL = 6
    MYOCARDIUM = 7
    BLOOD_POOL = 8
    LIVER = 9
    HEPATIC_VEIN = 10
    PORTAL_INTRA = 11
    LESION_CYST = 12
    LESION_SOLID = 13
    LESION_NECROTIC = 14
    PORTAL_VEIN = 15
    SPLEEN = 16
    KIDNEY_CORTEX = 17
    KIDNEY_MEDULLA = 18
    URINE = 19
    AORTA = 20
    ARTERY = 21
    IVC = 22
    VEIN = 23
    STOMACH_WALL = 24
    BOWEL_WALL = 25
    GI_AIR = 26
    GI_FLUID = 27
    FECES = 28
    PANCREAS = 29
    BILE = 30
    CORTICAL_BONE = 31
    CANCELLOUS_BONE = 32
    POSTERIOR_ELEMENT = 33
    DISC = 34
    CSF = 35
    CORD = 36
    CARTILAGE = 37
    CALCIFICATION = 38
    TABLE_SHELL = 39
    TABLE_FOAM = 40
    PAD = 41
    MEDIASTINAL_FAT = 42


N_TISSUES = len(Tissue)

#: Tissues that make up the liver label (intrahepatic vessels belong to the liver).
LIVER_TISSUES = (Tissue.LIVER, Tissue.HEPATIC_VEIN, Tissue.PORTAL_INTRA)
#: Tissues that make up the lesion label (2 in the LiTS layout; liver in TotalSegmentator).
LESION_TISSUES = (Tissue.LESION_CYST, Tissue.LESION_SOLID, Tissue.LESION_NECROTIC)
#: Soft abdominal contents an organ may be drawn over (lower-priority tissues).
SOFT_CONTENTS = (
    Tissue.VISC_FAT,
    Tissue.BOWEL_WALL,
    Tissue.GI_AIR,
    Tissue.GI_FLUID,
    Tissue.FECES,
    Tissue.STOMACH_WALL,
)


def tissue_lut(values: dict[int, float] | None = None, default: float = 0.0, dtype=np.float32) -> np.ndarray:
    """A 256-entry lookup table indexed by tissue id.

    Args:
        values: value per tissue id.
        default: value of ids not in ``values``.
        dtype: dtype of the table.

    Returns:
        The table, usable as ``lut[tissue_map]``.
    """
    lut = np.full(256, default, dtype=dtype)
    for k, v in (values or {}).items():
        lut[int(k)] = v
    return lut


def label_lut(layout: str = "lits") -> np.ndarray:
    """Tissue id -> label value: 1 liver, 2 lesion (LiTS) or 1 for both (TotalSegmentator).

    Args:
        layout: ``"lits"`` or ``"totalseg"``.

    Returns:
        A ``uint8`` lookup table of 256 entries.
    """
    lesion = 2 if layout == "lits" else 1
    values = {int(t): 1 for t in LIVER_TISSUES}
    values.update({int(t): lesion for t in LESION_TISSUES})
    return tissue_lut(values, 0, np.uint8)


def mask_lut(tissues) -> np.ndarray:
    """Boolean lookup table that is True for the given tissue ids."""
    return tissue_lut({int(t): True for t in tissues}, False, bool)
