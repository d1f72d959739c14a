"""Data loaders of the engines: labelled and unlabelled training streams, evaluation loaders.

* Training streams (:class:`EpochStream`) yield exactly ``length`` batches per epoch, cycling
  through their data set in full random passes (a ``DistributedSampler`` per pass, seeded by the
  run seed, the epoch and the pass), so an epoch's batches depend only on ``(seed, epoch)``: a
  run resumed at an epoch boundary sees the same data as an uninterrupted one, and in a
  ``K``-process run the ``K`` per-rank batches of a step together hold the single-process batch.
* Evaluation loaders give each rank whole cases (``monai.data.partition_dataset`` over the case
  ids), as the ``volume3d`` protocol stacks the slices of a case.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np
import torch
from monai.data import partition_dataset
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from sam_mix_monai.data import SliceDataset
from sam_mix_monai.utils.errors import PathLike

__all__ = ["EpochStream", "training_stream", "evaluation_loader", "case_partition"]


class EpochStream:
    """An iterable of exactly ``length`` batches per epoch from a loader, cycled in full passes.

    Call :meth:`set_epoch` at the start of each epoch (the trainer does). The epoch is read when
    iteration starts (the generator body runs at the first ``next``), so Ignite may create the
    iterator early.

    Args:
        loader: a ``DataLoader`` whose sampler has ``set_epoch`` (e.g. ``DistributedSampler``).
        length: batches per epoch.
    """

    def __init__(self, loader: DataLoader, length: int) -> None:
        if length < 1:
            raise ValueError("an epoch needs at least one batch")
        if len(loader) < 1:
            raise ValueError("the loader yields no batch (fewer samples than one batch per rank)")
        self.loader = loader
        self.length = int(length)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next iteration yields."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[Any]:
        epoch, passes, served = self.epoch, 0, 0
        sampler = getattr(self.loader, "sampler", None)
        while served < self.length:
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch * 1009 + passes)
            for batch in self.loader:
                yield batch
                served += 1
                if served == self.length:
                    return
            passes += 1


def training_stream(
    dataset: Dataset,
    batch_size: int,
    length: int | None,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
) -> EpochStream:
    """A shuffled, cycled training stream.

    Args:
        dataset: the slices.
        batch_size: per-rank batch size.
        length: batches per epoch (``None``: one pass, ``len(dataset) // (batch_size * world_size)``, at least 1).
        seed: shuffling seed.
        rank, world_size: this process and the number of processes.
        num_workers: loader worker processes (persistent).

    Returns:
        The stream.
    """
    per_pass = batch_size * world_size
    if len(dataset) < per_pass:  # fewer slices than one global batch (e.g. N = 5): repeat them within a pass
        copies = math.ceil(per_pass / len(dataset))
        dataset = Subset(dataset, list(range(len(dataset))) * copies)
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True)
    loader = DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, drop_last=True, num_workers=num_workers,
        persistent_workers=num_workers > 0, generator=torch.Generator().manual_seed(seed),
    )
    if length is None:
        length = max(1, len(dataset) // (batch_size * world_size))
    return EpochStream(loader, length)


def case_partition(dataset: SliceDataset, rank: int = 0, world_size: int = 1) -> Dataset:
    """The slices of this rank's cases (all cases when there are fewer cases than ranks).

    Args:
        dataset: a slice dataset.
        rank, world_size: this process and the number of processes.

    Returns:
        A ``Subset`` of whole cases (or ``dataset`` itself for one process).
    """
    if world_size <= 1:
        return dataset
    case_of_row = dataset.table.case_ids[dataset.rows]
    cases = sorted(set(case_of_row.tolist()))
    if len(cases) < world_size:
        return dataset
    mine = set(partition_dataset(cases, num_partitions=world_size, shuffle=False, even_divisible=False)[rank])
    return Subset(dataset, [i for i, c in enumerate(case_of_row) if c in mine])


def evaluation_loader(
    path: PathLike | None = None,
    split: str | None = None,
    batch_size: int = 16,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    dataset: SliceDataset | None = None,
) -> DataLoader:
    """Slices of one split (every mask and label), whole cases per rank, in file order.

    Args:
        path: HDF5 slice store (unless ``dataset`` is given).
        split: split name (``None``: every slice).
        batch_size: slices per batch.
        rank, world_size: this process and the number of processes.
        num_workers: loader worker processes.
        dataset: the split's :class:`SliceDataset`, instead of ``path`` and ``split`` (the bundle's
            ``validate#dataset``).

    Returns:
        The loader.
    """
    if dataset is None:
        if path is None:
            raise ValueError("evaluation_loader needs a store path or a dataset")
        dataset = SliceDataset(path, split=split)
    ds = case_partition(dataset, rank, world_size)
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers)


def iterations_per_epoch(n_unlabelled: int, n_labelled: int, unlabelled_batch: int, batch: int, use_unlabelled: bool) -> int:
    """Default epoch length: one pass over the unlabelled slices (or the labelled ones without them)."""
    if use_unlabelled and n_unlabelled > 0:
        return max(1, n_unlabelled // unlabelled_batch)
    return max(1, math.ceil(n_labelled / batch))


def liver_rows(dataset: SliceDataset) -> np.ndarray:
    """Rows of a data set that contain liver (for reporting)."""
    return dataset.rows[dataset.table.labels[dataset.rows] > 0]
