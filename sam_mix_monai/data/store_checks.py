"""Validation of an HDF5 slice store when it is opened, before any row is trusted.

A store that was truncated, hand-made or written by other code can miss datasets, hold datasets
of different lengths, declare far more rows than the file holds (HDF5 then returns zeros for the
rows never written, and training would silently use them), or hold NaN. Checked here:

* the required datasets of :mod:`.h5store` exist and are datasets;
* their lengths agree; ``image`` and ``mask`` are ``(N, S, S)`` with the same shape;
* dtypes: ``image`` / ``spacing`` floating point, ``mask`` / ``label`` / ``split`` /
  ``slice_index`` integer (or bool), ``case_id`` strings;
* declared sizes against what is stored: the bytes an uncompressed dataset declares must fit in
  the file, and every chunk of a chunked dataset must have been written;
* values: every ``label`` and ``split`` (cheap, one byte a row), and a sample of
  :data:`SAMPLE_ROWS` evenly spaced rows of ``image`` (finite, within [0, 1]), ``mask`` ({0, 1})
  and ``spacing`` (finite, positive).

Every problem raises :class:`~sam_mix_monai.utils.errors.InputError` naming the store and the dataset.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import h5py
import numpy as np

from sam_mix_monai.utils.errors import InputError, PathLike

__all__ = ["REQUIRED", "SAMPLE_ROWS", "check_finite_sample", "sample_rows", "validate_store"]

#: dataset -> (dimensions, dtype kind) of this project's layout.
REQUIRED = {"image": (3, "f"), "mask": (3, "iub"), "label": (1, "iub"), "split": (1, "iub"),
            "case_id": (1, "S"), "slice_index": (1, "iu"), "spacing": (2, "f")}
#: Rows of the pixel datasets read to check their values.
SAMPLE_ROWS = 32
_RANGE_TOL = 1e-3


def sample_rows(n: int, k: int = SAMPLE_ROWS) -> np.ndarray:
    """Up to ``k`` evenly spaced row indices of ``n`` rows (first and last included)."""
    return np.unique(np.linspace(0, n - 1, min(n, k)).round().astype(np.int64)) if n else np.zeros(0, np.int64)


def _kind(ds: h5py.Dataset) -> str:
    if h5py.check_string_dtype(ds.dtype) is not None or ds.dtype.kind in "SO":
        return "S"
    return ds.dtype.kind


def _check_stored(ds: h5py.Dataset, name: str, path: Path, file_size: int) -> None:
    declared = int(np.prod(ds.shape, dtype=np.float64) * ds.dtype.itemsize) if ds.dtype.kind != "O" else 0
    what = f"dataset '{name}' declares {ds.shape[0]} rows of shape {tuple(ds.shape[1:])}"
    if ds.chunks is None:
        if declared > file_size:
            raise InputError(path, f"{what} ({declared / 2**20:.1f} MB) but the file holds {file_size / 2**20:.1f} MB: "
                                   "truncated or not written by sam-mix convert")
        return
    expected = math.prod(math.ceil(s / c) for s, c in zip(ds.shape, ds.chunks))
    if ds.compression is None and declared > file_size:
        raise InputError(path, f"{what} ({declared / 2**20:.1f} MB) but the file holds {file_size / 2**20:.1f} MB: "
                               "rows were never written")
    try:
        written = ds.id.get_num_chunks()
    except (AttributeError, RuntimeError):  # old HDF5
        return
    if written < expected:
        raise InputError(path, f"{what} but only {written} of its {expected} chunks were ever written: "
                               "the store is truncated or was not closed")


def check_finite_sample(values: np.ndarray, path: PathLike, name: str, rows: np.ndarray) -> None:
    """Raise naming the store, dataset and first row when ``values`` (rows ``rows``) holds NaN / Inf."""
    bad = ~np.isfinite(values.reshape(len(values), -1)).all(1)
    if bad.any():
        raise InputError(path, f"dataset '{name}' holds NaN or infinite values (row {int(rows[bad.argmax()])}, and "
                               f"{int(bad.sum())} of {len(rows)} rows checked): refused")


def validate_store(f: h5py.File, path: PathLike) -> int:
    """Check an open store in this project's layout.

    Args:
        f: the open file.
        path: its path, for the messages.

    Returns:
        The number of rows.

    Raises:
        InputError: the first problem found, naming the store and the dataset.
    """
    path = Path(path)
    missing = [k for k in REQUIRED if not isinstance(f.get(k, getlink=False), h5py.Dataset)]
    if missing:
        raise InputError(path, f"slice store lacks dataset(s) {', '.join(repr(k) for k in missing)} "
                               "(truncated, or not written by sam-mix convert)")
    for name, (ndim, kinds) in REQUIRED.items():
        ds = f[name]
        if ds.ndim != ndim:
            raise InputError(path, f"dataset '{name}' has {ds.ndim} dimensions {tuple(ds.shape)}, expected {ndim}")
        if _kind(ds) not in kinds:
            raise InputError(path, f"dataset '{name}' has dtype {ds.dtype}, expected "
                                   f"{ {'f': 'floating point', 'iub': 'integer', 'iu': 'integer', 'S': 'strings'}[kinds]}")
    n = f["image"].shape[0]
    lengths = {k: f[k].shape[0] for k in REQUIRED}
    odd = {k: v for k, v in lengths.items() if v != n}
    if odd:
        k, v = next(iter(odd.items()))
        raise InputError(path, f"dataset 'image' has {n} rows but '{k}' has {v}: the datasets must have one row per slice")
    image, mask = f["image"], f["mask"]
    if image.shape[1] != image.shape[2] or mask.shape != image.shape:
        raise InputError(path, f"dataset 'image' {tuple(image.shape)} and 'mask' {tuple(mask.shape)} must both be (N, S, S)")
    if f["spacing"].shape[1] != 3:
        raise InputError(path, f"dataset 'spacing' has shape {tuple(f['spacing'].shape)}, expected (N, 3)")
    declared_size = f.attrs.get("image_size")
    if declared_size is not None and int(declared_size) != image.shape[1]:
        raise InputError(path, f"dataset 'image' has {image.shape[1]} px slices but the store's image_size says {int(declared_size)}")
    size = os.path.getsize(path)
    for name in REQUIRED:
        _check_stored(f[name], name, path, size)
    names = f.attrs.get("split_names")
    n_splits = len(names) if names is not None else 3
    for name, hi in (("label", 1), ("split", n_splits - 1)):
        values = f[name][()]
        if values.size and (values.min() < 0 or values.max() > hi):
            raise InputError(path, f"dataset '{name}' holds values outside 0..{hi} (e.g. {int(values[(values < 0) | (values > hi)][0])})")
    rows = sample_rows(n)
    if rows.size:
        img = image[rows]
        check_finite_sample(img, path, "image", rows)
        if img.min() < -_RANGE_TOL or img.max() > 1 + _RANGE_TOL:
            raise InputError(path, f"dataset 'image' holds values in [{float(img.min()):g}, {float(img.max()):g}], "
                                   "expected windowed CT in [0, 1]")
        m = mask[rows]
        if m.size and (m.min() < 0 or m.max() > 1):
            raise InputError(path, f"dataset 'mask' holds values outside {{0, 1}} (max {int(m.max())})")
        sp = f["spacing"][rows]
        check_finite_sample(sp, path, "spacing", rows)
        if (sp <= 0).any():
            raise InputError(path, "dataset 'spacing' holds zero or negative pixel spacings")
    return n
