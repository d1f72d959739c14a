"""Writing phantom cases in the public dataset layouts (LiTS, TotalSegmentator).

* ``lits``: ``<out>/volume-<i>.nii`` (int16 HU) and ``<out>/segmentation-<i>.nii``
  (uint8: 0 background, 1 liver, 2 lesion), uncompressed like the LiTS download.
* ``totalseg``: ``<out>/s<iiii>/ct.nii.gz`` (int16 HU) and
  ``<out>/s<iiii>/segmentations/liver.nii.gz`` (uint8 0/1, lesions belong to the liver).

Every file is written to a temporary name beside its target and renamed when complete.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from sam_mix_monai.data.phantom.volume import PhantomCase
from sam_mix_monai.utils.atomic import atomic_output
from sam_mix_monai.utils.errors import InputError, PathLike

LAYOUTS = ("lits", "totalseg")


def check_layout(layout: str) -> str:
    """Validate a layout name.

    Args:
        layout: ``"lits"`` or ``"totalseg"``.

    Returns:
        The layout name.

    Raises:
        InputError: for an unknown layout.
    """
    if layout not in LAYOUTS:
        raise InputError(None, f"unknown layout {layout!r} (choose from {', '.join(LAYOUTS)})")
    return layout


def case_paths(out_dir: PathLike, layout: str, case_id: int) -> tuple[Path, Path]:
    """Image and label paths of one case.

    Args:
        out_dir: output folder.
        layout: ``"lits"`` or ``"totalseg"``.
        case_id: case number.

    Returns:
        ``(image_path, label_path)``.
    """
    out = Path(out_dir)
    if check_layout(layout) == "lits":
        return out / f"volume-{case_id}.nii", out / f"segmentation-{case_id}.nii"
    subj = out / f"s{case_id:04d}"
    return subj / "ct.nii.gz", subj / "segmentations" / "liver.nii.gz"


def to_nifti(data: np.ndarray, affine: np.ndarray, dtype) -> nib.Nifti1Image:
    """A NIfTI-1 image with the same qform and sform (scanner-anatomical code), in mm.

    Args:
        data: voxel array (already of ``dtype``).
        affine: voxel-to-world matrix.
        dtype: on-disk data type.

    Returns:
        The image.
    """
    img = nib.Nifti1Image(np.asarray(data, dtype=dtype), affine)
    img.header.set_data_dtype(dtype)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return img


def save_atomic(img: nib.Nifti1Image, target: Path) -> None:
    """Save ``img`` to ``target`` through a temporary file renamed on success."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(target) as tmp:
        nib.save(img, str(tmp))


def write_case(case: PhantomCase, out_dir: PathLike, layout: str, case_id: int) -> dict:
    """Write one case's image and label in ``layout``.

    Args:
        case: the generated case (label values already follow ``layout``).
        out_dir: output folder.
        layout: ``"lits"`` or ``"totalseg"``.
        case_id: case number (file id).

    Returns:
        ``{"image": relative path, "label": relative path}``.
    """
    image_path, label_path = case_paths(out_dir, layout, case_id)
    label = case.label if layout == "lits" else np.minimum(case.label, 1)
    save_atomic(to_nifti(case.image, case.affine, np.int16), image_path)
    save_atomic(to_nifti(label, case.affine, np.uint8), label_path)
    root = Path(out_dir)
    return {"image": image_path.relative_to(root).as_posix(), "label": label_path.relative_to(root).as_posix()}
