"""Model benchmark (``make bench-model``).

For SAM-Mix ``compact``, ``lite_medsam`` (the default: packaged LiteMedSAM, LoRA) and ``vit_b`` at 256x256
input (LiteMedSAM's encoder backends, bf16 and ONNX Runtime, are in ``bench_lite.py``):

* parameter counts, total and trainable (``vit_b`` in the paper's setting: LoRA r=8 on a frozen
  encoder, as with a pretrained checkpoint; ``compact`` in its default: encoder trained fully);
* GFLOPs per slice (``torch.utils.flop_counter.FlopCounterMode``; one multiply-add = 2 FLOPs),
  split into classifier / SAM image encoder / the rest (prompts, decoder);
* eval-mode forward latency per slice, unbatched (B=1) and batched (B=8), the best of a few runs
  (the least disturbed by other load on a shared machine).

Writes ``runs/bench/bench_model.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch

from sam_mix_monai.networks import ModelConfig, build_model
from _common import best_time, gemm_peak, sam_mix_gflops  # noqa: E402 (benchmarks/ is on sys.path when run as a script)
from _meta import run_meta  # noqa: E402


def bench(size: str, image_size: int, batch: int, repeats: int, batched_repeats: int) -> dict:
    torch.manual_seed(0)
    mode = "lora" if size != "compact" else "auto"
    # random weights suffice for cost figures (load_pretrained=False: no checkpoint file read)
    net = build_model(ModelConfig(name="sam_mix", size=size, image_size=image_size, encoder_mode=mode),
                      load_pretrained=False).eval()
    total = sum(p.numel() for p in net.parameters())
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    x1 = torch.rand(1, 1, image_size, image_size)
    xb = torch.rand(batch, 1, image_size, image_size)
    flops = sam_mix_gflops(net, x1)
    with torch.no_grad():
        net(x1)  # warm-up
        t1 = best_time(lambda: net(x1), repeats)
        tb = best_time(lambda: net(xb), batched_repeats)
    return {
        "size": size,
        "encoder_mode": mode,
        "params_total_M": total / 1e6,
        "params_trainable_M": trainable / 1e6,
        "params_classifier_M": sum(p.numel() for p in net.classifier.parameters()) / 1e6,
        "gflops_per_slice": flops,
        "latency_unbatched_s_per_slice": t1,
        f"latency_batched_B{batch}_s_per_slice": tb / batch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["compact", "lite_medsam", "vit_b"])
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/bench_model.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"bench_model: torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, load average {load:.2f}"
    )
    print(f"SAM-Mix forward at {args.image_size}x{args.image_size}, eval mode, best of several runs")
    header = (
        f"{'size':8} {'enc mode':8} {'params M':>9} {'train M':>8} {'GFLOP/sl':>9} {'(cls':>7} {'enc':>6} "
        f"{'rest)':>6} {'B=1 s/sl':>9} {f'B={args.batch} s/sl':>9}"
    )
    print(header)
    results = []
    for size in args.sizes:
        small = size == "compact"
        r = bench(size, args.image_size, args.batch, repeats=5 if small else 2, batched_repeats=3 if small else 1)
        results.append(r)
        f = r["gflops_per_slice"]
        print(
            f"{size:8} {r['encoder_mode']:8} {r['params_total_M']:9.2f} {r['params_trainable_M']:8.2f} "
            f"{f['total']:9.2f} {f['classifier']:7.2f} {f['image_encoder']:6.2f} {f['rest']:6.2f} "
            f"{r['latency_unbatched_s_per_slice']:9.3f} {r[f'latency_batched_B{args.batch}_s_per_slice']:9.3f}",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    peak = gemm_peak(dtypes=("fp32",))["fp32"]  # same-run reference: this machine's fp32 matrix-product rate
    print(f"fp32 GEMM peak (torch.mm 2048^2, best of 5): {peak:.0f} GFLOP/s")
    meta = {**run_meta(), "load_average_1min": round(load, 2)}
    args.out.write_text(json.dumps({"meta": meta, "gemm_peak_gflops": peak, "results": results}, indent=2), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
