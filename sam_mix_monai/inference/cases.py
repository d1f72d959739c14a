"""Finding the CT cases to segment from the command-line inputs.

Each input is one of:

* a volume file (NIfTI ``.nii`` / ``.nii.gz``, ``.nrrd``, ``.mha``, ``.mhd``, or a ``.zip`` of a DICOM
  series): one case named after the file (``volume-3.nii`` -> ``volume-3``);
* a DICOM series folder: one case named after the folder;
* a folder of cases: every volume file in it, every sub-folder holding a DICOM series, and every
  TotalSegmentator-style sub-folder ``<name>/ct.nii.gz`` (case ``<name>``). Label files are skipped
  (``segmentation-*`` of LiTS, ``<case>_liver*.nii.gz`` written by ``sam-mix infer``: only beside its
  ``<case>_liver.json``), each named in an info line with the reason (:func:`skip_reason`).

Case names are made unique with a numeric suffix when two inputs share one.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from sam_mix_monai.data.io import UNSUPPORTED_HINT, is_dicom_dir, is_volume_file, volume_suffix
from sam_mix_monai.utils.errors import InputError, PathLike

__all__ = ["Case", "find_cases", "case_name", "skip_reason"]

logger = logging.getLogger(__name__)

_OUTPUT = re.compile(r"^(.*)_liver(?:_probabilities)?\.(?:nii(?:\.gz)?|dcm)$")
_TOTALSEG_CT = ("ct.nii.gz", "ct.nii")
_NOT_DICOM = {".json", ".png", ".txt", ".md", ".csv", ".h5", ".pt", ".yaml"}


@dataclass(frozen=True)
class Case:
    """One volume to segment.

    Attributes:
        name: output name stem (``<name>_liver.nii.gz``).
        path: NIfTI file or DICOM series folder.
    """

    name: str
    path: Path


def case_name(path: PathLike) -> str:
    """Case name of a NIfTI file (suffix removed) or folder."""
    p = Path(path)
    if p.name in _TOTALSEG_CT:
        return p.parent.name
    sfx = volume_suffix(p.name) if p.is_file() or not p.exists() else ""
    return p.name[: -len(sfx)] if sfx else p.name


def _sort_key(p: Path) -> list:
    # natural order: volume-2 before volume-10
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def _may_hold_dicom(folder: Path) -> bool:
    """Whether a folder has files other than NIfTI / our outputs (asking GDCM costs a warning otherwise)."""
    return any(f.is_file() and not is_volume_file(f) and f.suffix not in _NOT_DICOM for f in folder.iterdir())


def _is_series(folder: Path) -> bool:
    if not _may_hold_dicom(folder):
        return False
    import SimpleITK as sitk

    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # "No Series were found" for plain folders
    try:
        return is_dicom_dir(folder)
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def skip_reason(entry: Path) -> str | None:
    """Why a file of a folder of cases is not a case (``None``: it is one, or a folder to look into).

    ``<case>_liver.nii.gz`` counts as an output of ``sam-mix infer`` only beside its
    ``<case>_liver.json``; a CT that merely has such a name is a case.
    """
    name = entry.name
    if entry.is_dir():
        return None
    if not is_volume_file(entry):
        return "not a volume file"
    if re.match(r"^segmentation[-_]", name):
        return "a LiTS label (segmentation-*)"
    if ".part." in name:
        return "a temporary file of an unfinished write"
    m = _OUTPUT.match(name)
    if m and (entry.parent / f"{m.group(1)}_liver.json").is_file():
        return f"an output of sam-mix infer (beside {m.group(1)}_liver.json)"
    return None


def _scan_folder(folder: Path) -> list[Path]:
    found: list[Path] = []
    for entry in sorted(folder.iterdir(), key=_sort_key):
        if entry.name.startswith("."):
            continue
        reason = skip_reason(entry)
        if reason is not None:
            logger.info("%s: skipped, %s", entry, reason)
        elif entry.is_file():
            found.append(entry)
        else:
            ct = next((entry / n for n in _TOTALSEG_CT if (entry / n).is_file()), None)
            if ct is not None:
                found.append(ct)
            elif _is_series(entry):
                found.append(entry)
            else:
                logger.info("%s: skipped, a folder with no DICOM series and no ct.nii.gz", entry)
    return found


def find_cases(inputs: Sequence[PathLike]) -> list[Case]:
    """Expand the inputs into cases.

    Args:
        inputs: NIfTI files, DICOM series folders, or folders of cases.

    Returns:
        The cases, in input order (folders: natural name order).

    Raises:
        InputError: an input that does not exist, an unsupported file, or a folder with no case.
    """
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if not p.exists():
            raise InputError(p, "input not found")
        if p.is_file():
            if not is_volume_file(p):
                raise InputError(p, f"unsupported file type (expected {UNSUPPORTED_HINT})")
            paths.append(p)
        elif _is_series(p):
            paths.append(p)
        else:
            found = _scan_folder(p)
            if not found:
                raise InputError(p, "no volume file (NIfTI, NRRD, MHA, zipped DICOM), DICOM series or <case>/ct.nii.gz found in folder")
            paths.extend(found)
    cases: list[Case] = []
    used: dict[str, int] = {}
    for p in paths:
        name = case_name(p)
        n = used.get(name, 0)
        used[name] = n + 1
        cases.append(Case(name if n == 0 else f"{name}_{n + 1}", p))
    return cases
