"""Real CTs for the benchmarks: the committed example and ``../shared/data/real/ircadb_*``, with reference boxes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REAL = Path(os.environ.get("SAM_MIX_REAL_DATA", ROOT.parent / "shared" / "data" / "real"))


@dataclass
class RealCT:
    """One real CT: its input path (what a user passes), reference liver mask on its grid, reference 3D box."""

    name: str
    path: Path
    reference: np.ndarray
    box: str


def reference_box(ref: np.ndarray) -> str:
    """The reference mask's tight 3D box as ``--box`` text (inclusive voxel indices)."""
    idx = [np.flatnonzero(ref.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    return ",".join(str(int(v)) for v in [*(i[0] for i in idx), *(i[-1] for i in idx)])


def load_real(name: str) -> RealCT | None:
    """``totalseg_example`` (committed), ``ircadb_07`` or ``ircadb_17`` (``../shared``); ``None`` when absent."""
    from sam_mix_monai.data.io import read_volume

    if name == "totalseg_example":
        from sam_mix_monai.experiments.real_ct import reference_on_grid

        folder = ROOT / "examples" / "totalseg_example_dicom"
        if not (folder / "dicom").is_dir():
            return None
        ref = reference_on_grid(read_volume(folder / "dicom"), folder / "liver.nii.gz") > 0
        return RealCT(name, folder / "dicom", ref, reference_box(ref))
    from sam_mix_monai.data.ircadb import read_ircadb_liver

    folder = REAL / name
    if not (folder / "PATIENT_DICOM").is_dir():
        return None
    image = read_volume(folder / "PATIENT_DICOM")
    liver, _ = read_ircadb_liver(folder / "MASKS_DICOM.zip", image)
    ref = np.asarray(liver)[0] > 0
    return RealCT(name, folder / "PATIENT_DICOM", ref, reference_box(ref))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks (1 when both are empty)."""
    a, b = a.astype(bool), b.astype(bool)
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2 * (a & b).sum() / s)
