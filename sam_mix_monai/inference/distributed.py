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

__all__ = ["dist_info", "shard", "rank_device"]

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
