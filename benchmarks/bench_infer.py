"""Volume inference benchmark (``make bench-infer``).

On one 512x512x200 phantom CT (``.nii.gz``), same machine, same process, same thread count:

1. **ours, compact** (SAM-Mix compact at 256, random weights, classifier gate off so that every
   slice goes through SAM and the upsampling: the slowest case): the project's volume inference,
   file in to mask written (read, HU checks, streaming batched slices, mapping back, 3D largest
   component, NIfTI write), timed in-process, fp32 and bf16; the random network's mask fills half the
   volume, so clean-up and writing are also timed on a liver-sized mask (the phantom's label) for the
   figure a trained model gives; and the ``sam-mix infer`` command in a subprocess (Python start-up
   and imports included);
2. **ours, vit_b** (SAM-Mix vit_b at 256, LoRA) in two settings: the paper's (wide ResNet-38
   classifier) and the deployment one (compact classifier: ResNet-38 layout at 1/8 width, one unit
   per stage), each in fp32 and with bf16 autocast, timed on a slab of ``--vit-slices`` slices:

   * **all slices through SAM** (measured): slice loop on the slab (reading, windowing, network,
     mapping back) extrapolated to 200 slices, plus the per-volume I/O overhead measured in 1 (worst
     case: a random network's classifier passes every slice);
   * **the two stages** timed separately on the same slab (network only): the prompt stage
     (classifier, CAM, prompts) and the SAM stage, per slice;
   * **gated** (composed, not measured end to end): prompt stage x 200 + SAM stage x ``n_liver`` +
     the slice loop's per-slice cost without a network (measured on the whole volume) x 200 + the I/O
     of a liver-sized mask, with ``n_liver`` the
     number of slices of the phantom's label that hold liver: what the gate-skipping
     :class:`~sam_mix_monai.inference.SlicePredictor` costs with a classifier that passes exactly the
     liver slices. The networks are untrained, so this is a composition of measured stage times and
     the label's slice count, not a measured run of a trained model;
3. **naive**: ``segment_anything.SamPredictor`` per slice, ``set_image`` at 1024 (the 512 slice
   upscaled, as SAM does) + ``predict`` with the same box (the CAM box of our run, scaled to the
   slice), same SAM weights (the 256 model's SAM, position tables resized to 1024), one untimed
   warm-up slice (its FLOPs counted), then ``--naive-slices`` timed slices, reported per slice and
   per 200-slice volume (always fp32, as ``SamPredictor`` runs);
4. **peak memory** (run first): ``sam-mix infer`` (compact) on a 512x512x1000 ``.nii.gz`` (the
   200-slice phantom stacked 5 times) in a subprocess, its peak RSS (``VmHWM``);
5. **FLOP efficiency**: a GEMM peak measured in the same run (``torch.mm`` of square fp32 and bf16
   matrices, best of several, same thread count), FLOPs per slice of each stage
   (``torch.utils.flop_counter.FlopCounterMode``, one multiply-add = 2 FLOPs) and the rate our
   network stages (and the naive path) reach, as a fraction of that peak. ``torch.mm`` (MKL) is a
   reference, not the hardware peak: on the AMD EPYC used here oneDNN's convolutions run a little
   faster than MKL's matrix product, so the wide ResNet-38 can exceed 100% of it.

Goals (issue 5): ours >= 30x faster than naive for vit_b on CPU (marked per classifier setting, for
all slices through SAM and for the gated composition); compact file-in to mask-written <= 15 s on 2
cores; peak RSS <= 2 GB for the 1000-slice volume.

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
from sam_mix_monai.inference import Case, VolumeSliceInferer, SlicePredictor, keep_largest_component, segment_case, write_mask
from sam_mix_monai.inference.runner import Model
from sam_mix_monai.inference.geometry import AxialGeometry
from sam_mix_monai.networks import ModelConfig, adapt_sam_state_dict, build_model, build_sam
from sam_mix_monai.networks.lora import is_lora_key
from sam_mix_monai.transforms import HUWindow
from sam_mix_monai.utils.precision import autocast
from _common import best_time, count_flops, gemm_peak  # noqa: E402 (benchmarks/ is on sys.path when run as a script)
from _meta import run_meta  # noqa: E402

DEPTH = 200
VIT_CLASSIFIERS = {"resnet38": "vit_b + ResNet-38 (paper)", "compact": "vit_b + compact classifier (deployment)"}


def _save(path: Path, arr: np.ndarray, affine: np.ndarray) -> Path:
    img = nib.Nifti1Image(arr, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    nib.save(img, str(path))
    return path


def _model(size: str, classifier: str = "auto") -> tuple[torch.nn.Module, ModelConfig]:
    torch.manual_seed(0)
    cfg = ModelConfig(name="sam_mix", size=size, image_size=256, cls_threshold=0.0, classifier=classifier,
                      encoder_mode="lora" if size != "compact" else "auto")
    return build_model(cfg, load_pretrained=False).eval(), cfg


def bench_ours(net: torch.nn.Module, path: Path, out: Path, batch: int, precision: str = "fp32") -> dict:
    """File in to mask written, in-process (after a warm-up on a few slices)."""
    pred = SlicePredictor(net, precision=precision)
    inferer = VolumeSliceInferer(batch_size=batch)
    inferer(read_volume(path)[..., : 2 * batch], pred)  # warm-up: allocator, kernels
    t0 = time.perf_counter()
    res = segment_case(Case("bench", path), Model(pred, inferer), out)
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


def bench_vit_sample(net: torch.nn.Module, path: Path, n: int, batch: int, precision: str = "fp32",
                     repeats: int = 2) -> dict:
    """Seconds per slice of the vit_b network on an ``n``-slice slab (reading + mapping back included).

    Every slice goes through SAM (``skip_gated=False``: the worst case); best of ``repeats`` passes.
    """
    vol = read_volume(path)
    sub = vol[..., DEPTH // 2 - n // 2: DEPTH // 2 - n // 2 + n]
    inferer = VolumeSliceInferer(batch_size=batch)
    pred = SlicePredictor(net, precision=precision, skip_gated=False)
    inferer(sub[..., :batch], pred)  # warm-up
    per = best_time(lambda: inferer(sub, pred), repeats) / n
    return {"sample_slices": n, "precision": precision, "seconds_per_slice": per}


def naive_sam(net: torch.nn.Module, size: str) -> torch.nn.Module:
    """The 256 model's SAM weights in an official 1024 SAM (position tables resized), no LoRA."""
    sam = build_sam(size, 1024)
    state = {k: v for k, v in net.sam.state_dict().items() if not is_lora_key(k)}
    sam.load_state_dict(adapt_sam_state_dict(state, sam.state_dict()))
    return sam.eval()


def bench_naive(net: torch.nn.Module, size: str, path: Path, n: int) -> dict:
    """``SamPredictor`` per slice: ``set_image`` at 1024 + ``predict`` with our CAM box.

    The first slice is an untimed warm-up whose FLOPs are counted; ``n`` slices are timed.
    """
    from segment_anything import SamPredictor

    sam = naive_sam(net, size).requires_grad_(False)  # FlopCounterMode's module tracker trips on parameter outputs
    predictor = SamPredictor(sam)
    vol = read_volume(path)
    arr = vol.as_tensor()[0].numpy()
    geo = AxialGeometry(np.asarray(vol.affine), arr.shape)
    z = np.linspace(DEPTH * 0.35, DEPTH * 0.65, n + 1).round().astype(int)
    win = HUWindow()
    times, flops = [], 0.0
    for i, k in enumerate(z):
        sl = np.asarray(win(geo.read_slab(arr, int(k), int(k) + 1).astype(np.float32)))[0]  # (512, 512) in [0, 1]
        with torch.no_grad():
            x = torch.nn.functional.interpolate(torch.from_numpy(sl)[None, None], size=(256, 256), mode="bilinear")
            box = net(x)["boxes"][0].numpy() * (sl.shape[1] / 256.0)
        rgb = np.repeat((sl * 255).round().astype(np.uint8)[..., None], 3, axis=2)

        def run() -> None:
            predictor.set_image(rgb)
            predictor.predict(box=box, multimask_output=True)

        if i == 0:
            flops, _ = count_flops(run)  # warm-up
            continue
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    per = float(np.mean(times))
    return {"sample_slices": n, "seconds_per_slice": per, "seconds_per_volume_extrapolated": per * DEPTH,
            "gflops_per_slice": flops / 1e9, "gflops_per_s": flops / 1e9 / per}


def slab_input(path: Path, n: int, size: int = 256) -> torch.Tensor:
    """The central ``n`` slices of the volume as network input ``(n, 1, size, size)`` (as the slice loop makes it)."""
    vol = read_volume(path)
    arr = vol.as_tensor()[0].numpy()
    geo = AxialGeometry(np.asarray(vol.affine), arr.shape)
    z0 = DEPTH // 2 - n // 2
    return VolumeSliceInferer().preprocess(geo.read_slab(arr, z0, z0 + n), size)


class _Constant(torch.nn.Module):
    """A stand-in network: positive logits on every slice (each slice mapped back and written)."""

    image_size = 256

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(x)


def bench_slice_loop(path: Path, batch: int) -> float:
    """Seconds per slice of the slice loop without a network (read, window, resize, map back, write slab).

    Measured on the whole volume with a constant network whose mask covers every slice (the most
    mapping-back work); best of 2.
    """
    vol = read_volume(path)
    inferer = VolumeSliceInferer(batch_size=batch)
    return best_time(lambda: inferer(vol, _Constant()), 2) / DEPTH


def stage_gflops(net: torch.nn.Module, size: int = 256) -> dict[str, float]:
    """GFLOPs per slice of the prompt stage and of the SAM stage (one slice)."""
    x = torch.rand(1, 1, size, size)
    prompt, _ = count_flops(lambda: net.prompt(x))
    with torch.no_grad():
        p = net.prompt(x)
    sam, _ = count_flops(lambda: net.segment(p["image"], p))
    return {"prompt": prompt / 1e9, "sam": sam / 1e9, "total": (prompt + sam) / 1e9}


def bench_stages(net: torch.nn.Module, x: torch.Tensor, batch: int, precision: str,
                 repeats: int = 2) -> dict[str, float]:
    """Seconds per slice of :meth:`SAMMix.prompt` and :meth:`SAMMix.segment` on ``x`` (network only).

    Each stage's time is the best of ``repeats`` passes over ``x`` (the least disturbed by other load).
    """
    n = x.shape[0]
    t_prompt, t_sam = [], []
    with torch.no_grad(), autocast(precision, "cpu"):
        p = net.prompt(x[:batch])  # warm-up
        net.segment(p["image"], p)
        for _ in range(repeats):
            tp = ts = 0.0
            for i in range(0, n, batch):
                t0 = time.perf_counter()
                p = net.prompt(x[i: i + batch])
                t1 = time.perf_counter()
                net.segment(p["image"], p)
                tp += t1 - t0
                ts += time.perf_counter() - t1
            t_prompt.append(tp)
            t_sam.append(ts)
    return {"prompt_s_per_slice": min(t_prompt) / n, "sam_s_per_slice": min(t_sam) / n}


def efficiency(gflops: dict[str, float], stages: dict[str, float], peak: float) -> dict[str, float]:
    """Achieved GFLOP/s of each stage and of both together, and their fraction of the GEMM ``peak``."""
    tp, ts = stages["prompt_s_per_slice"], stages["sam_s_per_slice"]
    rates = {"prompt": gflops["prompt"] / tp, "sam": gflops["sam"] / ts, "total": gflops["total"] / (tp + ts)}
    out = {f"{k}_gflops_per_s": v for k, v in rates.items()}
    out.update({f"{k}_fraction_of_peak": v / peak for k, v in rates.items()})
    return out


def _eff_line(label: str, precision: str, gflops: dict, stages: dict, eff: dict) -> str:
    return (f"  {label:40} {precision}: prompt {gflops['prompt']:6.1f} GFLOP {stages['prompt_s_per_slice']:.3f} s "
            f"({eff['prompt_gflops_per_s']:.0f} GFLOP/s, {100 * eff['prompt_fraction_of_peak']:.0f}% of peak); "
            f"SAM {gflops['sam']:5.1f} GFLOP {stages['sam_s_per_slice']:.3f} s ({eff['sam_gflops_per_s']:.0f} GFLOP/s, "
            f"{100 * eff['sam_fraction_of_peak']:.0f}%); both {eff['total_gflops_per_s']:.0f} GFLOP/s "
            f"({100 * eff['total_fraction_of_peak']:.0f}%)")


def bench_vit_setting(net: torch.nn.Module, vol_path: Path, a: argparse.Namespace, naive_volume_s: float,
                      io_worst: float, io_liver: float, loop: float, n_liver: int) -> dict:
    """One vit_b setting: all slices through SAM (measured) and gated (composed), per precision.

    Args:
        io_worst: per-volume I/O outside the slice loop with a volume-filling mask (seconds).
        io_liver: the same with a liver-sized mask (seconds).
        loop: seconds per slice of the slice loop without the network.
    """
    flops = stage_gflops(net)
    x = slab_input(vol_path, a.vit_slices)
    res: dict = {"gflops_per_slice": flops}
    for precision in a.vit_precision:
        sample = bench_vit_sample(net, vol_path, a.vit_slices, a.vit_batch, precision)
        stages = bench_stages(net, x, a.vit_batch, precision)
        per = sample["seconds_per_slice"]
        all_s = per * DEPTH + io_worst
        gated_s = (stages["prompt_s_per_slice"] + loop) * DEPTH + stages["sam_s_per_slice"] * n_liver + io_liver
        res[precision] = {
            "sample_slices": a.vit_slices,
            "all_slices_through_sam": {
                "basis": "measured: slice loop on the slab, extrapolated to 200 slices, + measured I/O overhead",
                "seconds_per_slice": per, "io_overhead_s": io_worst, "seconds_per_volume": all_s,
                "speedup": naive_volume_s / all_s},
            "stages": stages,
            "gated": {
                "basis": (f"composed from measured stage times and the label's liver-slice count (untrained network): "
                          f"(prompt stage + slice loop without network) x {DEPTH} + SAM stage x n_liver ({n_liver}) "
                          f"+ I/O of a liver-sized mask"),
                "n_liver": n_liver, "slice_loop_s_per_slice": loop, "io_overhead_s": io_liver,
                "seconds_per_volume": gated_s, "speedup": naive_volume_s / gated_s},
        }
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="torch threads, ours and naive alike (default 2)")
    ap.add_argument("--batch", type=int, default=8, help="slices per forward pass (compact)")
    ap.add_argument("--compact-slices", type=int, default=32, help="compact slices of the stage timing")
    ap.add_argument("--vit-batch", type=int, default=2, help="slices per forward pass (vit_b)")
    ap.add_argument("--vit-slices", type=int, default=8, help="vit_b slices timed (extrapolated to 200)")
    ap.add_argument("--vit-precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"],
                    help="vit_b autocast precisions timed")
    ap.add_argument("--vit-classifiers", nargs="+", default=list(VIT_CLASSIFIERS), choices=list(VIT_CLASSIFIERS),
                    help="vit_b classifier settings timed")
    ap.add_argument("--naive-slices", type=int, default=5, help="naive slices timed per size (after one warm-up)")
    ap.add_argument("--gemm-size", type=int, default=2048, help="side of the square GEMM of the peak measurement")
    ap.add_argument("--memory-depth", type=int, default=1000, help="slices of the peak-memory volume (0: skip)")
    ap.add_argument("--out", default="runs/bench/bench_infer.json")
    a = ap.parse_args()
    t_start = time.perf_counter()
    torch.set_num_threads(a.threads)
    load = os.getloadavg()[0]
    print(f"bench_infer: torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, "
          f"{torch.get_num_threads()} torch threads, load average {load:.2f}", flush=True)
    peaks = gemm_peak(a.gemm_size)  # measured again at the end; the higher (less disturbed) figure is used
    print(f"GEMM peak (torch.mm {a.gemm_size}^2, best of 5): fp32 {peaks['fp32']:.0f} GFLOP/s, "
          f"bf16 {peaks['bf16']:.0f} GFLOP/s (measured again at the end)", flush=True)
    res: dict = {"meta": {**run_meta(a.threads), "load_average": load, "depth": DEPTH,
                          "gemm_peak_gflops_per_s": {"size": a.gemm_size, "start": dict(peaks)}}}
    with tempfile.TemporaryDirectory(prefix="bench_infer_") as tmp_s:
        tmp = Path(tmp_s)
        case = generate_case(0, 0, "a", 512, DEPTH, orientation="LPS")
        vol_path = _save(tmp / "ct.nii.gz", case.image, case.affine)
        geo = AxialGeometry(case.affine, case.label.shape)
        n_liver = int(np.count_nonzero(case.label.any(axis=tuple(k for k in range(3) if k != geo.axis))))
        res["meta"]["n_liver_slices"] = n_liver
        print(f"phantom 512x512x{DEPTH} written ({vol_path.stat().st_size / 1e6:.0f} MB .nii.gz); "
              f"{n_liver} of {DEPTH} slices of its label hold liver", flush=True)

        compact, cfg = _model("compact")
        ckpt = tmp / "compact.pt"
        torch.save({"model": compact.state_dict(), "model_config": cfg.model_dump()}, ckpt)
        if a.memory_depth:
            reps = int(np.ceil(a.memory_depth / DEPTH))
            ax = geo.axis
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
        io_worst = res["compact"]["ours_fp32"]["seconds_outside_slices"]  # read, checks, clean-up, writing
        io_liver = res["compact"]["ours_fp32"]["seconds_read"] + post  # the same with a liver-sized mask
        loop = bench_slice_loop(vol_path, a.batch)
        res["slice_loop_without_network_s_per_slice"] = loop
        print(f"slice loop without a network (read, window, resize, map back, write slab): {1000 * loop:.1f} ms/slice",
              flush=True)
        c_flops = stage_gflops(compact)
        c_x = slab_input(vol_path, a.compact_slices)
        res["compact"]["gflops_per_slice"] = c_flops
        for precision in ("fp32", "bf16"):
            st = bench_stages(compact, c_x, a.batch, precision)
            res["compact"][f"stages_{precision}"] = {**st, "sample_slices": a.compact_slices, "precision": precision}
        naive_c = bench_naive(compact, "compact", vol_path, a.naive_slices)
        res["compact"]["naive"] = naive_c
        res["compact"]["speedup"] = naive_c["seconds_per_volume_extrapolated"] / res["compact"]["ours_fp32"]["seconds_per_volume"]
        print(f"naive compact: {naive_c['seconds_per_slice']:.3f} s/slice -> "
              f"{naive_c['seconds_per_volume_extrapolated']:.0f} s/volume; speed-up {res['compact']['speedup']:.1f}x (fp32)",
              flush=True)
        del compact

        res["vit_b"] = {}
        for classifier in a.vit_classifiers:
            net, _ = _model("vit_b", classifier)
            if "naive" not in res["vit_b"]:  # SAM only: the same for both classifier settings
                naive_v = bench_naive(net, "vit_b", vol_path, a.naive_slices)
                res["vit_b"]["naive"] = naive_v
                print(f"naive vit_b: {naive_v['seconds_per_slice']:.1f} s/slice -> "
                      f"{naive_v['seconds_per_volume_extrapolated']:.0f} s/volume "
                      f"({naive_v['gflops_per_slice']:.0f} GFLOP/slice, {naive_v['gflops_per_s']:.0f} GFLOP/s)", flush=True)
            naive_s = res["vit_b"]["naive"]["seconds_per_volume_extrapolated"]
            r = bench_vit_setting(net, vol_path, a, naive_s, io_worst, io_liver, loop, n_liver)
            r["label"] = VIT_CLASSIFIERS[classifier]
            res["vit_b"][classifier] = r
            g = r["gflops_per_slice"]
            print(f"ours {r['label']} ({g['total']:.0f} GFLOP/slice: prompt stage {g['prompt']:.1f}, SAM stage "
                  f"{g['sam']:.1f}), {a.vit_slices}-slice slab:", flush=True)
            for precision in a.vit_precision:
                p, st = r[precision], r[precision]["stages"]
                al, gt = p["all_slices_through_sam"], p["gated"]
                print(f"  {precision}: all slices through SAM (measured): {al['seconds_per_slice']:.2f} s/slice -> "
                      f"{al['seconds_per_volume']:.0f} s/volume, speed-up {al['speedup']:.1f}x; "
                      f"stages per slice: prompt "
                      f"{st['prompt_s_per_slice']:.3f} s, SAM {st['sam_s_per_slice']:.3f} s; "
                      f"gated (composed: prompt x {DEPTH} + SAM x "
                      f"{n_liver} liver slices of the label): {gt['seconds_per_volume']:.0f} s/volume, "
                      f"speed-up {gt['speedup']:.1f}x", flush=True)
            del net

    end = gemm_peak(a.gemm_size)
    peaks = {k: max(v, end[k]) for k, v in peaks.items()}
    res["meta"]["gemm_peak_gflops_per_s"].update(end=end, used=peaks)
    for r in [res["compact"][f"stages_{p}"] for p in ("fp32", "bf16")]:
        r["efficiency"] = efficiency(res["compact"]["gflops_per_slice"], r, peaks[r["precision"]])
    for classifier in a.vit_classifiers:
        r = res["vit_b"][classifier]
        for precision in a.vit_precision:
            r[precision]["efficiency"] = efficiency(r["gflops_per_slice"], r[precision]["stages"], peaks[precision])
    print(f"GEMM peak at the end: fp32 {end['fp32']:.0f}, bf16 {end['bf16']:.0f} GFLOP/s")
    print(f"FLOP efficiency, network stages only (GEMM peak, the higher of start and end: fp32 {peaks['fp32']:.0f}, "
          f"bf16 {peaks['bf16']:.0f} GFLOP/s):")
    for precision in ("fp32", "bf16"):
        st = res["compact"][f"stages_{precision}"]
        print(_eff_line("compact", precision, res["compact"]["gflops_per_slice"], st, st["efficiency"]))
    for classifier in a.vit_classifiers:
        r = res["vit_b"][classifier]
        for precision in a.vit_precision:
            print(_eff_line(r["label"], precision, r["gflops_per_slice"], r[precision]["stages"],
                            r[precision]["efficiency"]))
    nv = res["vit_b"]["naive"]
    print(f"  naive SamPredictor vit_b at 1024, fp32: {nv['gflops_per_slice']:.0f} GFLOP "
          f"{nv['seconds_per_slice']:.1f} s "
          f"({nv['gflops_per_s']:.0f} GFLOP/s, {100 * nv['gflops_per_s'] / peaks['fp32']:.0f}% of peak)")

    goals: dict = {}
    detail: dict = {}
    for classifier in a.vit_classifiers:
        r = res["vit_b"][classifier]
        for kind in ("all_slices_through_sam", "gated"):
            best = max(a.vit_precision, key=lambda p: r[p][kind]["speedup"])
            key = f"vit_b_{classifier}_classifier_ge_30x_{'all_slices' if kind != 'gated' else 'gated_composed'}"
            goals[key] = r[best][kind]["speedup"] >= 30
            detail[key] = {"setting": r["label"], "speedup": {p: r[p][kind]["speedup"] for p in a.vit_precision},
                           "best_precision": best, "basis": r[best][kind]["basis"]}
    goals.update({
        # file in to mask written; with the liver-sized mask a trained model gives, and in the worst case
        "compact_volume_le_15s_fp32": res["compact"]["ours_fp32"]["seconds_per_volume_liver_mask"] <= 15,
        "compact_volume_le_15s_bf16": res["compact"]["ours_bf16"]["seconds_per_volume_liver_mask"] <= 15,
        "compact_volume_le_15s_worst_case": res["compact"]["ours_fp32"]["seconds_per_volume"] <= 15,
        "peak_rss_le_2GB": res["memory"]["peak_rss_mb"] <= 2048 if "memory" in res else None,  # None: not measured
    })
    res["goals"] = goals
    res["goals_detail"] = detail
    res["meta"]["runtime_s"] = time.perf_counter() - t_start
    res["meta"]["load_average_end"] = os.getloadavg()[0]
    print("goals (vit_b >= 30x vs naive fp32, best of the timed precisions; 'gated_composed' = prompt stage x "
          f"{DEPTH} + SAM stage x {n_liver} liver slices of the label, composed from measured stage times because "
          "the networks are untrained):")
    for k, v in goals.items():
        extra = ""
        if k in detail:
            extra = " (" + ", ".join(f"{p} {x:.1f}x" for p, x in detail[k]["speedup"].items()) + ")"
        print(f"  {k}: {'not measured' if v is None else 'met' if v else 'MISSED'}{extra}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2), encoding="utf-8")
    print(f"wrote {a.out}; runtime {res['meta']['runtime_s']:.0f} s, load average at the end "
          f"{res['meta']['load_average_end']:.2f} (start {load:.2f})")


if __name__ == "__main__":
    main()
