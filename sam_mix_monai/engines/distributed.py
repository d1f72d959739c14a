"""Distributed execution through ``ignite.distributed`` (no home-made process groups).

The same entry function runs

* in the current process (one process, no process group);
* under ``torchrun --nproc_per_node=K`` (Ignite reads the environment): NCCL on GPU, gloo on CPU;
* in ``K`` processes spawned here (``nproc_per_node=K``), e.g. for a 2-process gloo check on CPU.

Example:
    >>> launch(worker, cfg, nproc_per_node=2, device="cpu")  # doctest: +SKIP
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import sys
from typing import Any, Callable

import ignite.distributed as idist
import torch
from torch import nn

__all__ = ["backend_for", "launch", "rank", "world_size", "is_main", "barrier", "wrap_model", "resolve_device", "free_port"]


def backend_for(device: str | torch.device) -> str:
    """``nccl`` for CUDA, ``gloo`` for CPU."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def resolve_device(device: str = "auto") -> torch.device:
    """The device of this process: ``cuda:<local rank>`` or ``cpu`` (``auto``: CUDA when available)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("train.device is cuda but no CUDA device is available")
        return idist.device() if idist.get_world_size() > 1 else torch.device("cuda")
    return torch.device("cpu")


def free_port() -> int:
    """A TCP port that is free right now (for the rendezvous of spawned processes)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(fn: Callable[..., Any], *args: Any, nproc_per_node: int | None = None, device: str = "auto") -> None:
    """Run ``fn(local_rank, *args)`` in every process of the job.

    Args:
        fn: the worker (module-level, so that spawned processes can import it).
        args: its arguments (picklable).
        nproc_per_node: spawn this many processes here (``None`` or 1: the current process, or the
            processes ``torchrun`` started, detected from ``WORLD_SIZE``).
        device: ``auto``, ``cpu`` or ``cuda``; picks the backend.
    """
    dev = "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    backend = backend_for(dev)
    if nproc_per_node is not None and nproc_per_node > 1:
        with idist.Parallel(backend=backend, nproc_per_node=nproc_per_node, master_port=free_port()) as parallel:
            parallel.run(_run_then_release, fn, True, *args)
    elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
        with idist.Parallel(backend=backend) as parallel:
            parallel.run(_run_then_release, fn, False, *args)
    else:
        with idist.Parallel(backend=None) as parallel:
            if logging.getLogger("sam_mix_monai").getEffectiveLevel() > logging.INFO:  # sam-mix -q
                logging.getLogger("ignite.distributed.launcher.Parallel").setLevel(logging.WARNING)  # "Run ... in 1 processes"
            parallel.run(fn, *args)


def _run_then_release(local_rank: int, fn: Callable[..., Any], leave: bool, *args: Any) -> None:
    """Run ``fn`` in one process of a multi-process job, then release what it held before teardown.

    Freeing torch objects during interpreter finalization can abort a process (SIGABRT,
    "terminate called without an active exception"): gloo work objects and autograd threads still
    hold tensors whose release needs the interpreter being torn down (pytorch/pytorch#190489,
    #179291). We saw it in about 1 of 20 two-process CPU test runs, at the end of a run. So every
    rank collects its garbage (DDP models and engines sit in reference cycles) while the process
    group is alive and waits for the others. A child spawned by :func:`launch` (``leave``) has
    nothing left to do: it destroys the group itself and ends with ``os._exit(0)``, as
    ``multiprocessing``'s forked children do, skipping finalization. Exceptions in ``fn`` propagate
    unchanged (torch's spawn reports them to the parent).
    """
    fn(local_rank, *args)
    gc.collect()
    barrier()
    if leave:
        idist.finalize()  # destroy_process_group; Ignite's own finalize afterwards is a no-op
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def rank() -> int:
    """Global rank (0 without a process group)."""
    return idist.get_rank()


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return idist.get_world_size()


def is_main() -> bool:
    """Whether this is rank 0 (the only one that writes files)."""
    return idist.get_rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op for one process)."""
    if idist.get_world_size() > 1:
        idist.barrier()


def wrap_model(net: nn.Module, device: torch.device, sync_bn: bool = True) -> nn.Module:
    """Move to ``device``; wrap in ``DistributedDataParallel`` when there are several processes.

    Unused parameters are allowed (SAM's prompt encoder has point embeddings a box prompt never
    uses); synchronised batch norm is used on CUDA only (``SyncBatchNorm`` raises on CPU tensors in
    torch 2.15; on CPU each rank's batch norm sees its part of the batch). Train through the wrapper's
    ``forward`` (not its ``module``): DDP prepares the gradient reduction there.
    """
    net = net.to(device)
    if idist.get_world_size() <= 1:
        return net
    return idist.auto_model(net, sync_bn=sync_bn and device.type == "cuda", find_unused_parameters=True)
