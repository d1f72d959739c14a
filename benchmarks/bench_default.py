"""The default inference path, file in to mask written, as a user calls it (part of ``make bench``).

For each CT: ``Segmenter()`` (the packaged default liver model in volume prompt mode, what
``sam-mix infer CT -o OUT`` runs; ``--checkpoint``: another SAM-Mix) built once in a fresh process,
then ``segment(path, "mask.nii.gz")`` timed ``--runs`` times (median reported): reading, the classifier
pass, the encoder on its default backend over the liver's range, decoding, the mask written. With
``--box`` the pretrained LiteMedSAM segments from the reference mask's tight 3D box instead (the box
path; ``--fast``: ``Segmenter(fast=True)``, what ``sam-mix infer --fast`` runs). CTs:

* ``phantom``: a synthetic 512x512x200 CT with liver on about 100 slices (``.nii.gz``, LPS header);
* ``ircadb_07``, ``ircadb_17``: ``../shared/data/real`` (skipped with a note when absent).

Beside each, measured in the same run: the **naive loop** (the same pretrained LiteMedSAM, eager fp32,
batch 1, encoder + decoder on every slice of the volume, timed on ``--naive-slices`` evenly spaced
slices and extrapolated to all of them, ``0``: every slice), the ``torch.mm`` 2048^2 fp32 peak, the
encoder calls per slice of the volume (:class:`~sam_mix_monai.networks.encoder_backend.CountingEncoder`),
the peak RSS of the process that built the model and segmented (``VmHWM``: each CT runs in a fresh
process), the CPU model, the load average and the date.

Writes ``runs/bench/bench_default.json``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from _common import gemm_peak, write_record  # noqa: E402 (benchmarks/ is on sys.path when run as a script)
from _meta import run_meta  # noqa: E402
from _real import RealCT, dice, load_real, reference_box  # noqa: E402


def phantom_ct(folder: Path, size: int, depth: int) -> RealCT:
    """The synthetic CT as ``.nii.gz`` (LPS header) with its label and known liver box."""
    from sam_mix_monai.data.phantom import generate_case

    case = generate_case(0, 0, "a", size, depth, orientation="LPS")
    path = folder / "phantom.nii.gz"
    nib.save(nib.Nifti1Image(case.image, case.affine), str(path))
    ref = np.asarray(case.label) > 0
    return RealCT("phantom", path, ref, reference_box(ref))


def _encoder_owner(seg) -> torch.nn.Module:
    sam_mix = getattr(seg.predictor, "sam_mix", None) if seg.predictor is not None else None
    return sam_mix.sam if sam_mix is not None else seg.box_sam


def default_path(ct: RealCT, checkpoint: str | None, runs: int, out: Path, box: bool = False, threads: int = 2,
                 fast: bool = False) -> dict:
    """Median wall time of ``Segmenter.segment`` (file in, mask written), what it encoded, its peak RSS.

    Meant to run in a fresh process (:func:`_in_child`): the peak RSS is then this CT's alone.
    """
    from sam_mix_monai import Segmenter
    from sam_mix_monai.networks.encoder_backend import CountingEncoder

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    seg = Segmenter(checkpoint, device="cpu", fast=fast)
    sam = _encoder_owner(seg)
    setup = time.perf_counter() - t0  # model load + (first time only) the encoder export
    counter = CountingEncoder(sam.image_encoder)
    sam.image_encoder = counter
    box = ct.box if box else None
    times, mask = [], None
    for _ in range(runs):
        counter.calls = counter.slices = 0
        t0 = time.perf_counter()
        img = seg.segment(ct.path, out / f"{ct.name}_liver.nii.gz", box=box)
        times.append(time.perf_counter() - t0)
        mask = np.asarray(img.dataobj) > 0
    depth = int(ct.reference.shape[2])
    return {"seconds": statistics.median(times), "runs_s": times, "setup_s": setup, "backend": seg.encoder_backend,
            "box": box, "encoder_calls": counter.calls, "encoded_slices": counter.slices, "volume_slices": depth,
            "encoded_per_slice": counter.slices / depth, "dice_vs_reference": dice(mask, ct.reference),
            "peak_rss_mb": _vm_hwm_mb()}


def _vm_hwm_mb() -> float:
    """This process's peak RSS in MB (``VmHWM``; getrusage's ru_maxrss carries a parent's peak over fork + exec)."""
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\s*(\d+)", f.read()).group(1)) / 1024


def _in_child(*args) -> dict:
    """:func:`default_path` in a fresh (spawned) process."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(default_path, args)


def naive_loop(ct: RealCT, n: int) -> dict:
    """Eager fp32 LiteMedSAM, batch 1, encoder + decoder per slice (reference box or a central one)."""
    from sam_mix_monai.data.io import read_volume
    from sam_mix_monai.inference.box3d import pretrained_box_sam
    from sam_mix_monai.inference.geometry import AxialGeometry
    from sam_mix_monai.networks.box_prompt import predict_box_mask, prepare_sam_slice

    sam = pretrained_box_sam()
    t0 = time.perf_counter()
    vol = read_volume(ct.path)
    arr = np.asarray(vol[0], dtype=np.float32)
    geo = AxialGeometry(np.asarray(vol.affine, dtype=np.float64), arr.shape)
    read_s = time.perf_counter() - t0
    ref = geo.read_slab(ct.reference.astype(np.uint8), 0, geo.depth) > 0
    zs = range(geo.depth) if n <= 0 else np.linspace(0, geo.depth - 1, n).round().astype(int)
    times = []
    for z in zs:
        t1 = time.perf_counter()
        img = np.clip(geo.read_slab(arr, int(z), int(z) + 1)[0], -160, 240)
        h, w = img.shape
        if ref[z].any():
            rows, cols = np.nonzero(ref[z])
            box = (cols.min(), rows.min(), cols.max(), rows.max())
        else:
            box = (w / 4, h / 4, 3 * w / 4, 3 * h / 4)
        with torch.no_grad():
            predict_box_mask(sam, prepare_sam_slice(img, sam), box)
        times.append(time.perf_counter() - t1)
    per = float(np.mean(times))
    return {"seconds_per_slice": per, "slices_timed": len(times), "volume_slices": geo.depth,
            "seconds": read_s + per * geo.depth, "extrapolated": n > 0 and len(times) < geo.depth}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="a SAM-Mix checkpoint (default: the packaged default liver model)")
    ap.add_argument("--box", action="store_true", help="the box path: the pretrained LiteMedSAM from the reference 3D box")
    ap.add_argument("--cases", nargs="+", default=["phantom", "ircadb_07", "ircadb_17"])
    ap.add_argument("--fast", action="store_true", help="sam-mix infer --fast (bf16 where native, every second thin slice)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--naive-slices", type=int, default=8, help="slices the naive loop times (0: every slice)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--depth", type=int, default=200)
    ap.add_argument("--out", default=None, help="default: runs/bench/bench_default.json (bench_default_fast.json with --fast)")
    a = ap.parse_args()
    a.out = a.out or f"runs/bench/bench_default{'_fast' if a.fast else ''}.json"
    torch.set_num_threads(a.threads)
    res: dict = {"meta": {**run_meta(a.threads), "load_average_start": list(os.getloadavg())},
                 "checkpoint": a.checkpoint, "box": a.box, "fast": a.fast, "mode": "box" if a.box else "volume prompt",
                 "cases": {}}
    res["gemm_peak_gflops_per_s"] = gemm_peak(dtypes=("fp32",))["fp32"]
    print(f"torch.mm 2048^2 fp32 peak: {res['gemm_peak_gflops_per_s']:.0f} GFLOP/s", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_default_") as tmp_s:
        tmp = Path(tmp_s)
        for name in a.cases:
            ct = phantom_ct(tmp, a.size, a.depth) if name == "phantom" else load_real(name)
            if ct is None:
                print(f"{name}: not found under ../shared/data/real: skipped", flush=True)
                res["cases"][name] = {"skipped": "not found under ../shared/data/real"}
                continue
            ours = _in_child(ct, a.checkpoint, a.runs, tmp, a.box, a.threads, a.fast)
            rss = ours["peak_rss_mb"]
            nv = naive_loop(ct, a.naive_slices)
            row = {"default": ours, "naive": nv, "speedup_vs_naive": nv["seconds"] / ours["seconds"],
                   "peak_rss_mb": rss, "load_average": os.getloadavg()[0]}
            res["cases"][name] = row
            print(f"{name} ({ct.reference.shape}, {int(ct.reference.any(axis=(0, 1)).sum())} liver slices): default "
                  f"{ours['seconds']:.1f} s (median of {a.runs}, {ours['backend']}), naive {nv['seconds']:.0f} s -> "
                  f"{row['speedup_vs_naive']:.1f}x; encoder {ours['encoded_slices']} slices / {ours['volume_slices']} "
                  f"in {ours['encoder_calls']} calls; Dice {ours['dice_vs_reference']:.3f}; peak RSS {rss:.0f} MB; "
                  f"load {row['load_average']:.1f}", flush=True)
            del ct
    write_record(res, a.out)


if __name__ == "__main__":
    main()
