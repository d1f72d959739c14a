"""Reading HDF5 files in the original SAM-Mix layout.

The original preprocessing script writes one group per slice::

    Slice{i}/Slice         float16, HU clipped to [-160, 240] then divided by a
                           hard-coded global range: (HU + 3055) / (5811 + 3055)
    Slice{i}/Segmentation  int16, 0 background, 1 liver, 2 tumour
    Slice{i}.attrs["ImageLabel"]  1 if the slice contains liver

This reader undoes that global normalisation, re-windows to [0, 1] and maps
tumour to liver, so the rest of the project sees the same data as from our store.
Precision: the original squeezes the window into about [0.33, 0.37], where float16
resolves about 2 HU; that loss cannot be undone.
"""

from __future__ import annotations

import re

import h5py
import numpy as np

from sam_mix_monai.transforms.window import DEFAULT_WINDOW, window_bounds

#: The global range the original script divides by after windowing.
LEGACY_RANGE: tuple[float, float] = (-3055.0, 5811.0)
_GROUP = re.compile(r"^Slice(\d+)$")


def is_legacy_file(f: h5py.File) -> bool:
    """Whether an open HDF5 file is in the original one-group-per-slice layout."""
    for name in f:
        return bool(_GROUP.match(name)) and isinstance(f[name], h5py.Group)
    return False


def legacy_slice_names(f: h5py.File) -> list[str]:
    """Group names ``Slice{i}`` sorted by ``i`` (numerically, not by listing order)."""
    names = [n for n in f if _GROUP.match(n)]
    return sorted(names, key=lambda n: int(_GROUP.match(n).group(1)))  # type: ignore[union-attr]


def legacy_to_unit(x: np.ndarray, window: tuple[float, float] = DEFAULT_WINDOW,
                   legacy_range: tuple[float, float] = LEGACY_RANGE) -> np.ndarray:
    """Undo the original normalisation and window to [0, 1].

    Args:
        x: values as stored by the original script.
        window: (centre, width) of the target window; the paper's by default.
        legacy_range: the (low, high) global range the original divided by.
    """
    lo, hi = legacy_range
    hu = np.asarray(x, dtype=np.float32) * (hi - lo) + lo
    wlo, whi = window_bounds(*window)
    return np.clip((hu - wlo) / (whi - wlo), 0.0, 1.0)


def write_legacy_file(path: str, hu_slices: np.ndarray, labels: np.ndarray) -> None:
    """Write slices in the original layout, with the original normalisation (for tests and benchmarks).

    Args:
        path: the file to create.
        hu_slices: ``(N, H, W)`` CT in HU.
        labels: ``(N, H, W)`` label maps with values in {0, 1, 2}.
    """
    lo, hi = LEGACY_RANGE
    wlo, whi = window_bounds(*DEFAULT_WINDOW)
    with h5py.File(path, "w") as f:
        for i, (img, lab) in enumerate(zip(hu_slices, labels)):
            g = f.create_group(f"Slice{i}")
            g.create_dataset("Slice", data=((np.clip(img, wlo, whi) - lo) / (hi - lo)).astype(np.float16))
            g.create_dataset("Segmentation", data=lab.astype(np.int16))
            g.attrs["ImageLabel"] = int((lab > 0).any())
