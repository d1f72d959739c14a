"""One precision vocabulary for training, evaluation and inference: ``fp32``, ``fp16``, ``bf16``.

* ``fp32``: no autocast;
* ``fp16``: float16 autocast (CUDA; the trainer adds gradient scaling);
* ``bf16``: bfloat16 autocast (CUDA, and CPUs with AVX-512 BF16 / AMX).

``amp``, the former training name of ``fp16``, is accepted by :func:`normalize_precision` (old
configs and checkpoints) and means exactly ``fp16``.

Example:
    >>> resolve_precision("amp", "cpu")
    'fp32'
    >>> with autocast("bf16", "cpu"):
    ...     pass
"""

from __future__ import annotations

import contextlib
import logging

import torch

__all__ = ["PRECISIONS", "normalize_precision", "resolve_precision", "autocast"]

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16")
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
_ALIASES = {"amp": "fp16"}


def normalize_precision(precision: str) -> str:
    """The canonical name of a precision (``amp`` -> ``fp16``).

    Raises:
        ValueError: not one of :data:`PRECISIONS` (or ``amp``).
    """
    name = _ALIASES.get(str(precision), str(precision))
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return name


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """The precision that actually runs on ``device``: ``fp16`` falls back to ``fp32`` off CUDA.

    Training, validation and the final evaluation all go through this, so one run scores its test
    set at the precision it trained and validated at.
    """
    name = normalize_precision(precision)
    dev = torch.device(device)
    if name == "fp16" and dev.type != "cuda":
        logger.warning("precision fp16 needs CUDA; using fp32 on %s", dev)
        return "fp32"
    return name


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX): elsewhere bf16 autocast is emulated.

    Emulated bf16 is about 10x slower than fp32 (measured on an AMD EPYC with AVX2 only), so the options
    that trade exactness for speed pick bf16 on a CPU only where this holds.

    Args:
        cpuinfo: the text of ``/proc/cpuinfo`` (``None``: read it; a system without it counts as no).
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            return False
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``precision`` on ``device`` (a no-op context for ``fp32``)."""
    name = normalize_precision(precision)
    if name == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=_DTYPES[name])
