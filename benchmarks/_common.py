"""Helpers shared by the benchmark scripts (run as ``python benchmarks/bench_*.py``)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

GEMM_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def best_time(fn: Callable[[], object], repeats: int = 3) -> float:
    """Best wall time in seconds of ``repeats`` runs of ``fn`` (the least disturbed by other load)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def count_flops(fn: Callable[[], object]) -> tuple[float, dict[str, float]]:
    """FLOPs of one call of ``fn`` under ``torch.no_grad()``, counted by ``FlopCounterMode``.

    One multiply-add counts as 2 FLOPs; only the operators ``FlopCounterMode`` knows (matrix
    products, convolutions, attention) are counted, element-wise work is not.

    Returns:
        ``(total, per_module)``: total FLOPs and FLOPs per module path (e.g. ``"SAMMix.classifier"``).
    """
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    per_module = {k: float(sum(v.values())) for k, v in counter.get_flop_counts().items()}
    return float(counter.get_total_flops()), per_module


def sam_mix_gflops(net: torch.nn.Module, x: torch.Tensor) -> dict[str, float]:
    """GFLOPs of one SAM-Mix forward pass on ``x``: total, classifier, SAM image encoder, the rest."""
    total, per_module = count_flops(lambda: net(x))
    cls = per_module.get("SAMMix.classifier", 0.0)
    enc = per_module.get("SAMMix.sam.image_encoder", 0.0)
    rest = total - cls - enc
    return {"total": total / 1e9, "classifier": cls / 1e9, "image_encoder": enc / 1e9, "rest": rest / 1e9}


def gemm_peak(n: int = 2048, dtypes: tuple[str, ...] = ("fp32", "bf16"), repeats: int = 5) -> dict[str, float]:
    """Achievable matrix-product rate: ``torch.mm`` of two ``n x n`` matrices, best of ``repeats``.

    Runs on the current torch thread count (set it before calling).

    Returns:
        GFLOP/s per dtype name (``2 n^3`` FLOPs per product).
    """
    out = {}
    for name in dtypes:
        g = torch.Generator().manual_seed(0)
        a = torch.randn(n, n, generator=g).to(GEMM_DTYPES[name])
        b = torch.randn(n, n, generator=g).to(GEMM_DTYPES[name])
        torch.mm(a, b)  # warm-up
        out[name] = 2.0 * n**3 / best_time(lambda: torch.mm(a, b), repeats) / 1e9
    return out


def write_record(res: dict, out: str | Path) -> Path:
    """Stamp the end-of-run load average into ``res["meta"]`` and write the record as JSON."""
    res["meta"]["load_average_end"] = list(os.getloadavg())
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1))
    print(f"wrote {path}")
    return path
