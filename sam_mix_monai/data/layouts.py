"""Finding cases in the public dataset layouts and pairing images with labels by case id.

* ``lits``: ``volume-<N>.nii[.gz]`` with ``segmentation-<N>.nii[.gz]`` anywhere below the
  input folder (the LiTS download has "Training Batch 1/2" sub-folders); labels 0/1/2.
  An image may also be a DICOM series folder named ``volume-<N>``.
* ``totalseg``: ``<subject>/ct.nii.gz`` (or a DICOM folder ``<subject>/ct``) with
  ``<subject>/segmentations/liver.nii.gz``; labels 0/1.
* ``msd``: the Medical Segmentation Decathlon / nnU-Net raw layout: ``dataset.json``, ``imagesTr/`` and
  ``labelsTr/`` (MSD Task03_Liver: ``imagesTr/liver_7.nii.gz`` + ``labelsTr/liver_7.nii.gz``, labels 0/1/2;
  nnU-Net v2: ``imagesTr/<case>_0000<file_ending>`` + ``labelsTr/<case><file_ending>``). The ``_0000``
  channel suffix is handled (other channels are not used), ``dataset.json`` must exist (validated by
  :mod:`.msd_schema`: the liver label by name, the ``training`` list when present) and name channel 0
  CT when it names channels, and macOS ``._*`` files (in the MSD archives) are skipped.

Images and labels are paired by case id, never by listing order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

from sam_mix_monai.data.msd_schema import liver_label_values, read_dataset_json
from sam_mix_monai.utils.errors import InputError, PathLike

FORMATS = ("lits", "totalseg", "ircadb", "msd")
_LITS_IMAGE = re.compile(r"^volume-(\d+)(\.nii|\.nii\.gz)?$")
_LITS_LABEL = re.compile(r"^segmentation-(\d+)\.nii(\.gz)?$")


@dataclass(frozen=True)
class CaseFiles:
    """One case: its id, its image (NIfTI file or DICOM folder) and its label file."""

    case_id: str
    image: Path
    label: Path  # for ircadb: the MASKS_DICOM folder or zip
    liver_values: tuple[int, ...] | None = None  # msd: label values that are liver (None: any > 0)
    label_values: tuple[int, ...] | None = None  # msd: the label values dataset.json declares



def _check_paired(images: dict[str, Path], labels: dict[str, Path], no_label: Callable[[str], str],
                  no_image: Callable[[str], str]) -> None:
    """Raise :class:`InputError` on the first image without a label, or label without an image (by case key)."""
    for key, path in images.items():
        if key not in labels:
            raise InputError(path, no_label(key))
    for key, path in labels.items():
        if key not in images:
            raise InputError(path, no_image(key))

def _unique(found: dict[str, Path], key: str, path: Path) -> None:
    if key in found:
        raise InputError(path, f"case id {key} appears twice (also {found[key]})")
    found[key] = path


def find_lits_cases(root: Path) -> list[CaseFiles]:
    """Pair ``volume-N`` with ``segmentation-N`` below ``root``, sorted by N."""
    images: dict[str, Path] = {}
    labels: dict[str, Path] = {}
    for p in sorted(root.rglob("*")):
        if (m := _LITS_IMAGE.match(p.name)) and (p.is_dir() or m.group(2)):
            _unique(images, m.group(1), p)
        elif (m := _LITS_LABEL.match(p.name)) and p.is_file():
            _unique(labels, m.group(1), p)
    _check_paired(images, labels, lambda k: f"no label segmentation-{k}.nii[.gz] found for this case",
                  lambda k: f"no image volume-{k}.nii[.gz] found for this label")
    return [CaseFiles(f"volume-{k}", images[k], labels[k]) for k in sorted(images, key=int)]


def find_totalseg_cases(root: Path) -> list[CaseFiles]:
    """Find ``<subject>/ct.nii.gz`` (or ``<subject>/ct`` DICOM) with its liver mask, sorted by subject."""
    cases = []
    subjects = sorted({p.parent for p in root.rglob("ct.nii.gz")} | {p.parent for p in root.rglob("ct") if p.is_dir()})
    for subj in subjects:
        image = subj / "ct.nii.gz" if (subj / "ct.nii.gz").exists() else subj / "ct"
        label = subj / "segmentations" / "liver.nii.gz"
        if not label.exists():
            raise InputError(image, f"no label {label.relative_to(subj)} found for subject {subj.name}")
        cases.append(CaseFiles(subj.name, image, label))
    ids = [c.case_id for c in cases]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise InputError(root, f"subject names {dup} appear more than once")
    return cases


def find_ircadb_cases(root: Path) -> list[CaseFiles]:
    """3D-IRCADb patient folders (``root`` itself or those below it), by patient number."""
    # Imported here: this module stays free of torch/MONAI (the phantom generator uses it).
    from sam_mix_monai.data.ircadb import find_ircadb_patients, series_source

    cases = []
    for p in find_ircadb_patients(root):
        cases.append(CaseFiles(p.name, series_source(p, "PATIENT_DICOM"), series_source(p, "MASKS_DICOM")))  # type: ignore[arg-type]
    ids = [c.case_id for c in cases]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise InputError(root, f"patient folder names {dup} appear more than once")
    return cases


_CHANNEL = re.compile(r"^(.+)_(\d{4})$")


def _strip(name: str, ending: str) -> str | None:
    if name.startswith("."):  # hidden files, e.g. macOS ._liver_0.nii.gz in the MSD archives
        return None
    for sfx in (ending, ".nii.gz", ".nii", ".nrrd", ".mha"):
        if sfx and name.endswith(sfx):
            return name[: -len(sfx)]
    return None


def find_msd_cases(root: Path, label_ids: Sequence[int] | None = None) -> list[CaseFiles]:
    """Pair ``imagesTr/<case>[_0000]<ending>`` with ``labelsTr/<case><ending>`` (MSD / nnU-Net raw), by case id.

    ``dataset.json`` is validated (:mod:`.msd_schema`); its ``training`` list, when present, is the
    case list (a listed file that is missing is an error). The liver label values are taken by name,
    or from ``label_ids``.
    """
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise InputError(root, "not an MSD / nnU-Net raw dataset: dataset.json not found (expected dataset.json, "
                               "imagesTr/ and labelsTr/)")
    meta = read_dataset_json(meta_path)
    liver = liver_label_values(meta, meta_path, label_ids)
    declared = tuple(sorted(meta.label_ids()))
    ending = str(meta.file_ending or ".nii.gz")
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    for d in (images_dir, labels_dir):
        if not d.is_dir():
            raise InputError(d, "folder not found (an MSD / nnU-Net raw dataset has imagesTr/ and labelsTr/)")
    if meta.training:
        return _listed_cases(root, meta_path, meta.case_paths(), liver, declared)
    images: dict[str, Path] = {}
    for p in sorted(images_dir.iterdir()):
        stem = _strip(p.name, ending) if p.is_file() else None
        if stem is None:
            continue
        m = _CHANNEL.match(stem)
        if m and m.group(2) != "0000":
            continue  # another channel (this project reads the CT channel 0 only)
        _unique(images, m.group(1) if m else stem, p)
    labels: dict[str, Path] = {}
    for p in sorted(labels_dir.iterdir()):
        stem = _strip(p.name, ending) if p.is_file() else None
        if stem is not None:
            _unique(labels, stem, p)
    _check_paired(images, labels, lambda k: f"no label labelsTr/{k}{ending} found for this image",
                  lambda k: f"no image imagesTr/{k}_0000{ending} or imagesTr/{k}{ending} for this label")
    return [CaseFiles(k, images[k], labels[k], liver, declared) for k in sorted(images, key=_natural)]


def _listed_cases(root: Path, meta_path: Path, listed: list[tuple[str, str]], liver: tuple[int, ...],
                  declared: tuple[int, ...]) -> list[CaseFiles]:
    """The cases of dataset.json's ``training`` list; a listed file missing on disk is an error."""
    cases: dict[str, CaseFiles] = {}
    for k, (image, label) in enumerate(listed):
        for rel in (image, label):
            if rel.startswith("/") or ".." in PurePosixPath(rel).parts:
                raise InputError(meta_path, f"training.{k}: {rel!r} points outside the dataset folder")
            if not (root / rel).is_file():
                raise InputError(meta_path, f"training.{k}: listed file {rel} not found in {root}")
        stem = _strip(PurePosixPath(image).name, ".nii.gz") or PurePosixPath(image).name
        m = _CHANNEL.match(stem)
        key = m.group(1) if m else stem
        if key in cases:
            raise InputError(meta_path, f"training.{k}: case {key!r} is listed twice")
        cases[key] = CaseFiles(key, root / image, root / label, liver, declared)
    return [cases[k] for k in sorted(cases, key=_natural)]


def _natural(key: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]


_FINDERS = {"lits": find_lits_cases, "totalseg": find_totalseg_cases, "ircadb": find_ircadb_cases, "msd": find_msd_cases}
_HINTS = {
    "lits": "volume-N.nii[.gz] + segmentation-N.nii[.gz]",
    "totalseg": "<subject>/ct.nii.gz + <subject>/segmentations/liver.nii.gz",
    "ircadb": "3Dircadb1.N/PATIENT_DICOM/ + 3Dircadb1.N/MASKS_DICOM.zip",
    "msd": "dataset.json + imagesTr/<case>[_0000].nii.gz + labelsTr/<case>.nii.gz",
}


def find_cases(root: PathLike, fmt: str, label_ids: Sequence[int] | None = None) -> list[CaseFiles]:
    """Discover and pair the cases of a dataset folder.

    Args:
        root: the dataset folder.
        fmt: ``"lits"``, ``"totalseg"``, ``"ircadb"`` or ``"msd"``.
        label_ids: ``msd`` only: the label values that are liver (default: by name in dataset.json).

    Raises:
        InputError: missing folder, empty folder, unpaired image or label.
    """
    root = Path(root)
    if fmt not in FORMATS:
        raise InputError(None, f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    if not root.is_dir():
        raise InputError(root, "input folder not found")
    if label_ids and fmt != "msd":
        raise InputError(None, f"--label-id applies to --format msd only (the {fmt} layout fixes its labels)")
    cases = find_msd_cases(root, label_ids) if fmt == "msd" else _FINDERS[fmt](root)
    if not cases:
        raise InputError(root, f"no {fmt} cases found (expected {_HINTS[fmt]})")
    return cases
