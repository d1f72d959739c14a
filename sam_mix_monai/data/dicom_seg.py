"""DICOM Segmentation objects (DICOM-SEG): read one as a mask volume, write a liver mask as one.

Both directions use `highdicom <https://highdicom.readthedocs.io>`_ (on pydicom), the library
TotalSegmentator uses for ``-ot dicom_seg``:

* :func:`read_dicom_seg` returns the segment as a ``(1, X, Y, Z)`` ``uint8`` MetaTensor with a RAS
  affine (highdicom's ``Segmentation.get_volume``: frames sorted along the slice normal, LPS world),
  like :func:`~sam_mix_monai.data.io.read_volume` does for images;
* :func:`write_dicom_seg` writes a binary SEG that references the source series: the mask must lie on
  the grid that :func:`~sam_mix_monai.data.io.read_volume` gives the series (SimpleITK's slice order),
  so frame ``k`` of the SEG is slice ``k`` of the mask and references source image ``k`` (its SOP
  Instance UID, Frame of Reference and Series UIDs). Every source slice gets a frame, empty ones too,
  so the SEG describes the full series grid.

A NIfTI (or NRRD, MHA) input has no DICOM UIDs to reference: asking for DICOM-SEG there is refused
(:func:`dicom_source_files` raises), rather than inventing a series.
"""

from __future__ import annotations

import contextlib
import tempfile
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from monai.data import MetaTensor

from sam_mix_monai.utils.errors import InputError, PathLike

__all__ = ["LIVER_SEGMENT", "dicom_source_files", "is_dicom_seg", "read_dicom_seg", "write_dicom_seg"]

#: Label of the one segment written.
LIVER_SEGMENT = "Liver"
_SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def is_dicom_seg(path: PathLike) -> bool:
    """Whether ``path`` is a DICOM file of the Segmentation Storage SOP class."""
    import pydicom

    p = Path(path)
    if not p.is_file():
        return False
    try:
        ds = pydicom.dcmread(str(p), stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:  # not DICOM at all
        return False
    return str(getattr(ds, "SOPClassUID", "")) == _SEG_SOP_CLASS


def read_dicom_seg(path: PathLike, segment: int | None = None) -> MetaTensor:
    """Read a DICOM-SEG as a binary ``(1, X, Y, Z)`` MetaTensor (RAS affine).

    Args:
        path: the SEG file.
        segment: segment number to read (``None``: the union of all segments).

    Raises:
        InputError: not a readable DICOM-SEG, or frames that do not form a regular volume.
    """
    import highdicom as hd

    p = Path(path)
    try:
        seg = hd.seg.segread(str(p))
        numbers = None if segment is None else [int(segment)]
        vol = seg.get_volume(segment_numbers=numbers, combine_segments=True, relabel=True)
    except Exception as e:  # pydicom / highdicom raise many types
        raise InputError(p, f"cannot read DICOM-SEG ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    arr = np.asarray(vol.array)  # (slice, row, column), voxel (i, j, k) -> LPS by vol.affine
    if arr.ndim != 3:
        raise InputError(p, f"expected one 3D segment volume, got an array of shape {arr.shape}")
    # Our index order is ITK's (column, row, slice): permute the array and the affine's columns to it.
    lps = np.asarray(vol.affine, dtype=np.float64)[:, [2, 1, 0, 3]]
    data = np.ascontiguousarray(arr.transpose(2, 1, 0) > 0).astype(np.uint8)
    affine = _LPS_TO_RAS @ lps
    meta = {"filename_or_obj": str(p), "space": "RAS", "original_affine": affine.copy()}
    return MetaTensor(torch.from_numpy(data)[None], affine=torch.as_tensor(affine), meta=meta)


@contextlib.contextmanager
def dicom_source_files(source: PathLike) -> Iterator[list[Path]]:
    """The source series' files, in :func:`~sam_mix_monai.data.io.read_volume`'s slice order (a context).

    A ``.zip`` is unpacked into a temporary folder that lives while the context is open.

    Raises:
        InputError: the source is not a DICOM series (folder or zip), e.g. a NIfTI file.
    """
    import SimpleITK as sitk

    from sam_mix_monai.data.io import is_dicom_dir, volume_suffix

    src = Path(source)
    with tempfile.TemporaryDirectory(prefix="sam_mix_seg_src_") as tmp:
        folder = src
        if src.is_file() and volume_suffix(src) == ".zip":
            from sam_mix_monai.data.zip_input import extract_all

            extract_all(src, tmp)
            folder = Path(tmp)
        if not (folder.is_dir() and is_dicom_dir(folder)):
            raise InputError(src, "DICOM-SEG output needs a DICOM series input (a DICOM-SEG references the source "
                                  "images' UIDs, which a NIfTI, NRRD or MHA file does not have); use --output-type nifti")
        series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
        files = max((sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), s) for s in series), key=len)
        yield [Path(f) for f in files]


def write_dicom_seg(mask: np.ndarray, source: PathLike, target: PathLike, series_number: int = 901) -> Path:
    """Write ``mask`` as a binary liver DICOM-SEG referencing the source series, atomically.

    Args:
        mask: ``(X, Y, Z)`` mask on the grid :func:`~sam_mix_monai.data.io.read_volume` gives ``source``.
        source: the DICOM series folder (or ``.zip``) the mask was predicted on.
        target: the ``.dcm`` file to write.
        series_number: Series Number of the new SEG series.

    Returns:
        ``target``.

    Raises:
        InputError: a source that is not a DICOM series, or a mask of another shape.
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    from sam_mix_monai import __version__
    from sam_mix_monai.data.seg_sources import prepare_sources
    from sam_mix_monai.utils.atomic import atomic_output

    with dicom_source_files(source) as files:
        sources = [pydicom.dcmread(str(f)) for f in files]
        prepare_sources(sources, files, source)  # in memory only: empty UIDs, missing modules (seg_sources.py)
        rows, cols = int(sources[0].Rows), int(sources[0].Columns)
    m = np.asarray(mask)
    if m.shape != (cols, rows, len(sources)):
        raise InputError(source, f"mask shape {m.shape} does not match the series ({cols}, {rows}, {len(sources)})")
    frames = np.ascontiguousarray((m > 0).transpose(2, 1, 0)).astype(np.uint8)  # (slice, row, column)
    algorithm = hd.AlgorithmIdentificationSequence(name="sam-mix", version=__version__,
                                                   family=codes.cid7162.ArtificialIntelligence)
    description = hd.seg.SegmentDescription(
        segment_number=1, segment_label=LIVER_SEGMENT, segmented_property_category=codes.SCT.Organ,
        segmented_property_type=codes.SCT.Liver, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm)
    with warnings.catch_warnings():  # highdicom's advice on the source's patient name format
        warnings.simplefilter("ignore", UserWarning)
        seg = hd.seg.Segmentation(
            source_images=sources, pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[description], series_instance_uid=hd.UID(), series_number=series_number,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer="sam_mix_monai",
            manufacturer_model_name="SAM-Mix liver", software_versions=__version__, device_serial_number="0",
            series_description="sam-mix liver segmentation", omit_empty_frames=False)
    out = Path(target)
    with atomic_output(out) as tmp:
        seg.save_as(str(tmp))
    return out

