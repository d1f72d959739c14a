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

import mmap
import os
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from sam_mix_monai.data.h5store import FORMAT_NAME, SPLIT_NAMES, open_store
from sam_mix_monai.data.store_checks import check_finite_sample, sample_rows, validate_store
from sam_mix_monai.data.legacy import is_legacy_file, legacy_slice_names, legacy_to_unit
from sam_mix_monai.transforms.window import DEFAULT_WINDOW
from sam_mix_monai.utils.errors import InputError, PathLike

Subset = Literal["all", "labelled", "unlabelled"]


class SliceTable:
    """Per-slice metadata of a store, read once; pixel data is read lazily with :meth:`read`.

    Args:
        path: an HDF5 file in this project's layout or the original SAM-Mix layout.

    Raises:
        InputError: missing or unreadable file, an unknown layout, or a store failing
            :func:`~.store_checks.validate_store` (named store and dataset).
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        with open_store(self.path) as f:
            self.legacy = is_legacy_file(f)
            rate = f.attrs.get("keep_rate")
            self.keep_rate = None if rate is None else float(rate)  # converter setting (1.0: whole volumes)
            #: The slicing the store was made with (``SlicingConfig`` fields found in its attributes).
            self.slicing: dict[str, float | int] = {
                k: (int if k == "image_size" else float)(f.attrs[k])
                for k in ("window_center", "window_width", "keep_rate", "image_size") if k in f.attrs}
            if self.legacy:
                self.names = legacy_slice_names(f)
                n = len(self.names)
                # The image label is the mask's (the file's ImageLabel attribute can be missing or
                # disagree with it): one read of every mask, once per table.
                self.labels = np.array([int(bool(np.any(f[k]["Segmentation"][()] > 0))) for k in self.names], np.uint8)
                self.splits = np.full(n, -1, np.int8)  # one file is one split
                self.case_ids = np.array(["legacy"] * n, dtype=object)  # no case ids, no spacing: no volume3d
                self.slice_index = np.array([int(k[5:]) for k in self.names], np.int64)
                self.spacing = np.full((n, 3), np.nan, np.float32)
                rows = sample_rows(n)
                check_finite_sample(np.stack([f[self.names[r]]["Slice"][()].astype(np.float32) for r in rows]) if n
                                    else np.zeros((0, 1)), self.path, "Slice{i}/Slice", rows)
                side = int(f[self.names[0]]["Slice"].shape[-1]) if n else 0
                self.slicing = {"window_center": float(DEFAULT_WINDOW[0]), "window_width": float(DEFAULT_WINDOW[1]),
                                "image_size": side}  # legacy_to_unit re-windows to the paper's window
            elif "image" in f or "mask" in f or f.attrs.get("format") == FORMAT_NAME:
                validate_store(f, self.path)
                self.labels = f["label"][()]
                self.splits = f["split"][()].astype(np.int8)
                self.case_ids = f["case_id"].asstr()[()].astype(object)
                self.slice_index = f["slice_index"][()].astype(np.int64)
                self.spacing = f["spacing"][()]
            else:
                raise InputError(self.path, "not a slice store (neither this project's layout nor the original SAM-Mix layout)")
        self._file: h5py.File | None = None
        self._pid = -1
        self._map: np.ndarray | None = None  # read-only memory map of the whole file
        self._chunks: dict | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def volume3d_refusal(self) -> str | None:
        """Why per-case 3D metrics cannot be scored on this store (``None`` when they can).

        They need whole volumes: a store converted with ``keep_rate`` < 1 keeps a central slab of
        each case, and an original SAM-Mix layout file has no case ids or pixel spacing.
        """
        if self.legacy:
            return "an original SAM-Mix layout file has no case ids or pixel spacing"
        if self.keep_rate is not None and self.keep_rate < 1.0:
            return (f"the store keeps the central slab of each case (keep_rate {self.keep_rate:g}), not whole volumes; "
                    "convert with --keep-rate all for volume3d")
        return None

    def rows(self, split: str | None) -> np.ndarray:
        """Row indices of ``split`` (``None``: all rows).

        Raises:
            InputError: an unknown split, or a named split of an original-layout file (it holds one
                split and no case ids, so train / val / test cannot be told apart in it).
        """
        if split is None:
            return np.arange(len(self))
        if self.legacy:
            raise InputError(self.path, f"an original SAM-Mix layout file holds one split and no case ids, so the "
                                        f"split {split!r} cannot be honoured; use it where the split is null "
                                        "(e.g. evaluate.cross_domain with split: null, or sam-mix evaluate --split all)")
        if split not in SPLIT_NAMES:
            raise InputError(self.path, f"unknown split {split!r} (choose from {', '.join(SPLIT_NAMES)})")
        return np.flatnonzero(self.splits == SPLIT_NAMES.index(split))

    def _handle(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
            self._chunks = None if self.legacy else {k: _chunk_index(self._file[k]) for k in ("image", "mask")}
            self._map = None
            if self._chunks and all(self._chunks.values()):
                with open(self.path, "rb") as fh:  # the map stays valid after the file object closes
                    self._map = np.frombuffer(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ), np.uint8)
        return self._file

    def read(self, row: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Image (float32 in [0, 1]) and binary mask (uint8) of one row, as ``(S, S)`` tensors."""
        img, mask = self.read_many([row])
        return img[0], mask[0]

    def read_many(self, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``(B, S, S)`` float32 in [0, 1] and masks ``(B, S, S)`` uint8 of several rows."""
        f = self._handle()
        if self.legacy:
            groups = [f[self.names[r]] for r in rows]
            img = np.stack([legacy_to_unit(g["Slice"][()]) for g in groups])
            mask = np.stack([(g["Segmentation"][()] > 0).astype(np.uint8) for g in groups])
            return torch.from_numpy(img), torch.from_numpy(mask)
        if self._map is None:
            order = np.argsort(rows)  # h5py wants increasing indices
            sorted_rows = np.asarray(rows)[order]
            img = np.stack([f["image"][int(r)] for r in sorted_rows])
            mask = np.stack([f["mask"][int(r)] for r in sorted_rows])
            inv = np.argsort(order)
            return torch.from_numpy(img[inv]).float(), torch.from_numpy(mask[inv])
        out = []
        for key in ("image", "mask"):
            offsets, nbytes, dtype, shape = self._chunks[key]  # type: ignore[index]
            out.append(torch.from_numpy(np.stack([self._map[o : o + nbytes].view(dtype).reshape(shape) for o in offsets[rows]])))
        # torch converts float16 about 15x faster than numpy's astype
        return out[0].float(), out[1]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_file"], state["_pid"], state["_map"], state["_chunks"] = None, -1, None, None  # reopen per worker
        return state


def _chunk_index(ds: h5py.Dataset) -> tuple[np.ndarray, int, np.dtype, tuple[int, ...]] | None:
    """Byte offsets of the one-slice chunks of ``ds``, or ``None`` when they cannot be used.

    h5py's per-call selection machinery costs more than reading a 128 KB slice; with
    one uncompressed chunk per slice (as :class:`SliceStoreWriter` writes) a slice is
    a copy out of a read-only memory map at a known offset. Any other chunking or a
    filter falls back to h5py.
    """
    n = ds.shape[0]
    if ds.chunks != (1, *ds.shape[1:]) or ds.compression is not None or ds.id.get_num_chunks() != n:
        return None
    offsets = np.full(n, -1, np.int64)
    try:
        ds.id.chunk_iter(lambda c: offsets.__setitem__(c.chunk_offset[0], c.byte_offset))
    except (AttributeError, RuntimeError):  # HDF5 < 1.12.3
        return None
    if (offsets < 0).any():
        return None
    return offsets, int(np.prod(ds.shape[1:])) * ds.dtype.itemsize, ds.dtype, tuple(ds.shape[1:])


def select_labelled(rows: np.ndarray, labels: np.ndarray, n_labelled: int, seed: int, path: PathLike = "",
                    n_empty: int = 0) -> np.ndarray:
    """Choose ``n_labelled`` liver-positive rows, plus ``n_empty`` liver-free ones (reproducibly for a seed).

    The positives are the same whatever ``n_empty`` (separate random streams). A liver-free slice
    needs no drawing to be labelled: its mask is known to be empty from its image label, which every
    model of a comparison gets, so it can supervise every model's masks.

    Args:
        rows: candidate rows (one split).
        labels: slice labels of all rows.
        n_labelled: how many liver-positive slices keep their masks.
        seed: selection seed.
        path: the file, for error messages.
        n_empty: liver-free slices added (fewer when the split has fewer).

    Raises:
        InputError: when fewer liver-positive slices are available.
    """
    positive = rows[labels[rows] > 0]
    if n_labelled > len(positive):
        raise InputError(path, f"asked for {n_labelled} labelled slices but only {len(positive)} liver-positive slices are available")
    chosen = np.random.default_rng(seed).choice(positive, size=n_labelled, replace=False)
    negative = rows[labels[rows] == 0]
    if n_empty > 0 and len(negative):
        empty = np.random.default_rng([seed, 2]).choice(negative, size=min(int(n_empty), len(negative)), replace=False)
        chosen = np.concatenate([chosen, empty])
    return np.sort(chosen)


class SliceDataset(Dataset):
    """2D CT slices from an HDF5 store, with the few-label selection of SAM-Mix.

    Args:
        path: an HDF5 store (this project's layout or the original SAM-Mix layout).
        split: ``"train"``, ``"val"``, ``"test"`` or ``None`` for all rows (original-layout files
            hold one split each: ``None`` only).
        n_labelled: keep masks for only this many liver-positive slices, chosen with
            ``seed``; ``None`` keeps every mask.
        n_empty: also keep the (empty) masks of this many liver-free slices (with ``n_labelled``).
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
        n_empty: int = 0,
    ) -> None:
        self.table = SliceTable(path)
        rows = self.table.rows(split)
        if n_labelled is None:
            labelled = rows
        else:
            labelled = select_labelled(rows, self.table.labels, int(n_labelled), seed, path, n_empty)
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
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Fetch several items with one batched read (used by ``DataLoader`` automatically)."""
        rows = [int(self.rows[i]) for i in indices]
        images, masks = self.table.read_many(rows)
        return [self._item(r, images[k], masks[k]) for k, r in enumerate(rows)]

    def _item(self, row: int, image: torch.Tensor, mask: torch.Tensor) -> dict[str, Any]:
        labelled = bool(self.is_labelled[row])
        item = {
            "image": image[None],
            "mask": (mask.float() if labelled else torch.zeros(mask.shape))[None],
            "label": torch.tensor(int(self.table.labels[row]) if self.label_known[row] else -1),
            "labelled": labelled,
            "case_id": str(self.table.case_ids[row]),
            "slice_index": int(self.table.slice_index[row]),
            "spacing": torch.from_numpy(self.table.spacing[row].copy()),
            "row": row,
        }
        return self.transform(item) if self.transform is not None else item
