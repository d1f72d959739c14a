"""``--skip-existing``: whether an earlier run finished a case, judged from its whole output set.

A case counts as done only when every file the run would write is there (the mask in each requested
type, ``<case>_liver.json``, the preview and probabilities when asked for) and the JSON agrees with
the NIfTI mask: its ``liver_volume_ml`` is the mask's voxel count times the voxel volume. A mask
without its JSON (a crash, a copy), a JSON of another mask, or an unreadable mask is segmented again
(the earlier files are replaced atomically).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from sam_mix_monai.inference.cases import Case

__all__ = ["expected_outputs", "finished_summary"]

logger = logging.getLogger(__name__)


def expected_outputs(out: Path, case: Case, output_types: Sequence[str], preview: bool = False,
                     save_probabilities: bool = False) -> list[Path]:
    """Every file a run writes for ``case`` with these options (the mask first)."""
    stem = out / f"{case.name}_liver"
    files = [stem.with_name(stem.name + ".nii.gz")] if "nifti" in output_types else []
    if "dicom_seg" in output_types:
        files.append(stem.with_name(stem.name + ".dcm"))
    files.append(stem.with_name(stem.name + ".json"))
    if preview:
        files.append(stem.with_name(stem.name + ".png"))
    if save_probabilities:
        files.append(stem.with_name(stem.name + "_probabilities.nii.gz"))
    return files


def _mask_volume_ml(path: Path) -> float:
    import nibabel as nib

    img = nib.load(str(path))
    voxels = int(np.count_nonzero(np.asanyarray(img.dataobj)))
    return voxels * abs(float(np.linalg.det(np.asarray(img.affine)[:3, :3]))) / 1000.0


def finished_summary(out: Path, case: Case, output_types: Sequence[str], preview: bool = False,
                     save_probabilities: bool = False) -> dict | None:
    """The stored summary of a finished case, or ``None`` (with the reason logged) when it must run again."""
    files = expected_outputs(Path(out), case, output_types, preview, save_probabilities)
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        if len(missing) < len(files):
            logger.warning("%s: earlier outputs incomplete (%s missing): segmenting again", case.name, ", ".join(missing))
        return None
    json_file = next(f for f in files if f.suffix == ".json")
    try:
        summary = json.loads(json_file.read_text(encoding="utf-8"))
        stored = float(summary["liver_volume_ml"])
        if "nifti" in output_types:
            actual = _mask_volume_ml(files[0])
            if abs(actual - stored) > max(0.01, 1e-4 * stored):
                raise ValueError(f"its liver volume {stored:g} mL differs from the mask's {actual:.2f} mL")
    except Exception as e:  # unreadable JSON or mask, a missing key, a mismatch
        logger.warning("%s: earlier outputs do not agree (%s: %s): segmenting again", case.name, json_file.name, e)
        return None
    return summary if isinstance(summary, dict) else None
