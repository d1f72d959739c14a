"""What machine a figure was measured on: the CPU model name (results of small-data training and timings
depend on it, so every report names it)."""

from __future__ import annotations

import platform
from pathlib import Path

__all__ = ["cpu_model"]


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU model name (``lscpu``'s "Model name"), else the platform's processor string.

    Args:
        cpuinfo: the text of ``/proc/cpuinfo`` (``None``: read it).
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8")
        except OSError:
            cpuinfo = ""
    for line in cpuinfo.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"
