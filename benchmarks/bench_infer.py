"""Volume inference benchmark (``make bench-infer``).

On one 512x512x200 phantom CT (``.nii.gz``), same machine, same process, same thread count:

1. **ours, compact** (SAM-Mix compact at 256, random weights, classifier gate off so that every
   slice goes through SAM and the upsampling: the slowest case): the project's volume inference,
   file in to mask written (read, HU checks, streaming batched slices, mapping back, 3D largest
   component, NIfTI write), timed in-process, fp32 and bf16; the random network's mask fills half the
   volume, so clean-up and writing are also timed on a liver-sized mask (the phantom's label) for the
   figure a trained model gives; and the ``sam-mix infer`` command in a subprocess (Python start-up
   and imports included);
2. **ours, vit_b** (SAM-Mix vit_b at 256, ResNet-38 classifier, LoRA): timed on a sample of
   ``--vit-slices`` slices (a slab of the same volume) and extrapolated to 200 slices, plus the
   per-volume I/O overhead measured in 1; in fp32 and with bf16 autocast (``--precision bf16``);
3. **naive**: ``segment_anything.SamPredictor`` per slice, ``set_image`` at 1024 (the 512 slice
   upscaled, as SAM does) + ``predict`` with the same box (the CAM box of our run, scaled to the
   slice), same SAM weights (the 256 model's SAM, position tables resized to 1024), timed on
   ``--naive-slices`` slices and reported per slice and per 200-slice volume;
4. **peak memory** (run first): ``sam-mix infer`` (compact) on a 512x512x1000 ``.nii.gz`` (the
   200-slice phantom stacked 5 times) in a subprocess, its peak RSS (``VmHWM``).

Goals (issue 5): ours >= 30x faster than naive for vit_b on CPU; compact file-in to mask-written
<= 15 s on 2 cores; peak RSS <= 2 GB for the 1000-slice volume.

Writes ``runs/bench/bench_infer.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from sam_mix_monai.data.io import read_volume
from sam_mix_monai.data.phantom import generate_case
from sam_mix_monai.inference import Case, SliceInferer, SlicePredictor, keep_largest_component, segment_case, write_mask
from sam_mix_monai.inference.geometry import AxialGeometry
from sam_mix_monai.networks import ModelConfig, adapt_sam_state_dict, build_model, build_sam
from sam_mix_monai.networks.lora import is_lora_key
from sam_mix_monai.transforms import HUWindow

DEPTH = 200


def _save(path: Path, arr: np.ndarray, affine: np.ndarray) -> Path:
    img = nib.Nifti1Image(arr, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    nib.save(img, str(path))
    return path


def _model(size: str) -> tuple[torch.nn.Module, ModelConfig]:
    torch.manual_seed(0)
    cfg = ModelConfig(name="sam_mix", size=size, image_size=256, cls_threshold=0.0,
                      encoder_mode="lora" if size != "compact" else "auto")
    return build_model(cfg, load_pretrained=False).eval(), cfg


def bench_ours(net: torch.nn.Module, path: Path, out: Path, batch: int, precision: str = "fp32") -> dict:
    """File in to mask written, in-process (after a warm-up on a few slices)."""
    pred = SlicePredictor(net, precision=precision)
    inferer = SliceInferer(batch_size=batch)
    inferer(read_volume(path)[..., : 2 * batch], pred)  # warm-up: allocator, kernels
    t0 = time.perf_counter()
    res = segment_case(Case("bench", path), pred, inferer, out)
    total = time.perf_counter() - t0
    sm = res.summary
    return {"seconds_per_volume": total, "slices_per_s": DEPTH / total, "seconds_read": sm["seconds_read"],
            "seconds_slices": sm["seconds_slices"], "seconds_postprocess": sm["seconds_postprocess"],
            "seconds_outside_slices": total - sm["seconds_slices"]}


def bench_liver_postprocess(label: np.ndarray, affine: np.ndarray, reference: Path, out: Path) -> float:
    """Clean-up and writing of a liver-sized mask (the phantom's own liver label): what a trained model costs."""
    mask = np.asfortranarray((label > 0).astype(np.uint8))
    t0 = time.perf_counter()
    keep_largest_component(mask)
    write_mask(mask, affine, out, reference)
    return time.perf_counter() - t0


def bench_cli(ckpt: Path, path: Path, out: Path, threads: int) -> dict:
    """``sam-mix infer`` in a subprocess, with start-up; peak RSS of that process."""
    # Peak RSS = VmHWM of the child's own address space. (getrusage's ru_maxrss would not do: Linux
    # carries the parent's peak over fork + exec into the child's figure.)
    code = ("import re, sys, time; t = time.perf_counter(); from sam_mix_monai.cli.main import main; "
            "rc = main(sys.argv[1:]); hwm = re.search(r'VmHWM:\\s*(\\d+)', open('/proc/self/status').read()).group(1); "
            "print('RESULT', rc, time.perf_counter() - t, hwm)")
    cmd = [sys.executable, "-c", code, "-q", "infer", str(path), "--checkpoint", str(ckpt), "--output", str(out),
           "--no-progress", "--device", "cpu", "--threads", str(threads)]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT")]
    if res.returncode != 0 or not line:
        raise RuntimeError(f"sam-mix infer failed: {res.stderr[-2000:]}")
    _, rc, inside, rss_kb = line[0].split()
    return {"wall_seconds": wall, "seconds_after_start": float(inside), "peak_rss_mb": int(rss_kb) / 1024}


def bench_vit_sample(net: torch.nn.Module, path: Path, n: int, batch: int, precision: str = "fp32") -> dict:
    """Seconds per slice of the vit_b network on an ``n``-slice slab (reading + mapping back included)."""
    vol = read_volume(path)
    sub = vol[..., DEPTH // 2 - n // 2: DEPTH // 2 - n // 2 + n]
    inferer = SliceInferer(batch_size=batch)
    pred = SlicePredictor(net, precision=precision)
    inferer(sub[..., :batch], pred)  # warm-up
    t0 = time.perf_counter()
    inferer(sub, pred)
    return {"sample_slices": n, "precision": precision, "seconds_per_slice": (time.perf_counter() - t0) / n}


def naive_sam(net: torch.nn.Module, size: str) -> torch.nn.Module:
    """The 256 model's SAM weights in an official 1024 SAM (position tables resized), no LoRA."""
    sam = build_sam(size, 1024)
    state = {k: v for k, v in net.sam.state_dict().items() if not is_lora_key(k)}
    sam.load_state_dict(adapt_sam_state_dict(state, sam.state_dict()))
    return sam.eval()


def bench_naive(net: torch.nn.Module, size: str, path: Path, n: int) -> dict:
    """``SamPredictor`` per slice: ``set_image`` at 1024 + ``predict`` with our CAM box."""
    from segment_anything import SamPredictor

    sam = naive_sam(net, size)
    predictor = SamPredictor(sam)
    vol = read_volume(path)
    arr = vol.as_tensor()[0].numpy()
    geo = AxialGeometry(np.asarray(vol.affine), arr.shape)
    z = np.linspace(DEPTH * 0.35, DEPTH * 0.65, n).round().astype(int)
    win = HUWindow()
    times = []
    for k in z:
        sl = np.asarray(win(geo.read_slab(arr, int(k), int(k) + 1).astype(np.float32)))[0]  # (512, 512) in [0, 1]
        with torch.no_grad():
            x = torch.nn.functional.interpolate(torch.from_numpy(sl)[None, None], size=(256, 256), mode="bilinear")
            box = net(x)["boxes"][0].numpy() * (sl.shape[1] / 256.0)
        rgb = np.repeat((sl * 255).round().astype(np.uint8)[..., None], 3, axis=2)
        t0 = time.perf_counter()
        predictor.set_image(rgb)
        predictor.predict(box=box, multimask_output=True)
        times.append(time.perf_counter() - t0)
    per = float(np.mean(times))
    return {"sample_slices": n, "seconds_per_slice": per, "seconds_per_volume_extrapolated": per * DEPTH}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="torch threads, ours and naive alike (default 2)")
    ap.add_argument("--batch", type=int, default=8, help="slices per forward pass (compact)")
    ap.add_argument("--vit-batch", type=int, default=2, help="slices per forward pass (vit_b)")
    ap.add_argument("--vit-slices", type=int, default=8, help="vit_b slices timed (extrapolated to 200)")
    ap.add_argument("--vit-precision", nargs="+", default=["fp32", "bf16"], help="vit_b autocast precisions timed")
    ap.add_argument("--naive-slices", type=int, default=5, help="naive slices timed per size")
    ap.add_argument("--memory-depth", type=int, default=1000, help="slices of the peak-memory volume (0: skip)")
    ap.add_argument("--out", default="runs/bench/bench_infer.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    load = os.getloadavg()[0]
    print(f"bench_infer: torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, "
          f"{torch.get_num_threads()} torch threads, load average {load:.2f}", flush=True)
    res: dict = {"meta": {"torch": torch.__version__, "threads": a.threads, "load_average": load, "depth": DEPTH}}
    with tempfile.TemporaryDirectory(prefix="bench_infer_") as tmp_s:
        tmp = Path(tmp_s)
        case = generate_case(0, 0, "a", 512, DEPTH, orientation="LPS")
        vol_path = _save(tmp / "ct.nii.gz", case.image, case.affine)
        print(f"phantom 512x512x{DEPTH} written ({vol_path.stat().st_size / 1e6:.0f} MB .nii.gz)", flush=True)

        compact, cfg = _model("compact")
        ckpt = tmp / "compact.pt"
        torch.save({"model": compact.state_dict(), "model_config": cfg.model_dump()}, ckpt)
        if a.memory_depth:
            reps = int(np.ceil(a.memory_depth / DEPTH))
            ax = AxialGeometry(case.affine, case.image.shape).axis
            big = np.concatenate([case.image] * reps, axis=ax)
            big = big[(slice(None),) * ax + (slice(0, a.memory_depth),)]
            big_path = _save(tmp / "ct_long.nii.gz", big, case.affine)
            del big
            mem = bench_cli(ckpt, big_path, tmp / "out_mem", a.threads)
            big_path.unlink()
            res["memory"] = {"depth": a.memory_depth, **mem}
            print(f"peak RSS, sam-mix infer compact on 512x512x{a.memory_depth} .nii.gz: {mem['peak_rss_mb']:.0f} MB "
                  f"({mem['wall_seconds']:.0f} s)", flush=True)

        res["compact"] = {}
        for precision in ("fp32", "bf16"):
            r = bench_ours(compact, vol_path, tmp / f"out_{precision}", a.batch, precision)
            res["compact"][f"ours_{precision}"] = r
            print(f"ours compact {precision}: {r['seconds_per_volume']:.1f} s/volume file-in to mask-written "
                  f"({r['slices_per_s']:.1f} slices/s; read {r['seconds_read']:.1f} s, slices {r['seconds_slices']:.1f} s, "
                  f"clean-up {r['seconds_postprocess']:.1f} s, every slice through SAM, volume-filling random mask)",
                  flush=True)
        post = bench_liver_postprocess(case.label, case.affine, vol_path, tmp / "liver_liver.nii.gz")
        for precision in ("fp32", "bf16"):
            r = res["compact"][f"ours_{precision}"]
            r["seconds_per_volume_liver_mask"] = r["seconds_read"] + r["seconds_slices"] + post
        res["compact"]["liver_mask_postprocess_and_write_s"] = post
        print(f"  with a liver-sized mask (clean-up + write {post:.1f} s): fp32 "
              f"{res['compact']['ours_fp32']['seconds_per_volume_liver_mask']:.1f} s, bf16 "
              f"{res['compact']['ours_bf16']['seconds_per_volume_liver_mask']:.1f} s per volume", flush=True)
        cli_c = bench_cli(ckpt, vol_path, tmp / "out_cli", a.threads)
        res["compact"]["cli_fp32"] = cli_c
        print(f"  sam-mix infer command (fp32): {cli_c['wall_seconds']:.1f} s with interpreter start-up, "
              f"peak RSS {cli_c['peak_rss_mb']:.0f} MB", flush=True)
        overhead = res["compact"]["ours_fp32"]["seconds_outside_slices"]  # read, checks, clean-up, writing
        naive_c = bench_naive(compact, "compact", vol_path, a.naive_slices)
        res["compact"]["naive"] = naive_c
        res["compact"]["speedup"] = naive_c["seconds_per_volume_extrapolated"] / res["compact"]["ours_fp32"]["seconds_per_volume"]
        print(f"naive compact: {naive_c['seconds_per_slice']:.3f} s/slice -> "
              f"{naive_c['seconds_per_volume_extrapolated']:.0f} s/volume; speed-up {res['compact']['speedup']:.1f}x (fp32)",
              flush=True)
        del compact

        vit, _ = _model("vit_b")
        naive_v = bench_naive(vit, "vit_b", vol_path, a.naive_slices)
        print(f"naive vit_b: {naive_v['seconds_per_slice']:.1f} s/slice -> "
              f"{naive_v['seconds_per_volume_extrapolated']:.0f} s/volume", flush=True)
        res["vit_b"] = {"naive": naive_v}
        for precision in a.vit_precision:
            sample = bench_vit_sample(vit, vol_path, a.vit_slices, a.vit_batch, precision)
            ours_v = sample["seconds_per_slice"] * DEPTH + overhead
            speedup = naive_v["seconds_per_volume_extrapolated"] / ours_v
            res["vit_b"][f"ours_{precision}"] = {**sample, "seconds_per_volume_extrapolated": ours_v,
                                                 "slices_per_s": DEPTH / ours_v, "io_overhead_s": overhead,
                                                 "speedup": speedup}
            print(f"ours vit_b {precision}: {sample['seconds_per_slice']:.2f} s/slice on {a.vit_slices} slices -> "
                  f"{ours_v:.0f} s/volume (extrapolated, + {overhead:.1f} s I/O); speed-up {speedup:.1f}x vs naive "
                  f"fp32", flush=True)
        res["vit_b"]["speedup"] = max(v["speedup"] for k, v in res["vit_b"].items() if k.startswith("ours_"))
        del vit
    goals = {
        "vit_b_speedup_ge_30x": res["vit_b"]["speedup"] >= 30,
        # file in to mask written; with the liver-sized mask a trained model gives, and in the worst case
        "compact_volume_le_15s_fp32": res["compact"]["ours_fp32"]["seconds_per_volume_liver_mask"] <= 15,
        "compact_volume_le_15s_bf16": res["compact"]["ours_bf16"]["seconds_per_volume_liver_mask"] <= 15,
        "compact_volume_le_15s_worst_case": res["compact"]["ours_fp32"]["seconds_per_volume"] <= 15,
        "peak_rss_le_2GB": res.get("memory", {}).get("peak_rss_mb", 0) <= 2048,
    }
    res["goals"] = goals
    print("goals: " + ", ".join(f"{k}={'met' if v else 'MISSED'}" for k, v in goals.items()))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
