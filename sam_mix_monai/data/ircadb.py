"""Reading 3D-IRCADb-01 patients: a CT DICOM series and one DICOM mask series per structure.

The layout of the public download (www.ircad.fr/research/3d-ircadb-01), per patient::

    3Dircadb1.N/
        PATIENT_DICOM/image_0 ... image_K      (or PATIENT_DICOM.zip) CT slices, no file extension
        MASKS_DICOM.zip                        (or an unpacked MASKS_DICOM/)
            MASKS_DICOM/liver/image_0 ...      one series per structure, 0/255 uint8
            MASKS_DICOM/livertumor01/...       (some patients), merged into the liver
            MASKS_DICOM/bone/, leftlung/, ...  other structures

* Geometry comes from the DICOM tags (pixel spacing, slice positions, orientation) through
  SimpleITK, as for any DICOM series (:func:`~sam_mix_monai.data.io.read_volume`). These files have
  no real patient position: the origin is 0 (IPP x, y = 0), which is kept as it is.
* Every mask series is checked against the CT grid (:func:`~sam_mix_monai.data.io.check_same_grid`):
  shape, spacing, orientation and slice positions must agree.
* The liver label is ``liver`` united with every ``livertumor*`` series. Other names are not merged:
  in patient 7 the series ``tumor`` (684k voxels) overlaps the liver by 230 voxels only.
* Zipped series are unpacked one structure at a time into a temporary folder (SimpleITK reads
  files, not zip members); nothing is written next to the input.

The data is CC BY-NC-ND 4.0: never commit a copy, conversion or crop of it.
"""

from __future__ import annotations

import fnmatch
import re
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np
import torch
from monai.data import MetaTensor

from sam_mix_monai.data.io import check_ct_values, check_same_grid, read_volume, voxel_spacing
from sam_mix_monai.data.zip_input import extract_members, safe_members
from sam_mix_monai.utils.errors import InputError, PathLike

__all__ = [
    "IrcadbPatient",
    "LIVER_STRUCTURES",
    "find_ircadb_patients",
    "is_ircadb_patient",
    "ircadb_structures",
    "read_ircadb_liver",
    "read_ircadb_patient",
    "read_ircadb_structure",
    "series_source",
]

#: Mask series (shell patterns, case-insensitive) whose union is the liver label.
LIVER_STRUCTURES = ("liver", "livertumor*")
_PATIENT_NAME = re.compile(r"^3dircadb1\.(\d+)$", re.IGNORECASE)


def series_source(patient: Path, name: str) -> Path | None:
    """The folder ``patient/name`` or, failing that, the zip ``patient/name.zip``; ``None`` if neither."""
    if (patient / name).is_dir():
        return patient / name
    if (patient / f"{name}.zip").is_file():
        return patient / f"{name}.zip"
    return None


def is_ircadb_patient(path: PathLike) -> bool:
    """Whether ``path`` is a patient folder: it holds ``PATIENT_DICOM`` and ``MASKS_DICOM`` (folder or zip)."""
    p = Path(path)
    return p.is_dir() and series_source(p, "PATIENT_DICOM") is not None and series_source(p, "MASKS_DICOM") is not None


def _patient_key(p: Path) -> tuple[int, str]:
    m = _PATIENT_NAME.match(p.name)
    return (int(m.group(1)), p.name) if m else (1 << 30, p.name)


def find_ircadb_patients(root: PathLike) -> list[Path]:
    """Patient folders: ``root`` itself when it is one, else every patient folder below it, by number N."""
    root = Path(root)
    if is_ircadb_patient(root):
        return [root]
    found = {p.parent for p in root.rglob("PATIENT_DICOM*") if p.name in ("PATIENT_DICOM", "PATIENT_DICOM.zip")}
    return sorted((p for p in found if is_ircadb_patient(p)), key=_patient_key)


def _open_zip(path: Path) -> zipfile.ZipFile:
    from sam_mix_monai.data.zip_input import open_zip

    return open_zip(path)


def _zip_series(zf: zipfile.ZipFile) -> dict[str, list[zipfile.ZipInfo]]:
    """Files of a zip grouped by the name of their folder (the structure, or PATIENT_DICOM)."""
    groups: dict[str, list[zipfile.ZipInfo]] = {}
    for info in zf.infolist():
        parts = PurePosixPath(info.filename)
        if info.is_dir() or parts.name.startswith(".") or "__MACOSX" in parts.parts:
            continue
        groups.setdefault(parts.parent.name, []).append(info)
    return groups


def ircadb_structures(masks: PathLike) -> list[str]:
    """Names of the mask series in ``MASKS_DICOM/`` or ``MASKS_DICOM.zip``, sorted."""
    masks = Path(masks)
    if masks.is_dir():
        return sorted(p.name for p in masks.iterdir() if p.is_dir() and not p.name.startswith("."))
    with _open_zip(masks) as zf:
        return sorted(k for k in _zip_series(zf) if k and k != "MASKS_DICOM")


@contextmanager
def _series_folder(source: Path, group: str | None) -> Iterator[Path]:
    """A folder holding one DICOM series: ``source/group`` (or ``source``), or its zip members unpacked."""
    if source.is_dir():
        yield source / group if group else source
        return
    with _open_zip(source) as zf:
        groups = _zip_series(zf)
        key = group if group else max(groups, key=lambda k: len(groups[k]), default=None)
        if key not in groups:
            raise InputError(source, f"no series {group or ''!r} in the archive")
        safe_members(zf, source)  # caps and member names (data/zip_input.py)
        with tempfile.TemporaryDirectory(prefix="ircadb-") as tmp:
            # Written under our own names: member paths from the archive are never used as paths.
            extract_members(zf, groups[key], tmp, source, names=[f"{i:05d}" for i in range(len(groups[key]))])
            yield Path(tmp)


def _read_series(source: Path, group: str | None, shown: Path) -> MetaTensor:
    with _series_folder(source, group) as folder:
        try:
            vol = read_volume(folder)
        except InputError as e:
            raise InputError(shown, e.problem) from None
    vol.meta["filename_or_obj"] = str(shown)
    return vol


def read_ircadb_structure(patient: PathLike, name: str, like: MetaTensor | None = None) -> MetaTensor:
    """One mask series of a patient as a ``(1, X, Y, Z)`` uint8 0/1 MetaTensor (RAS affine).

    Args:
        patient: the patient folder.
        name: the structure, e.g. ``"liver"``, ``"bone"``, ``"rightlung"``.
        like: the CT; when given, the mask must lie on its grid.

    Raises:
        InputError: missing series, unreadable files, or a grid that differs from ``like``'s.
    """
    patient = Path(patient)
    masks = series_source(patient, "MASKS_DICOM")
    if masks is None:
        raise InputError(patient, "no MASKS_DICOM folder or MASKS_DICOM.zip")
    shown = masks / name
    if masks.is_dir() and not (masks / name).is_dir():
        raise InputError(shown, "mask series not found")
    vol = _read_series(masks, name, shown)
    if like is not None:
        check_same_grid(like, vol, like.meta.get("filename_or_obj", patient), shown)
    return _like(vol, (vol.as_tensor() > 0).to(torch.uint8))


def _like(vol: MetaTensor, arr: torch.Tensor) -> MetaTensor:
    """``arr`` with ``vol``'s affine and metadata."""
    return MetaTensor(arr, affine=vol.affine, meta={k: v for k, v in vol.meta.items() if k != "affine"})


def read_ircadb_liver(masks: PathLike, image: MetaTensor) -> tuple[MetaTensor, tuple[str, ...]]:
    """The liver label (``liver`` united with ``livertumor*``) on ``image``'s grid.

    Args:
        masks: ``MASKS_DICOM/`` or ``MASKS_DICOM.zip``.
        image: the patient's CT, as read by :func:`read_ircadb_patient`.

    Returns:
        The ``(1, X, Y, Z)`` uint8 0/1 label and the names of the merged series.

    Raises:
        InputError: no ``liver`` series, or a mask not on the image grid.
    """
    masks = Path(masks)
    names = ircadb_structures(masks)
    merged = tuple(n for n in names if any(fnmatch.fnmatch(n.lower(), pat) for pat in LIVER_STRUCTURES))
    if not any(n.lower() == "liver" for n in merged):
        raise InputError(masks, f"no 'liver' mask series (found: {', '.join(names) or 'none'})")
    label: MetaTensor | None = None
    for n in merged:
        m = read_ircadb_structure(masks.parent, n, like=image)
        label = m if label is None else _like(label, torch.maximum(label.as_tensor(), m.as_tensor()))
    assert label is not None
    label.meta["filename_or_obj"] = str(masks)
    return label, merged


@dataclass(frozen=True)
class IrcadbPatient:
    """One 3D-IRCADb patient: CT in HU and liver label on the same grid.

    Attributes:
        case_id: the patient folder's name (e.g. ``3Dircadb1.7``).
        image: ``(1, X, Y, Z)`` CT in HU, with its RAS affine (from the DICOM tags, origin 0).
        liver: ``(1, X, Y, Z)`` uint8 0/1 liver label on the image grid.
        structures: the mask series merged into ``liver``.
    """

    case_id: str
    image: MetaTensor
    liver: MetaTensor
    structures: tuple[str, ...]

    @property
    def affine(self) -> np.ndarray:
        """The 4x4 voxel-to-RAS affine (mm) of the grid."""
        return np.asarray(self.image.affine, dtype=np.float64)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel spacing (mm) along the array axes ``(X, Y, Z)``."""
        return tuple(float(s) for s in voxel_spacing(self.affine))  # type: ignore[return-value]


def read_ircadb_image(source: PathLike) -> MetaTensor:
    """The CT of ``PATIENT_DICOM/`` or ``PATIENT_DICOM.zip``, checked to be in HU."""
    source = Path(source)
    vol = _read_series(source, None, source)
    check_ct_values(vol, source)
    return vol


def read_ircadb_patient(path: PathLike) -> IrcadbPatient:
    """Read one patient folder (``3Dircadb1.N/`` or a folder with the same content, e.g. ``ircadb_07/``).

    Args:
        path: the patient folder with ``PATIENT_DICOM`` and ``MASKS_DICOM`` (folders or zips).

    Returns:
        The CT, the liver label and the merged structure names.

    Raises:
        InputError: missing parts, unreadable DICOM, a non-CT image or masks off the image grid.
    """
    p = Path(path)
    if not p.is_dir():
        raise InputError(p, "patient folder not found")
    image_src, masks_src = series_source(p, "PATIENT_DICOM"), series_source(p, "MASKS_DICOM")
    if image_src is None or masks_src is None:
        missing = "PATIENT_DICOM" if image_src is None else "MASKS_DICOM"
        raise InputError(p, f"not a 3D-IRCADb patient folder: no {missing}/ or {missing}.zip")
    image = read_ircadb_image(image_src)
    liver, merged = read_ircadb_liver(masks_src, image)
    return IrcadbPatient(case_id=p.name, image=image, liver=liver, structures=merged)
