"""The GPU section skips in one line without CUDA; the speed sections of docs/benchmarks.md render their records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from report_speed import backends_section, default_section, gpu_section  # noqa: E402

META = {"command": "python x.py", "machine": "CPU X", "date": "2026-12-07 03:00 UTC", "load_average_1min": 1.0}


def test_gpu_section_skips_cleanly_without_cuda(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present: the GPU section runs for real (make bench-gpu)")
    out = tmp_path / "gpu.json"
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--out", str(out)],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "no CUDA: GPU section skipped"
    rec = json.loads(out.read_text())
    assert "no CUDA: GPU section skipped." in gpu_section(rec)


def test_speed_sections_render() -> None:
    default = {"meta": META, "checkpoint": None, "gemm_peak_gflops_per_s": 180.0, "cases": {
        "phantom": {"default": {"seconds": 20.0, "runs_s": [19.0, 20.0, 21.0], "backend": "onnxruntime", "encoder_calls": 9,
                                "encoded_slices": 104, "volume_slices": 200, "encoded_per_slice": 0.52,
                                "dice_vs_reference": 0.9},
                    "naive": {"seconds": 240.0, "slices_timed": 8, "extrapolated": True},
                    "speedup_vs_naive": 12.0, "peak_rss_mb": 1500.0, "load_average": 0.5},
        "ircadb_17": {"skipped": "not found"}}}
    text = "\n".join(default_section(default))
    assert "| phantom | 200 | onnxruntime | **20.0** |" in text and "**12.0×**" in text and "ircadb_17: skipped" in text
    assert text.startswith("## The default path") and "--fast" not in text
    fast = "\n".join(default_section({**default, "fast": True}))
    assert fast.startswith("### The same with `--fast`") and "every second slice" in fast and "**20.0**" in fast
    backends = {"meta": META, "int8_check_dice_change": 0.06, "cases": {"ct": {"variants": [
        {"backend": "torch", "dtype": "fp32", "seconds": 10, "encoded_slices": 5, "encoder_calls": 1,
         "dice_vs_reference": 0.95, "dice_vs_eager_fp32": 1.0, "dice_change_vs_eager_fp32": 0.0, "load_average": 1.0}]}}}
    text = "\n".join(backends_section(backends))
    assert "**0.0600**" in text and "| ct | torch | fp32 | 10 | 5 (1) | 0.9500 |" in text
    gpu = {"meta": META, "gpu": "H100", "box": "1,2,3,4,5,6", "rows": [
        {"model": "vit_b", "mode": "fixed box", "dtype": "bf16", "slices_per_s": 50.0, "encoded_slices": 100,
         "seconds": 2.0, "max_memory_gb": 3.0}]}
    assert "| vit_b | fixed box | bf16 | **50.0** | 100 | 2.00 | 3.00 |" in "\n".join(gpu_section(gpu))
