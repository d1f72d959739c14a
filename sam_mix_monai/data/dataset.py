"""The HDF5 dataset adapter: 2D slices as dictionaries for MONAI/PyTorch data loaders.

Reads this project's store (:mod:`.h5store`) and the original SAM-Mix layout
(:mod:`.legacy`) alike. The file is opened lazily, once per worker process, so the
dataset pickles cheaply into ``DataLoader`` workers.

Each item is a dictionary:

* ``image`` float32 ``(1, S, S)`` in [0, 1];
* ``mask`` float32 ``(1, S, S)`` in {0, 1} (zeros where the slice is unlabelled);
* ``label`` int64: 1 liver present, 0 absent, -1 withheld;
* ``labelled`` bool: whether ``mask`` may be used as supervision;
* ``case_id``, ``slice_index``, ``spacing`` (row, column, slice mm), ``row``.

Example:
    >>> ds = SliceDataset("phantom.h5", split="train", n_labelled=50, subset="labelled")  # doctest: +SKIP
    >>> batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Literal

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from sam_mix_monai.data.h5store import SPLIT_NAMES, open_store
from sam_mix_monai.data.legacy import is_legacy_file, legacy_slice_names, legacy_to_unit
from sam_mix_monai.utils.errors import InputError, PathLike

Subset = Literal["all", "labelled", "unlabelled"]


class SliceTable:
    """Per-slice metadata of a store, read once; pixel data is read lazily with :meth:`read`.

    Args:
        path: an HDF5 file in this project's layout or the original SAM-Mix layout.

    Raises:
        InputError: missing or unreadable file, or an unknown layout.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        with open_store(self.path) as f:
            self.legacy = is_legacy_file(f)
            if self.legacy:
                self.names = legacy_slice_names(f)
                n = len(self.names)
                self.labels = np.array([int(f[k].attrs.get("ImageLabel", 0)) for k in self.names], np.uint8)
                self.splits = np.full(n, -1, np.int8)  # one file is one split
                self.case_ids = np.array(["legacy"] * n, dtype=object)
                self.slice_index = np.array([int(k[5:]) for k in self.names], np.int64)
                self.spacing = np.full((n, 3), np.nan, np.float32)
            elif "image" in f and "mask" in f:
                self.labels = f["label"][()]
                self.splits = f["split"][()].astype(np.int8)
                self.case_ids = f["case_id"].asstr()[()].astype(object)
                self.slice_index = f["slice_index"][()].astype(np.int64)
                self.spacing = f["spacing"][()]
            else:
                raise InputError(self.path, "not a slice store (neither this project's layout nor the original SAM-Mix layout)")
        self._file: h5py.File | None = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self.labels)

    def rows(self, split: str | None) -> np.ndarray:
        """Row indices of ``split`` (all rows for ``None`` and for original-layout files)."""
        if split is None or self.legacy:
            return np.arange(len(self))
        if split not in SPLIT_NAMES:
            raise InputError(self.path, f"unknown split {split!r} (choose from {', '.join(SPLIT_NAMES)})")
        return np.flatnonzero(self.splits == SPLIT_NAMES.index(split))

    def _handle(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def read(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """Image (float32 in [0, 1]) and binary mask (uint8) of one row."""
        f = self._handle()
        if self.legacy:
            g = f[self.names[row]]
            return legacy_to_unit(g["Slice"][()]), (g["Segmentation"][()] > 0).astype(np.uint8)
        return f["image"][row].astype(np.float32), f["mask"][row]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_file"], state["_pid"] = None, -1  # reopen in each worker
        return state


def select_labelled(rows: np.ndarray, labels: np.ndarray, n_labelled: int, seed: int, path: PathLike = "") -> np.ndarray:
    """Choose ``n_labelled`` liver-positive rows (reproducibly for a seed).

    Args:
        rows: candidate rows (one split).
        labels: slice labels of all rows.
        n_labelled: how many slices keep their masks.
        seed: selection seed.
        path: the file, for error messages.

    Raises:
        InputError: when fewer liver-positive slices are available.
    """
    positive = rows[labels[rows] > 0]
    if n_labelled > len(positive):
        raise InputError(path, f"asked for {n_labelled} labelled slices but only {len(positive)} liver-positive slices are available")
    return np.sort(np.random.default_rng(seed).choice(positive, size=n_labelled, replace=False))


class SliceDataset(Dataset):
    """2D CT slices from an HDF5 store, with the few-label selection of SAM-Mix.

    Args:
        path: an HDF5 store (this project's layout or the original SAM-Mix layout).
        split: ``"train"``, ``"val"``, ``"test"`` or ``None`` for all rows (ignored for
            original-layout files, which hold one split each).
        n_labelled: keep masks for only this many liver-positive slices, chosen with
            ``seed``; ``None`` keeps every mask.
        subset: ``"labelled"`` or ``"unlabelled"`` to serve only one part, or ``"all"``.
        seed: seed of the labelled selection and of label withholding.
        withhold_label_fraction: share of unlabelled slices whose image label is also
            withheld (``label = -1``).
        transform: a callable (e.g. a MONAI ``Compose``) applied to each item dict.
    """

    def __init__(
        self,
        path: PathLike,
        split: str | None = "train",
        n_labelled: int | None = None,
        subset: Subset = "all",
        seed: int = 0,
        withhold_label_fraction: float = 0.0,
        transform: Callable[[dict], dict] | None = None,
    ) -> None:
        self.table = SliceTable(path)
        rows = self.table.rows(split)
        if n_labelled is None:
            labelled = rows
        else:
            labelled = select_labelled(rows, self.table.labels, int(n_labelled), seed, path)
        self.is_labelled = np.zeros(len(self.table), bool)
        self.is_labelled[labelled] = True
        rng = np.random.default_rng(seed + 1)
        unl = rows[~self.is_labelled[rows]]
        self.label_known = np.ones(len(self.table), bool)
        self.label_known[unl[rng.random(len(unl)) < withhold_label_fraction]] = False
        if subset == "labelled":
            rows = labelled
        elif subset == "unlabelled":
            rows = unl
        elif subset != "all":
            raise ValueError(f"subset must be all, labelled or unlabelled, got {subset!r}")
        self.rows = rows
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = int(self.rows[index])
        image, mask = self.table.read(row)
        labelled = bool(self.is_labelled[row])
        item = {
            "image": torch.from_numpy(image)[None],
            "mask": torch.from_numpy(mask.astype(np.float32) if labelled else np.zeros(mask.shape, np.float32))[None],
            "label": torch.tensor(int(self.table.labels[row]) if self.label_known[row] else -1),
            "labelled": labelled,
            "case_id": str(self.table.case_ids[row]),
            "slice_index": int(self.table.slice_index[row]),
            "spacing": torch.from_numpy(self.table.spacing[row].copy()),
            "row": row,
        }
        return self.transform(item) if self.transform is not None else item
