"""Source images of a DICOM-SEG, made acceptable to highdicom in memory (the files are never changed).

Real series are often anonymised or written by tools that leave attributes empty. highdicom then fails
deep inside (``KeyError: ''`` in ``copy_specimen_information`` for an empty SOP Class UID,
"Source images have no Frame Of Reference UID"). :func:`prepare_sources`:

* takes an empty SOP Class / SOP Instance UID from the file meta header (the same attributes, by
  definition: ``MediaStorageSOPClassUID`` / ``MediaStorageSOPInstanceUID``);
* gives a series without Study / Series Instance UIDs or a Frame of Reference UID generated ones,
  the same for every slice and derived from the series' content (a rerun gives the same UIDs), and
  says so in a warning: the SEG then cannot link to the series in a PACS;
* drops an empty Specific Character Set (the default repertoire, which highdicom refuses when empty)
  and adds the Type 2 attributes of a missing Patient / General Study module, empty;
* drops a Spacing Between Slices that the slice positions contradict;
* refuses, naming the attribute and suggesting ``--output-type nifti``, a series that lacks what a
  SEG's geometry needs (Image Position / Orientation (Patient), Pixel Spacing, Rows, Columns) or a
  SOP Class UID in neither place.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from sam_mix_monai.utils.errors import InputError, PathLike

__all__ = ["GEOMETRY_ATTRIBUTES", "prepare_sources"]

logger = logging.getLogger(__name__)

#: Attributes a SEG's frame geometry is built from: without them no SEG can be written.
GEOMETRY_ATTRIBUTES = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")
_SHARED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")
#: Type 2 attributes (present, may be empty) of the Patient and General Study modules highdicom copies.
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID",
          "AccessionNumber", "ReferringPhysicianName")


def _empty(ds, keyword: str) -> bool:
    return keyword not in ds or ds.data_element(keyword).value in (None, "", b"")


def prepare_sources(sources: Sequence, files: Sequence[Path], source: PathLike) -> None:
    """Fill or drop, in memory, what highdicom needs of ``sources`` (see the module docstring).

    Args:
        sources: the series' pydicom datasets, in slice order.
        files: their files (named in errors).
        source: the series folder or zip, named in errors.

    Raises:
        InputError: an attribute that is really absent, named, with ``--output-type nifti`` suggested.
    """
    from pydicom.uid import generate_uid

    hint = "a DICOM-SEG cannot be written for this series; use --output-type nifti"
    for ds, f in zip(sources, files):
        for keyword in GEOMETRY_ATTRIBUTES:
            if _empty(ds, keyword):
                raise InputError(source, f"{Path(f).name}: {keyword} is missing or empty: {hint}")
        meta = getattr(ds, "file_meta", None)
        for keyword, meta_keyword in (("SOPClassUID", "MediaStorageSOPClassUID"),
                                      ("SOPInstanceUID", "MediaStorageSOPInstanceUID")):
            if _empty(ds, keyword):
                value = getattr(meta, meta_keyword, None) if meta is not None else None
                if not value:
                    raise InputError(source, f"{Path(f).name}: {keyword} is missing or empty (also in the file meta "
                                             f"header): {hint}")
                setattr(ds, keyword, value)
        if "SpecificCharacterSet" in ds and not ds.SpecificCharacterSet:
            del ds.SpecificCharacterSet
        for keyword in _TYPE2:  # a missing Patient / Study module: present and empty, as Type 2 allows
            if keyword not in ds:
                setattr(ds, keyword, "")
    if len({str(ds.SOPInstanceUID) for ds in sources}) != len(sources):
        raise InputError(source, f"two slices share a SOP Instance UID: {hint}")
    seed = [str(ds.SOPInstanceUID) for ds in sources]
    generated = []
    for keyword in _SHARED_UIDS:
        values = {str(ds.get(keyword, "") or "") for ds in sources}
        if values == {""}:
            uid = generate_uid(entropy_srcs=[keyword, *seed])
            for ds in sources:
                setattr(ds, keyword, uid)
            generated.append(keyword)
        elif "" in values or len(values) > 1:
            raise InputError(source, f"{keyword} is missing on some slices or differs between them: {hint}")
    _drop_contradicted_spacing(sources)
    if generated:
        logger.warning("%s: the series has no %s (anonymised?): the DICOM-SEG carries generated ones and will not "
                       "link to the series in a PACS", source, ", ".join(generated))


def _drop_contradicted_spacing(sources: Sequence) -> None:
    """Remove a Spacing Between Slices that the slice positions contradict (highdicom then measures it).

    SimpleITK, for one, writes ``SpacingBetweenSlices = 1`` into 2.5 mm series; copied into the SEG
    it makes the frames an irregular volume that no reader accepts.
    """
    import numpy as np

    if len(sources) < 2 or not any("SpacingBetweenSlices" in ds for ds in sources):
        return
    iop = np.asarray([float(v) for v in sources[0].ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    z = np.sort([float(np.dot(normal, [float(v) for v in ds.ImagePositionPatient])) for ds in sources])
    measured = float(np.median(np.diff(z)))
    for ds in sources:
        if "SpacingBetweenSlices" in ds:
            try:
                stated = float(ds.SpacingBetweenSlices)
            except (TypeError, ValueError):
                stated = float("nan")
            if not abs(stated - measured) <= 0.01 * max(measured, 1e-6) + 1e-3:
                del ds.SpacingBetweenSlices
