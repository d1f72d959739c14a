"""What the Python API (:func:`~.segmenter.segment`, :class:`~.segmenter.Segmenter`) accepts as a scan,
checked at the boundary.

Accepted: a path (``str`` / ``os.PathLike``: NIfTI, NRRD, MHA, a DICOM series folder or a zip of one),
a nibabel ``Nifti1Image``, a MONAI ``MetaTensor`` (its affine is used), or a NumPy array / torch tensor
together with ``affine=`` (a 4x4 voxel-to-RAS matrix). Anything else is a :class:`TypeError` naming
these; an array without an affine, or of the wrong shape, is a :class:`ValueError`. Before this check,
``segment(5)`` failed deep inside ``os`` / ``pathlib`` after loading the model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

__all__ = ["ACCEPTED", "check_image_input", "to_volume"]

#: The accepted scan types, as the errors name them.
ACCEPTED = ("a path (str or os.PathLike), a nibabel Nifti1Image, a MONAI MetaTensor, or a NumPy array / torch "
            "tensor with affine=<4x4 voxel-to-RAS matrix>")


def check_image_input(image: Any, affine: Any = None) -> None:
    """Raise :class:`TypeError` / :class:`ValueError` unless ``image`` (with ``affine``) is an accepted scan."""
    from monai.data import MetaTensor

    if isinstance(image, bool) or image is None:
        raise TypeError(f"image: expected {ACCEPTED}; got {image!r}")
    if isinstance(image, (str, os.PathLike)):
        if affine is not None:
            raise ValueError("affine: give it with an array only (a file carries its own)")
        return
    if isinstance(image, nib.Nifti1Image) or isinstance(image, MetaTensor):
        if affine is not None:
            raise ValueError(f"affine: give it with an array only (a {type(image).__name__} carries its own)")
        return
    if isinstance(image, (np.ndarray, torch.Tensor)):
        if affine is None:
            raise ValueError(f"image: an array of shape {tuple(image.shape)} needs affine=<4x4 voxel-to-RAS matrix> "
                             "(voxel spacing and orientation); or pass a path, Nifti1Image or MetaTensor")
        a = np.asarray(affine.cpu() if isinstance(affine, torch.Tensor) else affine)
        if a.shape != (4, 4) or not np.issubdtype(a.dtype, np.number):
            raise ValueError(f"affine: expected a 4x4 numeric matrix, got shape {a.shape}")
        shape = tuple(image.shape)
        if len(shape) == 4 and shape[0] == 1:
            shape = shape[1:]
        if len(shape) != 3:
            raise ValueError(f"image: expected a 3D array (X, Y, Z) or (1, X, Y, Z), got shape {tuple(image.shape)}")
        if not _numeric(image):
            raise ValueError(f"image: expected integer or float HU values, got dtype {image.dtype}")
        return
    raise TypeError(f"image: expected {ACCEPTED}; got a {type(image).__module__}.{type(image).__qualname__}")


def _numeric(arr: Any) -> bool:
    if isinstance(arr, torch.Tensor):
        return arr.dtype != torch.bool and not arr.is_complex()
    return arr.dtype.kind in "iuf"


def to_volume(image: Any, affine: Any = None) -> tuple[Any, str, Path | None]:
    """The checked scan as ``(MetaTensor (1, X, Y, Z), name, path or None)``.

    Raises:
        TypeError, ValueError: see :func:`check_image_input`.
        InputError: an unreadable file, bad geometry, or not a 3D volume.
    """
    from monai.data import MetaTensor

    from sam_mix_monai.data.io import check_extent, check_geometry, read_volume, volume_from_nifti
    from sam_mix_monai.inference.cases import case_name

    check_image_input(image, affine)
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        return read_volume(path), case_name(path), path
    if isinstance(image, nib.Nifti1Image):
        name = Path(image.get_filename()).name if image.get_filename() else "image"
        return volume_from_nifti(image, name), case_name(name), None
    if isinstance(image, MetaTensor):
        name = Path(str(image.meta.get("filename_or_obj") or "image")).name
        arr, aff = image.as_tensor(), np.asarray(image.affine, dtype=np.float64)
    else:
        name = "array"
        arr = torch.as_tensor(np.asarray(image)) if isinstance(image, np.ndarray) else image.detach().cpu()
        aff = np.asarray(affine.cpu() if isinstance(affine, torch.Tensor) else affine, dtype=np.float64)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3:
        raise ValueError(f"image: expected a 3D volume (X, Y, Z) or (1, X, Y, Z), got shape {tuple(arr.shape)}")
    check_geometry(aff, name)
    check_extent(tuple(arr.shape), name)
    meta = {"filename_or_obj": name, "space": "RAS", "original_affine": aff.copy()}
    return MetaTensor(arr[None].clone(), affine=torch.as_tensor(aff), meta=meta), case_name(name), None
