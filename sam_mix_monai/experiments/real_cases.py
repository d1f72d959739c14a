"""The real CTs at hand (``../shared/data/real``) as scored test cases: image, reference liver, spacing.

:func:`load_real_case` reads one case by name (3D-IRCADb patients with their manual liver masks, the
TotalSegmentator example with its reference resampled onto the CT's grid); :func:`score_segmenter`
segments it through the infer path (:class:`~sam_mix_monai.inference.Segmenter`, exactly what
``sam-mix infer`` runs) and scores 3D Dice and HD95 against the reference.

3D-IRCADb is CC BY-NC-ND: nothing here writes a copy, conversion or crop of it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sam_mix_monai.utils.errors import InputError, PathLike

__all__ = ["REAL_CASES", "RealCase", "load_real_case", "real_root", "score_segmenter"]

#: Case name -> folder under the real-data root.
REAL_CASES = {"ircadb_07": "ircadb_07", "ircadb_17": "ircadb_17", "totalseg_example": "totalseg_example_dicom"}


@dataclass
class RealCase:
    """One real CT with its reference liver on the CT's grid."""

    name: str
    image: Any  # (1, X, Y, Z) HU MetaTensor
    reference: np.ndarray  # (X, Y, Z) uint8
    spacing: tuple[float, float, float]


def real_root(root: PathLike | None = None) -> Path:
    """The real-data folder: ``root``, ``$SAM_MIX_REAL_DATA``, or ``../shared/data/real`` beside the repository."""
    if root is not None:
        return Path(root)
    env = os.environ.get("SAM_MIX_REAL_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data" / "real"


def load_real_case(name: str, root: PathLike | None = None) -> RealCase:
    """Read a case of :data:`REAL_CASES`.

    Raises:
        InputError: an unknown name or a missing folder.
    """
    from sam_mix_monai.data.io import read_volume, voxel_spacing
    from sam_mix_monai.experiments.real_ct import reference_on_grid

    if name not in REAL_CASES:
        raise InputError(None, f"unknown real case {name!r} (known: {', '.join(REAL_CASES)})")
    folder = real_root(root) / REAL_CASES[name]
    if not folder.is_dir():
        raise InputError(folder, "real CT folder not found (it lives in ../shared/data/real)")
    if name.startswith("ircadb"):
        from sam_mix_monai.data.ircadb import read_ircadb_patient
        from sam_mix_monai.inference.volume import volume_array

        p = read_ircadb_patient(folder)
        image, ref = p.image, volume_array(p.liver).astype(np.uint8)
    else:
        image = read_volume(folder / "dicom")
        ref = reference_on_grid(image, folder / "liver.nii.gz")
    spacing = tuple(float(s) for s in voxel_spacing(np.asarray(image.affine, dtype=np.float64)))
    return RealCase(name, image, np.ascontiguousarray(ref), spacing)  # type: ignore[arg-type]


def score_segmenter(segmenter: Any, case: RealCase) -> dict[str, Any]:
    """Segment ``case`` with a :class:`~sam_mix_monai.inference.Segmenter` and score it.

    Returns:
        ``{"dice", "hd95", "seconds", "quality", "slices_encoded"}``.
    """
    from sam_mix_monai.experiments.real_ct import score_masks
    from sam_mix_monai.inference.geometry import AxialGeometry
    from sam_mix_monai.inference.summary import case_summary
    from sam_mix_monai.inference.volume import volume_array

    t0 = time.perf_counter()
    seg = segmenter.predict(case.image)
    seconds = time.perf_counter() - t0
    mask, pred = np.asarray(seg.prediction.mask), seg.prediction
    dice, hd95 = score_masks(mask, case.reference, case.spacing)
    geo = AxialGeometry(np.asarray(case.image.affine, dtype=np.float64), mask.shape)
    quality = case_summary(mask, geo, pred.liver_prob, pred.chosen_iou, image=volume_array(case.image))["quality"]
    return {"dice": round(dice, 4), "hd95": None if np.isnan(hd95) else round(hd95, 2), "seconds": round(seconds, 1),
            "quality": quality}
