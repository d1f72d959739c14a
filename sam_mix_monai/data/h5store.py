"""The HDF5 slice store: one file, one row per 2D slice, a split column.

Schema (``format_version`` 1), ``N`` slices of ``S x S`` pixels, ``C`` cases:

==================  ==============  =====================================================
dataset             shape / dtype   meaning
==================  ==============  =====================================================
``image``           (N,S,S) f16     windowed CT in [0, 1], display orientation
``mask``            (N,S,S) u8      liver mask {0, 1} (LiTS tumour merged into liver)
``label``           (N,) u8         1 if the slice contains liver
``case_id``         (N,) str        case the slice comes from
``slice_index``     (N,) i32        axial index in the case's RAS-canonical volume
``split``           (N,) u8         index into the ``split_names`` attribute
``spacing``         (N,3) f32       pixel spacing of the stored slice in mm: (row, column, slice)
``cases/*``         (C,...)         per case: ``case_id``, ``split``, ``affine`` (RAS, 4x4),
                                    ``shape`` (RAS X,Y,Z), ``source`` (image path), ``first_row``,
                                    ``n_rows``
==================  ==============  =====================================================

Root attributes hold the preprocessing parameters (``window_center``,
``window_width``, ``keep_rate``, ``image_size``), ``format_version``,
``split_names``, ``source_format``, ``slice_orientation`` and ``created_by``.

``image`` and ``mask`` are chunked one slice per chunk and left uncompressed, so a
random slice is one contiguous read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np

from sam_mix_monai import __version__
from sam_mix_monai.utils.errors import InputError, PathLike

FORMAT_NAME = "sam_mix_monai.slices"
FORMAT_VERSION = 1
SPLIT_NAMES = ("train", "val", "test")
SLICE_ORIENTATION = "rows anterior->posterior, columns patient right->left (radiological display)"
_STR = h5py.string_dtype("utf-8")


@dataclass
class CaseSlices:
    """The slices of one converted case, ready to be appended to a store."""

    case_id: str
    source: str
    image: np.ndarray  # (n, S, S) float in [0, 1]
    mask: np.ndarray  # (n, S, S) uint8
    label: np.ndarray  # (n,) uint8
    slice_index: np.ndarray  # (n,) int
    pixel_spacing: np.ndarray  # (3,) mm: row, column, slice of the stored pixels
    affine: np.ndarray  # (4, 4) RAS affine of the canonical volume
    shape: tuple[int, int, int]  # RAS (X, Y, Z)


class SliceStoreWriter:
    """Append cases to a new store file.

    Args:
        path: the file to create (use :func:`~sam_mix_monai.utils.atomic_output` for atomicity).
        image_size: side ``S`` of the slices.
        attrs: root attributes to record (preprocessing parameters, provenance).

    Example:
        >>> with SliceStoreWriter(tmp, 256, {"keep_rate": 0.3}) as w:  # doctest: +SKIP
        ...     w.append(case_slices, split="train")
    """

    def __init__(self, path: PathLike, image_size: int, attrs: Mapping[str, Any] | None = None) -> None:
        self.f = h5py.File(path, "w")
        s = int(image_size)
        self.f.attrs.update({"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "created_by": f"sam_mix_monai {__version__}"})
        self.f.attrs["split_names"] = list(SPLIT_NAMES)
        self.f.attrs["slice_orientation"] = SLICE_ORIENTATION
        self.f.attrs["image_size"] = s
        for k, v in (attrs or {}).items():
            self.f.attrs[k] = v
        mk = self.f.create_dataset
        mk("image", (0, s, s), np.float16, maxshape=(None, s, s), chunks=(1, s, s))
        mk("mask", (0, s, s), np.uint8, maxshape=(None, s, s), chunks=(1, s, s))
        for name, dt, extra in (("label", np.uint8, ()), ("split", np.uint8, ()), ("slice_index", np.int32, ()),
                                ("case_id", _STR, ()), ("spacing", np.float32, (3,))):
            mk(name, (0, *extra), dt, maxshape=(None, *extra), chunks=(4096, *extra))
        g = self.f.create_group("cases")
        for name, dt, extra in (("case_id", _STR, ()), ("source", _STR, ()), ("split", np.uint8, ()),
                                ("affine", np.float64, (4, 4)), ("shape", np.int32, (3,)),
                                ("first_row", np.int64, ()), ("n_rows", np.int64, ())):
            g.create_dataset(name, (0, *extra), dt, maxshape=(None, *extra))
        self.n_rows = 0

    def append(self, case: CaseSlices, split: str) -> None:
        """Append one case's slices under ``split`` (one of :data:`SPLIT_NAMES`)."""
        code = SPLIT_NAMES.index(split)
        n, r0 = len(case.image), self.n_rows
        rows = {
            "image": case.image.astype(np.float16), "mask": case.mask.astype(np.uint8),
            "label": case.label.astype(np.uint8), "split": np.full(n, code, np.uint8),
            "slice_index": case.slice_index.astype(np.int32), "case_id": np.array([case.case_id] * n, dtype=object),
            "spacing": np.tile(np.asarray(case.pixel_spacing, np.float32), (n, 1)),
        }
        for name, values in rows.items():
            ds = self.f[name]
            ds.resize(r0 + n, axis=0)
            ds[r0 : r0 + n] = values
        g = self.f["cases"]
        c = g["case_id"].shape[0]
        per_case = {"case_id": case.case_id, "source": case.source, "split": code, "affine": case.affine,
                    "shape": np.asarray(case.shape, np.int32), "first_row": r0, "n_rows": n}
        for name, value in per_case.items():
            g[name].resize(c + 1, axis=0)
            g[name][c] = value
        self.n_rows += n

    def close(self) -> None:
        """Flush and close the file."""
        self.f.close()

    def __enter__(self) -> "SliceStoreWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def is_slice_store(path: PathLike) -> bool:
    """Whether ``path`` is an HDF5 file in this project's layout."""
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == FORMAT_NAME
    except OSError:
        return False


def open_store(path: PathLike) -> h5py.File:
    """Open an HDF5 file read-only, with one clear error when it cannot be.

    Raises:
        InputError: file missing or not HDF5.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "HDF5 file not found")
    try:
        return h5py.File(p, "r")
    except OSError as e:
        raise InputError(p, f"not a readable HDF5 file ({e})") from None


def read_attrs(path: PathLike) -> dict[str, Any]:
    """The root attributes of a store (preprocessing parameters and provenance)."""
    with open_store(path) as f:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in f.attrs.items()}
