"""Splitting cases over processes started by ``torchrun`` (no process group needed: cases are independent).

``torchrun --nproc_per_node=K sam-mix infer ...`` starts K processes with ``RANK``, ``WORLD_SIZE``
and ``LOCAL_RANK`` set; rank ``r`` segments ``cases[r::K]`` and, on CUDA, uses GPU ``LOCAL_RANK``.

Example:
    >>> shard(list("abcde"), rank=1, world_size=2)
    ['b', 'd']
"""

from __future__ import annotations

import os
from typing import Sequence, TypeVar

import torch

from sam_mix_monai.utils.errors import InputError

__all__ = ["dist_info", "shard", "rank_device", "resolve_device"]

T = TypeVar("T")


def dist_info() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the ``torchrun`` environment (``(0, 1, 0)`` without it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"inconsistent RANK={rank} / WORLD_SIZE={world}")
    return rank, world, local


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """This rank's share of ``items``: every ``world_size``-th item starting at ``rank``."""
    return list(items[rank::world_size])


def rank_device(device: str, local_rank: int) -> torch.device:
    """The device of this process: ``cuda:<local_rank>`` for ``cuda`` (one GPU per process), else ``device``."""
    if device == "cuda":
        return torch.device(f"cuda:{local_rank % max(1, torch.cuda.device_count())}")
    return torch.device(device)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The device named by a user (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``), checked to exist.

    ``auto`` picks CUDA, then MPS, then the CPU; plain ``cuda`` is GPU ``local_rank`` under ``torchrun``.

    Raises:
        InputError: an unknown name, or a device this machine does not have.
    """
    name = str(name).strip().lower()
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps is not None and mps.is_available())
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    kind, _, index = name.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (index and (kind != "cuda" or not index.isdigit())):
        raise InputError(None, f"--device {name!r}: expected auto, cpu, cuda, cuda:N or mps")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise InputError(None, f"--device {name}: no CUDA device available")
        if index and int(index) >= torch.cuda.device_count():
            raise InputError(None, f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return torch.device(name) if index else rank_device("cuda", local_rank)
    if kind == "mps" and not has_mps:
        raise InputError(None, "--device mps: no Apple MPS device available")
    return torch.device(kind)
