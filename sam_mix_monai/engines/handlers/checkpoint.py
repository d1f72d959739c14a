"""Checkpoints: Ignite's ``Checkpoint`` with an atomic, rank-0-only disk writer.

* :func:`last_checkpoint`: the resumable checkpoint (model, optimiser, scheduler, engine state, RNG
  states, ... whatever ``to_save`` holds), rewritten under one fixed name every epoch;
* :func:`best_checkpoint`: the best model by a validation metric (it also carries its own
  tracking state under ``checkpointer``, so a resumed run keeps comparing against it);
* :class:`RunRecord`: the run's configuration, package version and git commit, stored in every
  checkpoint so that evaluation and inference rebuild the network from the checkpoint alone.

Ignite's own ``DiskSaver`` (and MONAI's ``CheckpointSaver``) delete the previous file before writing
one with the same name; :class:`AtomicSaver` writes a temporary file and renames it over the old
one, so an interrupted run always leaves a complete checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import ignite.distributed as idist
import torch
from ignite.engine import Engine
from ignite.handlers import Checkpoint

from sam_mix_monai.networks.checkpoint import check_finite
from sam_mix_monai.utils.atomic import atomic_output
from sam_mix_monai.utils.errors import InputError, PathLike

__all__ = ["AtomicSaver", "RunRecord", "best_checkpoint", "last_checkpoint", "LAST", "BEST"]

LAST = "last.pt"
BEST = "best.pt"


class AtomicSaver:
    """Ignite ``save_handler``: ``torch.save`` to ``dirname/filename`` atomically, on rank 0 only.

    Args:
        dirname: output folder.
        filename: fixed file name (``None``: the name Ignite proposes).
    """

    def __init__(self, dirname: PathLike, filename: str | None = None) -> None:
        self.dirname = Path(dirname)
        self.filename = filename

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        if idist.get_rank() != 0:
            return
        name = self.filename or filename
        state = checkpoint.get("network")
        if isinstance(state, Mapping):  # never replace a good checkpoint with diverged weights
            try:
                check_finite(state, None)
            except InputError as e:
                raise InputError(None, f"{e.problem}; {name} was not overwritten") from None
        with atomic_output(self.dirname / name) as tmp:
            torch.save(checkpoint, tmp)


class RunRecord:
    """Configuration and provenance of a run, checkpointable (``load_state_dict`` keeps the record).

    Args:
        model: ``ModelConfig.model_dump()``.
        experiment: the resolved experiment config (JSON-compatible).
        version: package version.
        commit: git commit of the code (``None`` when unknown).
        slicing: the training store's slicing (``SlicingConfig`` fields: window, keep rate, slice
            size), so that inference prepares slices as training saw them without the store.
    """

    def __init__(self, model: dict, experiment: dict | None = None, version: str = "", commit: str | None = None,
                 slicing: dict | None = None) -> None:
        self.record = {"model": model, "experiment": experiment or {}, "version": version, "commit": commit,
                       "slicing": dict(slicing or {})}

    def state_dict(self) -> dict[str, Any]:
        """The record."""
        return dict(self.record)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore: a run keeps its own record."""


def last_checkpoint(to_save: Mapping[str, Any], dirname: PathLike, filename: str = LAST) -> Checkpoint:
    """The resumable checkpoint handler; attach to the trainer at ``EPOCH_COMPLETED`` (last of all).

    Args:
        to_save: objects with ``state_dict`` (network, optimizer, lr_scheduler, trainer, rng, ...).
        dirname: run directory.
        filename: file name.
    """
    return Checkpoint(dict(to_save), AtomicSaver(dirname, filename), n_saved=None)


def best_checkpoint(
    to_save: Mapping[str, Any], dirname: PathLike, score_function: Callable[[Engine], float], filename: str = BEST,
    score_name: str = "val_dice",
) -> Checkpoint:
    """The best-model handler; attach to the validator at ``EPOCH_COMPLETED``.

    Args:
        to_save: objects to save (network and :class:`RunRecord`).
        dirname: run directory.
        score_function: higher is better (e.g. the validation Dice).
        filename: file name.
        score_name: name of the score in Ignite's bookkeeping.
    """
    return Checkpoint(dict(to_save), AtomicSaver(dirname, filename), score_function=score_function,
                      score_name=score_name, n_saved=1, include_self=True)
