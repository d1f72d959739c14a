"""Run metadata every benchmark JSON carries: command, date, machine, software, load."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from sam_mix_monai.utils.machine import cpu_model

ROOT = Path(__file__).resolve().parents[1]


def _memory_gb() -> float | None:
    try:
        kb = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines() if ln.startswith("MemTotal"))
        return round(kb / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_meta(threads: int | None = None) -> dict:
    """Command line, UTC time, CPU model and count, RAM, GPU (if any), torch, threads, load average, commit."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{cpu_model()}, {os.cpu_count()} logical CPUs, {_memory_gb()} GB RAM" + (f", GPU {gpu}" if gpu else ", no GPU"),
        "torch": torch.__version__,
        "threads": threads if threads is not None else torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "commit": _git_commit(),
    }
