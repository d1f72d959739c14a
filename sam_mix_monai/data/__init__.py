"""Data stage: reading CT, phantoms, conversion to the HDF5 slice store, and the dataset adapter.

Names are imported lazily, so that ``sam_mix_monai.data.phantom`` (numpy/scipy/nibabel only)
does not pay for torch and MONAI.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SliceDataset": "dataset",
    "SliceTable": "dataset",
    "select_labelled": "dataset",
    "SPLIT_NAMES": "h5store",
    "CaseSlices": "h5store",
    "SliceStoreWriter": "h5store",
    "read_attrs": "h5store",
    "read_volume": "io",
    "LoadVolumed": "io",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"sam_mix_monai.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'sam_mix_monai.data' has no attribute {name!r}")
