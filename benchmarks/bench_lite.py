"""LiteMedSAM CPU benchmark (part of ``make bench-infer``): encoder backends and a CT file in to mask.

Same process, same thread count, packaged LiteMedSAM weights:

1. **encoder** ms/slice of the TinyViT image encoder (~75 GFLOP per 256 slice, counted with
   ``torch.utils.flop_counter``), at batch 1 and 8: eager fp32, eager bf16 autocast, eager fp32
   channels-last, and ONNX Runtime fp32 (:class:`sam_mix_monai.networks.onnx_encoder.OnnxEncoder`);
   the FLOP rate of each as a share of a same-run GEMM peak (``torch.mm`` 2048^2 of the same dtype;
   fp32 for ONNX Runtime). Goal (issue 10): >= 40 %. ``torch.compile`` is not timed: its inductor
   build takes minutes on 2 cores for every new batch shape.
2. **file in to mask**: a 512x512x200 phantom CT (``.nii.gz``, liver on about half the slices):
   read (``read_volume``), display slices, HU window, the box-prompted LiteMedSAM on every liver
   slice (:mod:`sam_mix_monai.networks.box_prompt`, boxes from the phantom's label, i.e. user boxes;
   encoder on the fastest backend of 1, batches of 8), the mask back onto the grid, NIfTI written.
   Goal: <= 30 s on 2 cores.
3. **naive**: the same weights, eager fp32, batch 1, every one of the 200 slices through encoder +
   decoder (the liver-free ones with a central box), timed on ``--naive-slices`` slices and
   extrapolated to 200, plus the same read / write. Goal: ours >= 3x faster.

Writes ``runs/bench/bench_lite.json``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from sam_mix_monai.data.io import read_volume
from sam_mix_monai.data.phantom import generate_case
from sam_mix_monai.networks import ModelConfig, build_model
from sam_mix_monai.networks.box_prompt import encode_slices, predict_box_mask, prepare_sam_slice
from sam_mix_monai.networks.onnx_encoder import OnnxEncoder
from sam_mix_monai.transforms import HUWindow
from sam_mix_monai.transforms.axial import display_to_ras, ras_to_display
from _common import best_time, count_flops, gemm_peak, write_record  # noqa: E402 (benchmarks/ is on sys.path when run as a script)
from _meta import run_meta  # noqa: E402

DEPTH = 200


def _sam() -> torch.nn.Module:
    return build_model(ModelConfig(name="sam_box", encoder_mode="frozen")).sam.eval()


def bench_encoder(sam: torch.nn.Module, peaks: dict[str, float], batches: tuple[int, ...], repeats: int) -> list[dict]:
    """ms/slice and share of the GEMM peak of each encoder backend."""
    enc = sam.image_encoder
    size = int(enc.img_size)
    x1 = torch.rand(1, 3, size, size)
    gflop = count_flops(lambda: enc(x1))[0] / 1e9
    rows = []

    def row(name: str, dtype: str, b: int, fn) -> None:
        fn()  # warm-up
        s = best_time(fn, repeats) / b
        rate = gflop / s
        rows.append({"backend": name, "dtype": dtype, "batch": b, "ms_per_slice": 1e3 * s, "gflop_per_s": rate,
                     "share_of_gemm_peak": rate / peaks[dtype], "gflop_per_slice": gflop})
        print(f"  {name:<22} {dtype:<5} B={b}: {1e3 * s:8.0f} ms/slice, {rate:6.1f} GFLOP/s, "
              f"{100 * rate / peaks[dtype]:5.1f}% of the {dtype} GEMM peak", flush=True)

    with torch.no_grad():
        for b in batches:
            x = torch.rand(b, 3, size, size)
            row("eager", "fp32", b, lambda: enc(x))
            with torch.autocast("cpu", dtype=torch.bfloat16):
                row("eager autocast", "bf16", b, lambda: enc(x))
            if b == 1:
                enc_cl, x_cl = enc.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
                row("eager channels-last", "fp32", b, lambda: enc_cl(x_cl))
                enc.to(memory_format=torch.contiguous_format)
            ort = OnnxEncoder(enc, batch=b)
            row("onnxruntime", "fp32", b, lambda: ort(x))
    return rows


def _write(mask_display: np.ndarray, like: torch.Tensor, path: Path) -> None:
    arr = np.ascontiguousarray(display_to_ras(mask_display)).astype(np.uint8)
    img = nib.Nifti1Image(arr, np.asarray(like.affine, dtype=np.float64))
    nib.save(img, str(path))


def _tight_box(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    return np.array([cols.min(), rows.min(), cols.max(), rows.max()], dtype=np.float32)


def file_to_mask(sam: torch.nn.Module, ct_path: Path, label_path: Path, out: Path, batch: int) -> dict:
    """Ours: read, window, box-prompted LiteMedSAM on the liver slices (batched encoder), write."""
    t0 = time.perf_counter()
    vol = read_volume(ct_path)
    ct = ras_to_display(np.asarray(vol[0], dtype=np.float32))
    label = ras_to_display(np.asarray(read_volume(label_path)[0]) > 0)
    t_read = time.perf_counter() - t0
    window = HUWindow()
    zs = [z for z in range(ct.shape[0]) if label[z].any()]
    pred = np.zeros(ct.shape, dtype=bool)
    for i in range(0, len(zs), batch):
        chunk = zs[i : i + batch]
        preps = encode_slices(sam, [prepare_sam_slice(np.asarray(window(ct[z])), sam) for z in chunk], batch)
        for z, p in zip(chunk, preps):
            pred[z] = predict_box_mask(sam, p, _tight_box(label[z])).mask
            p.embedding = None
    _write(pred, vol, out)
    total = time.perf_counter() - t0
    dice = 2 * (pred & label).sum() / max(1, pred.sum() + label.sum())
    return {"seconds": total, "read_s": t_read, "liver_slices": len(zs), "dice_vs_label": float(dice)}


def naive(sam: torch.nn.Module, ct_path: Path, label_path: Path, n: int, io_s: float) -> dict:
    """Eager fp32, batch 1, encoder + decoder per slice, on ``n`` slices, extrapolated to every slice."""
    ct = ras_to_display(np.asarray(read_volume(ct_path)[0], dtype=np.float32))
    label = ras_to_display(np.asarray(read_volume(label_path)[0]) > 0)
    window = HUWindow()
    zs = np.linspace(0, ct.shape[0] - 1, n + 1).round().astype(int)
    times = []
    for k, z in enumerate(zs):
        h, w = label[z].shape
        box = _tight_box(label[z]) if label[z].any() else np.array([w / 4, h / 4, 3 * w / 4, 3 * h / 4], dtype=np.float32)
        t0 = time.perf_counter()
        with torch.no_grad():
            predict_box_mask(sam, prepare_sam_slice(np.asarray(window(ct[z])), sam), box)
        if k:  # the first is a warm-up
            times.append(time.perf_counter() - t0)
    per = float(np.mean(times))
    return {"seconds_per_slice": per, "slices_timed": n, "volume_s": per * ct.shape[0] + io_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--naive-slices", type=int, default=6)
    ap.add_argument("--out", default="runs/bench/bench_lite.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    load = os.getloadavg()
    print(f"bench_lite: torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load[0]:.2f}", flush=True)
    peaks = gemm_peak()
    print(f"GEMM peak: fp32 {peaks['fp32']:.0f}, bf16 {peaks['bf16']:.0f} GFLOP/s", flush=True)
    sam = _sam()
    res: dict = {"meta": {**run_meta(a.threads), "load_average_start": list(load), "gemm_peak_gflops_per_s": peaks}}
    print("LiteMedSAM image encoder (256 px):", flush=True)
    res["encoder"] = bench_encoder(sam, peaks, tuple(a.batches), a.repeats)
    best = min((r for r in res["encoder"] if r["batch"] == max(a.batches)), key=lambda r: r["ms_per_slice"])
    res["volume_backend"] = {k: best[k] for k in ("backend", "dtype", "batch")}
    with tempfile.TemporaryDirectory(prefix="bench_lite_") as tmp_s:
        tmp = Path(tmp_s)
        case = generate_case(0, 0, "a", 512, DEPTH, orientation="LPS")
        ct_path, label_path = tmp / "ct.nii.gz", tmp / "label.nii.gz"
        nib.save(nib.Nifti1Image(case.image, case.affine), str(ct_path))
        nib.save(nib.Nifti1Image(case.label.astype(np.uint8), case.affine), str(label_path))
        fast = _sam()
        if best["backend"] == "onnxruntime":
            fast.image_encoder = OnnxEncoder(fast.image_encoder, batch=best["batch"])
        if best["dtype"] == "bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                ours = file_to_mask(fast, ct_path, label_path, tmp / "mask.nii.gz", best["batch"])
        else:
            ours = file_to_mask(fast, ct_path, label_path, tmp / "mask.nii.gz", best["batch"])
        print(f"file in to mask, 512x512x{DEPTH} ({ours['liver_slices']} liver slices, {best['backend']} {best['dtype']} "
              f"B={best['batch']}): {ours['seconds']:.1f} s (goal <= 30 s); Dice vs label {ours['dice_vs_label']:.3f}", flush=True)
        nv = naive(sam, ct_path, label_path, a.naive_slices, ours["read_s"])
        print(f"naive eager fp32 B=1, every slice: {nv['seconds_per_slice']:.2f} s/slice -> {nv['volume_s']:.0f} s per volume "
              f"(extrapolated from {nv['slices_timed']} slices); ratio {nv['volume_s'] / ours['seconds']:.1f}x (goal >= 3x)",
              flush=True)
    res.update(file_to_mask=ours, naive=nv, speedup_vs_naive=nv["volume_s"] / ours["seconds"])
    write_record(res, a.out)


if __name__ == "__main__":
    main()
