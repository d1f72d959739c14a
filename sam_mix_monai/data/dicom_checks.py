"""Checks of a DICOM series before it is stacked into a volume.

ITK's ``ImageSeriesReader`` stacks whatever files GDCM grouped into a series: a truncated file is
silently left out of the group, and missing or unevenly spaced slices only cause a C++ warning,
while the volume gets one average spacing. A mask computed on it then lands on a wrong grid. So,
before reading:

* every file of the folder that looks like DICOM (``DICM`` magic, or a ``.dcm`` / ``.ima`` /
  ``.dicom`` / no suffix name) must belong to a series, else it is reported as unreadable;
* every file of the chosen series must have a readable header;
* all slices must share one orientation;
* slice positions (projected on the slice normal) must be distinct and evenly spaced: every gap
  within :data:`SPACING_TOLERANCE` (relative) plus :data:`SPACING_TOLERANCE_MM` of the median gap.
  A gap that is a multiple of the median is reported as missing slices.

Every problem raises :class:`~sam_mix_monai.utils.errors.InputError` naming the folder or file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from sam_mix_monai.utils.errors import InputError, PathLike

__all__ = ["SPACING_TOLERANCE", "SPACING_TOLERANCE_MM", "check_series"]

#: Allowed deviation of a slice gap from the median gap, relative to the median ...
SPACING_TOLERANCE = 0.02
#: ... plus this many millimetres (rounding of positions in the headers).
SPACING_TOLERANCE_MM = 0.01
_DICOM_SUFFIXES = {"", ".dcm", ".dicom", ".ima"}


def _looks_like_dicom(f: Path) -> bool:
    if f.suffix.lower() in _DICOM_SUFFIXES:
        return True
    try:
        with open(f, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _header(f: str):
    import SimpleITK as sitk

    r = sitk.ImageFileReader()
    r.SetFileName(f)
    try:
        r.ReadImageInformation()
    except RuntimeError as e:
        raise InputError(f, f"unreadable DICOM file ({str(e).strip().splitlines()[-1] if str(e).strip() else 'corrupt'})") from None
    return np.asarray(r.GetOrigin(), np.float64), np.asarray(r.GetDirection(), np.float64).reshape(3, 3)


def check_series(folder: PathLike, chosen: Sequence[str], grouped: Sequence[str]) -> None:
    """Check the files of a DICOM series folder.

    Args:
        folder: the folder.
        chosen: the files of the series to read (GDCM's order).
        grouped: the files of every series GDCM found in the folder.

    Raises:
        InputError: unreadable files, mixed orientations, duplicate, missing or unevenly spaced slices.
    """
    folder = Path(folder)
    known = {Path(f).resolve() for f in grouped}
    stray = sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")
                   and f.resolve() not in known and _looks_like_dicom(f))
    if stray:
        more = f" (and {len(stray) - 1} more)" if len(stray) > 1 else ""
        raise InputError(stray[0], f"unreadable DICOM file, truncated or corrupt{more}: the series in {folder} "
                                   "would be read without it")
    if len(chosen) < 2:
        return
    heads = [_header(f) for f in chosen]
    direction = heads[0][1]
    for f, (_, d) in zip(chosen, heads):
        if not np.allclose(d, direction, atol=1e-4):
            raise InputError(f, f"slice orientation differs from the rest of the series in {folder}")
    normal = direction[:, 2]
    z = np.sort(np.array([o @ normal for o, _ in heads]))
    gaps = np.diff(z)
    if (gaps < 1e-3).any():
        k = int((gaps < 1e-3).sum())
        raise InputError(folder, f"{k} slice(s) repeat the position of another slice (duplicate files in the series?)")
    med = float(np.median(gaps))
    tol = SPACING_TOLERANCE * med + SPACING_TOLERANCE_MM
    bad = np.flatnonzero(np.abs(gaps - med) > tol)
    if bad.size == 0:
        return
    i = int(bad[0])
    ratio = gaps[i] / med
    if abs(ratio - round(ratio)) * med <= tol and round(ratio) >= 2:
        missing = int(sum(round(g / med) - 1 for g in gaps[bad]))
        raise InputError(folder, f"{missing} slice(s) missing from the series: {len(chosen)} files, but the positions "
                                 f"({z[0]:.2f} to {z[-1]:.2f} mm every {med:.3g} mm) imply {len(chosen) + missing}; "
                                 f"first gap after {z[i]:.2f} mm")
    raise InputError(folder, f"uneven slice spacing: gaps from {gaps.min():.3g} to {gaps.max():.3g} mm around a median "
                             f"of {med:.3g} mm (tolerance {100 * SPACING_TOLERANCE:g}% + {SPACING_TOLERANCE_MM} mm); "
                             "resample the series to even spacing first")
