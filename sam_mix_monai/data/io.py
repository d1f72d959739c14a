"""Reading CT volumes and liver labels, with the checks users need.

* NIfTI (``.nii``/``.nii.gz``) is read with nibabel into a MetaTensor with its RAS
  affine, as MONAI's ``NibabelReader`` does; but MONAI's ``LoadImage`` copies the
  Fortran-ordered NIfTI array into C order, which took 3.2 s of a 512x512x500 volume
  here. Keeping nibabel's (memory-mapped) array as it is lets the slicer read only the
  axial slab it keeps.
* A DICOM series folder is read with SimpleITK's ``ImageSeriesReader``. MONAI's own
  ITK reader would need the large ``itk`` package, so the LPS->RAS affine conversion
  (a sign flip of the first two world axes) is written out here instead.
* A zipped DICOM series (``.zip``) is unpacked into a temporary folder, read as above, and
  the folder removed; NRRD and MetaImage files (``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``) are
  read with SimpleITK's ``ReadImage``, with the same LPS->RAS conversion.
* An in-memory ``nibabel.Nifti1Image`` becomes the same MetaTensor (:func:`volume_from_nifti`).

Every problem raises :class:`~sam_mix_monai.utils.errors.InputError` naming the file.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from nibabel.orientations import aff2axcodes, inv_ornt_aff, io_orientation

from sam_mix_monai.data.dicom_checks import check_series
from sam_mix_monai.utils.errors import InputError, PathLike

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: Single-file formats read through SimpleITK.
SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
#: Every single-file volume format :func:`read_volume` reads (a ``.zip`` holds a DICOM series).
VOLUME_SUFFIXES = NIFTI_SUFFIXES + SITK_SUFFIXES + (".zip",)
#: The RAS<->LPS world-axis flip (DICOM/ITK world space is LPS).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: Smallest intensity span (HU) of a CT: air (-1000) to soft tissue (about +50) is far more.
MIN_CT_CONTRAST = 100.0



def is_nifti(path: PathLike) -> bool:
    """Whether ``path`` names a NIfTI file by its suffix."""
    return str(path).endswith(NIFTI_SUFFIXES)


def is_volume_file(path: PathLike) -> bool:
    """Whether ``path`` names a volume file :func:`read_volume` reads, by its suffix (case-insensitive)."""
    return str(path).lower().endswith(VOLUME_SUFFIXES)


def volume_suffix(path: PathLike) -> str:
    """The volume suffix of ``path`` (``".nii.gz"``, ``".nrrd"``, ...), or ``""``."""
    name = str(path).lower()
    return next((s for s in sorted(VOLUME_SUFFIXES, key=len, reverse=True) if name.endswith(s)), "")


def is_dicom_dir(path: PathLike) -> bool:
    """Whether ``path`` is a folder holding at least one DICOM series."""
    import SimpleITK as sitk

    p = Path(path)
    return p.is_dir() and len(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(p))) > 0


#: What the readers accept, for error messages.
UNSUPPORTED_HINT = ".nii, .nii.gz, .nrrd, .mha, .mhd, a DICOM series folder or a .zip of one"


def _read_nifti(path: Path) -> MetaTensor:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = nib.load(str(path))
            arr = np.asanyarray(img.dataobj)  # applies scl_slope/inter; memory-mapped for .nii
            # Touch the last voxel now so that a truncated file fails here, with the file named.
            _ = arr.reshape(-1, order="A")[-1] if arr.size else None
    except Exception as e:  # nibabel/gzip/zlib raise many different types
        raise InputError(path, f"cannot read NIfTI: corrupt or truncated file ({type(e).__name__}: {e})") from None
    if arr.dtype.byteorder not in ("=", "|") or arr.dtype == np.float16:
        arr = arr.astype(arr.dtype.newbyteorder("=") if arr.dtype != np.float16 else np.float32)
    if arr.dtype == np.uint16:  # torch has no uint16 arithmetic on CPU
        arr = arr.astype(np.int32)
    affine = np.asarray(img.affine, dtype=np.float64)
    meta = {"filename_or_obj": str(path), "space": "RAS", "original_affine": affine.copy()}
    return MetaTensor(torch.from_numpy(np.asarray(arr))[None], affine=torch.as_tensor(affine), meta=meta)


def _read_dicom_series(path: Path) -> MetaTensor:
    import SimpleITK as sitk

    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path))
    if not series:
        raise InputError(path, "no DICOM series found in folder")
    files = [sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), s) for s in series]
    chosen = max(files, key=len)
    if len(series) > 1:
        logger.warning("%s: %d DICOM series found, using the largest (%d files)", path, len(series), len(chosen))
    check_series(path, chosen, [f for group in files for f in group])
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(chosen)
    try:
        image = reader.Execute()
    except RuntimeError as e:
        raise InputError(path, f"cannot read DICOM series ({str(e).strip().splitlines()[-1]})") from None
    return _from_sitk(image, path)


def _from_sitk(image, path: Path) -> MetaTensor:
    """A SimpleITK image (LPS world) as a ``(1, X, Y, Z)`` MetaTensor with a RAS affine."""
    import SimpleITK as sitk

    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(path, f"expected a 3D single-channel volume, got a {image.GetDimension()}D image "
                               f"with {image.GetNumberOfComponentsPerPixel()} component(s)")
    arr = sitk.GetArrayFromImage(image)  # (z, y, x)
    arr = np.ascontiguousarray(np.transpose(arr, (2, 1, 0)))  # (x, y, z), index order of ITK
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction @ np.diag(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    affine = LPS_TO_RAS @ lps
    meta = {"filename_or_obj": str(path), "space": "RAS", "original_affine": affine.copy()}
    return MetaTensor(torch.from_numpy(arr)[None], affine=torch.as_tensor(affine), meta=meta)


def _read_sitk_file(path: Path) -> MetaTensor:
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise InputError(path, f"cannot read image: corrupt or unsupported file ({str(e).strip().splitlines()[-1]})") from None
    return _from_sitk(image, path)


def _quiet_is_dicom_dir(folder: PathLike) -> bool:
    """:func:`is_dicom_dir` without GDCM's "No Series were found" warning on stderr."""
    import SimpleITK as sitk

    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        return is_dicom_dir(folder)
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def _read_dicom_zip(path: Path) -> MetaTensor:
    import tempfile

    from sam_mix_monai.data.zip_input import extract_all

    with tempfile.TemporaryDirectory(prefix="sam_mix_dicom_zip_") as tmp:
        extract_all(path, tmp)  # capped, flat: no member can escape the folder (data/zip_input.py)
        if not _quiet_is_dicom_dir(tmp):
            raise InputError(path, "no DICOM series found in the zip file")
        try:
            vol = _read_dicom_series(Path(tmp))
        except InputError as e:  # the temporary folder means nothing to the user: name the zip
            raise InputError(path, e.problem) from None
    vol.meta["filename_or_obj"] = str(path)
    return vol


def volume_from_nifti(image: nib.Nifti1Image, name: str = "<Nifti1Image>") -> MetaTensor:
    """An in-memory NIfTI image as the ``(1, X, Y, Z)`` MetaTensor :func:`read_volume` returns.

    Raises:
        InputError: (named ``name``) when it is not a 3D volume.
    """
    arr = np.asanyarray(image.dataobj)
    while arr.ndim > 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise InputError(name, f"expected a 3D volume, got an image of shape {arr.shape}")
    if arr.dtype.byteorder not in ("=", "|") or arr.dtype == np.float16 or arr.dtype == np.uint16:
        arr = arr.astype(np.float32 if arr.dtype.kind == "f" else np.int32)
    affine = np.asarray(image.affine, dtype=np.float64)
    check_geometry(affine, name)
    check_extent(tuple(arr.shape), name)
    meta = {"filename_or_obj": name, "space": "RAS", "original_affine": affine.copy()}
    return MetaTensor(torch.from_numpy(np.asarray(arr))[None], affine=torch.as_tensor(affine), meta=meta)


def read_volume(path: PathLike) -> MetaTensor:
    """Read a CT image or label as a channel-first ``(1, X, Y, Z)`` MetaTensor with a RAS affine.

    Args:
        path: a NIfTI, NRRD or MetaImage file, a folder with a DICOM series, or a ``.zip`` of one.

    Raises:
        InputError: missing/unreadable file, or not a 3D volume.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(p, "file not found")
    if p.is_dir():
        vol = _read_dicom_series(p)
    elif is_nifti(p):
        vol = _read_nifti(p)
    elif volume_suffix(p) == ".zip":
        vol = _read_dicom_zip(p)
    elif volume_suffix(p):
        vol = _read_sitk_file(p)
    else:
        raise InputError(p, f"unsupported file type (expected {UNSUPPORTED_HINT})")
    check_geometry(vol.affine, p)
    # Accept trailing singleton dimensions (X, Y, Z, 1), reject real 2D or 4D data.
    while vol.ndim > 4 and vol.shape[-1] == 1:
        vol = vol[..., 0]
    if vol.ndim != 4 or vol.shape[0] != 1:
        shape = tuple(vol.shape[1:]) if vol.shape[0] == 1 else tuple(vol.shape)
        raise InputError(p, f"expected a 3D volume, got an image of shape {shape}")
    check_extent(tuple(vol.shape[1:]), p)
    return vol


def check_extent(shape: tuple[int, ...], path: PathLike) -> None:
    """Refuse a volume with a single voxel along some axis (one slice, one row or one column).

    Raises:
        InputError: naming ``path``, the shape and the axis.
    """
    if shape[2] < 2 and min(shape) < 2:
        raise InputError(path, f"expected a 3D volume, got a single slice of shape {shape}")
    thin = [a for a in range(3) if shape[a] < 2]
    if thin:
        raise InputError(path, f"expected a 3D volume, got shape {shape}: a single voxel along array axis {thin[0]} "
                               "(a single row or column of voxels, not a CT volume)")


def check_geometry(affine: np.ndarray | torch.Tensor, path: PathLike) -> None:
    """Reject a voxel-to-world affine that no grid can have.

    Required: finite values, a non-zero spacing along each array axis, and a 3x3 part of full rank
    (the voxel axes span 3D space; tested on the column-normalised matrix, so that fine voxels pass).

    Raises:
        InputError: naming the file and what is wrong with its affine.
    """
    a = np.asarray(affine, dtype=np.float64)
    what = "the header's voxel-to-world affine (NIfTI sform/qform, DICOM position/orientation/spacing)"
    if a.shape != (4, 4) or not np.isfinite(a).all():
        raise InputError(path, f"{what} holds NaN or infinite values")
    spacing = voxel_spacing(a)
    zero = [i for i in range(3) if spacing[i] < 1e-6]
    if zero:
        raise InputError(path, f"{what} gives zero voxel spacing along array axis {zero[0]} (spacing {np.round(spacing, 6).tolist()} mm)")
    if abs(np.linalg.det(a[:3, :3] / spacing)) < 1e-6:
        raise InputError(path, f"{what} is degenerate: its voxel axes do not span 3D space (rank-deficient 3x3 part)")


def value_range(vol: MetaTensor | torch.Tensor | np.ndarray) -> tuple[float, float]:
    """Minimum and maximum voxel value; NaN when any voxel is NaN.

    NIfTI data is Fortran-ordered: numpy reduces it in memory order, where torch's
    strided reduction took 2.4 s per pass on a 512x512x500 volume here.
    """
    t = vol.as_tensor() if isinstance(vol, MetaTensor) else vol
    arr = t.numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
    flat = arr.ravel(order="K") if (arr.flags.c_contiguous or arr.flags.f_contiguous) else arr
    return float(np.min(flat)), float(np.max(flat))


def check_ct_values(vol: MetaTensor, path: PathLike) -> None:
    """Reject NaN/inf voxels and intensities that cannot be CT in HU.

    Args:
        vol: the image as read by :func:`read_volume`.
        path: its file, for the error message.

    Raises:
        InputError: when the values are not finite or not in a CT range.
    """
    lo, hi = value_range(vol)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise InputError(path, "image contains NaN or infinite voxels")
    # CT in HU: air is about -1000; scanners store -1024 or lower padding (down to -3024).
    # Any abdominal CT holds fat (about -100 HU) or air; MR and unscaled data do not.
    if lo < -4000 or hi > 40000 or lo > -200:
        raise InputError(
            path, f"intensity range [{lo:g}, {hi:g}] does not look like CT in Hounsfield units (air should be near -1000)"
        )
    if hi - lo < MIN_CT_CONTRAST:
        raise InputError(path, f"intensity range [{lo:g}, {hi:g}] spans under {MIN_CT_CONTRAST:g} HU: a blank or "
                               "constant image, not an abdominal CT (which holds air, fat and soft tissue)")


def check_label_values(vol: MetaTensor, path: PathLike, allowed: tuple[int, ...] = (0, 1, 2)) -> None:
    """Reject labels with values outside ``allowed`` (LiTS: 0 background, 1 liver, 2 tumour).

    Raises:
        InputError: naming the offending values.
    """
    lo, hi = value_range(vol)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise InputError(path, "label contains NaN or infinite voxels")
    t = vol.as_tensor() if isinstance(vol, MetaTensor) else torch.as_tensor(vol)
    if t.is_floating_point() and not bool((t == t.round()).all()):
        raise InputError(path, "label has non-integer values")
    if lo < min(allowed) or hi > max(allowed):
        bad = torch.unique(t[(t < min(allowed)) | (t > max(allowed))])[:5].tolist()
        bad = [int(b) if float(b).is_integer() else b for b in bad]
        raise InputError(path, f"label values {bad} outside the allowed set {sorted(allowed)}")


def canonical_geometry(affine: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, tuple[int, ...]]:
    """The affine and shape a volume has after reorientation to RAS (no data touched).

    Args:
        affine: a 4x4 voxel-to-RAS-world affine.
        shape: the spatial shape ``(X, Y, Z)``.
    """
    ornt = io_orientation(affine)
    new_affine = affine @ inv_ornt_aff(ornt, shape)
    new_shape = tuple(int(shape[int(a)]) for a in ornt[:, 0].argsort())
    return new_affine, new_shape


def check_same_grid(image: MetaTensor, label: MetaTensor, image_path: PathLike, label_path: PathLike) -> None:
    """Require the label to lie on the image's voxel grid, in physical space.

    Header orientations may differ (e.g. DICOM LPS against a NIfTI mask in LAS):
    both grids are compared after canonicalisation to RAS.

    Raises:
        InputError: naming the label file and the disagreement.
    """
    ia, ishape = canonical_geometry(np.asarray(image.affine, dtype=np.float64), tuple(image.shape[1:]))
    la, lshape = canonical_geometry(np.asarray(label.affine, dtype=np.float64), tuple(label.shape[1:]))
    if ishape != lshape:
        raise InputError(label_path, f"label shape {lshape} does not match image shape {ishape} (in RAS order) of {image_path}")
    tol = 1e-3 * float(np.abs(ia[:3, :3]).max()) + 1e-2  # mm
    if not np.allclose(ia, la, atol=tol):
        codes_i, codes_l = "".join(aff2axcodes(image.affine)), "".join(aff2axcodes(label.affine))
        dmax = float(np.abs(ia - la).max())
        raise InputError(
            label_path,
            f"label geometry does not match image {image_path} (orientations {codes_l} vs {codes_i}, "
            f"affines differ by up to {dmax:.3g} mm after canonicalisation)",
        )


def voxel_spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel spacing (mm) along each array axis of a 4x4 affine."""
    return np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(0))


class LoadVolumed:
    """Dictionary transform: ``d[key]`` (a path) -> the ``(1, X, Y, Z)`` MetaTensor of :func:`read_volume`.

    What the bundle's ``preprocessing`` names, so that MONAI Label and ``monai.bundle`` read every input
    format the CLI reads (NIfTI, NRRD, MHA, DICOM series folders and zips) with the same RAS affine; with
    ``check_ct`` the CT checks of :func:`check_ct_values` run too. MONAI's ``LoadImaged`` with its ITK
    reader would need the ``itk`` package, which this project does not depend on.

    Args:
        keys: the keys to load.
        check_ct: also reject images that are not CT in HU.
    """

    def __init__(self, keys: str | tuple[str, ...] | list[str], check_ct: bool = True) -> None:
        self.keys = (keys,) if isinstance(keys, str) else tuple(keys)
        self.check_ct = bool(check_ct)

    def __call__(self, data: dict) -> dict:
        out = dict(data)
        for key in self.keys:
            vol = read_volume(out[key])
            if self.check_ct:
                check_ct_values(vol, out[key])
            out[key] = vol
        return out
