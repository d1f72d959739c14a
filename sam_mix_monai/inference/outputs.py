"""Writing a case's mask outputs: NIfTI mask and probability on the input's grid, output type checks.

* :func:`mask_image` / :func:`write_mask`: the ``uint8`` mask; a NIfTI input's header is reused (same
  qform/sform and codes), other inputs get their affine as qform and sform;
* :func:`probability_image` / :func:`write_probabilities`: the liver probability (2 bytes per voxel);
* :func:`mask_path` and :func:`check_output_types`: where the mask goes, and whether the requested
  formats (``nifti``, ``dicom_seg``) fit the input (DICOM-SEG is written by
  :func:`sam_mix_monai.data.dicom_seg.write_dicom_seg`).

Every file is written atomically (:func:`~sam_mix_monai.utils.atomic.atomic_output`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np

from sam_mix_monai.data.io import is_nifti
from sam_mix_monai.inference.cases import Case
from sam_mix_monai.utils.atomic import atomic_output
from sam_mix_monai.utils.errors import InputError, PathLike

__all__ = ["OUTPUT_TYPES", "PROBABILITY_LEVELS", "check_output_types", "mask_image", "mask_path", "probability_image",
           "write_mask", "write_probabilities"]


def mask_image(
    mask: np.ndarray, affine: np.ndarray, reference: PathLike | nib.Nifti1Image | None = None,
    dtype: type = np.uint8, intent: str = "label", descrip: bytes = b"sam-mix liver mask",
    slope: float | None = None,
) -> nib.Nifti1Image:
    """A NIfTI image of ``mask`` on the input's grid.

    Args:
        mask: ``(X, Y, Z)`` array in the input's array order.
        affine: the input's voxel-to-RAS affine.
        reference: the input (a NIfTI file or image): its header (qform, sform, codes, units) is reused.
        dtype: stored data type.
        intent: NIfTI intent code name.
        descrip: header description.
        slope: ``scl_slope`` of the stored values (``None``: unscaled).
    """
    data = np.asarray(mask, dtype=dtype)
    header = None
    if isinstance(reference, nib.Nifti1Image):
        header = reference.header.copy()
    elif reference is not None and is_nifti(reference):
        header = nib.load(str(reference)).header.copy()
    if header is not None:
        header.set_data_dtype(dtype)
        header.set_intent(intent)
        img = nib.Nifti1Image(data, header.get_best_affine(), header=header)  # keeps the q/sform codes
    else:
        img = nib.Nifti1Image(data, np.asarray(affine, dtype=np.float64))
        img.header.set_xyzt_units("mm", "sec")
        img.set_qform(np.asarray(affine, dtype=np.float64), code=1)
        img.set_sform(np.asarray(affine, dtype=np.float64), code=1)
        img.header.set_intent(intent)
    img.header.set_slope_inter(slope, None if slope is None else 0.0)
    img.header["descrip"] = descrip
    return img


#: Stored levels of a probability NIfTI: ``uint16`` with ``scl_slope = 1 / PROBABILITY_LEVELS``.
PROBABILITY_LEVELS = 65535


def probability_image(probabilities: np.ndarray, affine: np.ndarray,
                      reference: PathLike | nib.Nifti1Image | None = None) -> nib.Nifti1Image:
    """The liver probability as a NIfTI image on the input's grid.

    NIfTI-1 has no ``float16`` data type (nibabel refuses it), so the values are stored in the same 2
    bytes per voxel as ``uint16`` with ``scl_slope = 1/65535``: readers that apply the slope (nibabel,
    SimpleITK, ITK-SNAP, 3D Slicer) get floats in [0, 1], resolved to 1.5e-5 (``float16``: 4.9e-4 near 1).
    """
    levels = np.rint(np.clip(np.asarray(probabilities, dtype=np.float32), 0, 1) * PROBABILITY_LEVELS)
    return mask_image(levels, affine, reference, np.uint16, "estimate", b"sam-mix liver probability",
                      slope=1.0 / PROBABILITY_LEVELS)


def _save(img: nib.Nifti1Image, target: PathLike) -> Path:
    target = Path(target)
    with atomic_output(target) as tmp:
        nib.save(img, str(tmp))
    return target


def write_mask(mask: np.ndarray, affine: np.ndarray, target: PathLike, reference: PathLike | None = None) -> Path:
    """Save a ``uint8`` mask as NIfTI on the input's grid, atomically (see :func:`mask_image`).

    Returns:
        The written path.
    """
    return _save(mask_image(mask, affine, reference), target)


def write_probabilities(probabilities: np.ndarray, affine: np.ndarray, target: PathLike,
                        reference: PathLike | None = None) -> Path:
    """Save the liver probability NIfTI (:func:`probability_image`) on the input's grid, atomically."""
    return _save(probability_image(probabilities, affine, reference), target)


#: Mask formats ``output_types`` may name.
OUTPUT_TYPES = ("nifti", "dicom_seg")


def mask_path(output_dir: PathLike, case: Case, output_types: Sequence[str] = ("nifti",)) -> Path:
    """Where the mask of ``case`` goes in ``output_dir``: the NIfTI, or the DICOM-SEG when it is the only type."""
    sfx = ".nii.gz" if "nifti" in output_types else ".dcm"
    return Path(output_dir) / f"{case.name}_liver{sfx}"


def check_output_types(output_types: Sequence[str], case: Case | None = None) -> tuple[str, ...]:
    """Validate ``output_types``; with ``case``, also that its input can carry a DICOM-SEG.

    Raises:
        InputError: an unknown or empty type list, or DICOM-SEG for an input that is not a DICOM series
            (a NIfTI has no source UIDs to reference: refused, no series is invented).
    """
    types = tuple(dict.fromkeys(output_types))
    bad = [t for t in types if t not in OUTPUT_TYPES]
    if bad or not types:
        raise InputError(None, f"--output-type {','.join(bad) or '(none)'}: expected nifti, dicom_seg or both")
    if case is not None and "dicom_seg" in types:
        from sam_mix_monai.data.dicom_seg import dicom_source_files

        with dicom_source_files(case.path):
            pass
    return types
