"""GPU section of ``make bench``: box-prompted volume inference on CUDA under fp16 / bf16 autocast.

Runs :func:`sam_mix_monai.inference.box3d.segment_box` (MedSAM-style propagation from a 3D box) on
a synthetic 512x512x200 CT (liver on about 100 slices, its known box) on the first CUDA device, for

* the pretrained LiteMedSAM (TinyViT, 256 px input), and
* a ViT-B SAM at 1024 px with the official architecture, randomly initialised (speed only: its masks
  mean nothing and would stop the propagation, so every slice of the box is prompted with the user's
  box: :func:`fixed_box_volume`, the same encoder batches and per-slice decoding),

each under ``torch.autocast("cuda", float16)`` and ``bfloat16``, and reports encoded slices per
second (encoder calls counted by :class:`~sam_mix_monai.networks.encoder_backend.CountingEncoder`) and
volume seconds (median of ``--runs``, after one warm-up run; ``torch.cuda.synchronize`` around each).

Without CUDA it prints one line, ``no CUDA: GPU section skipped``, and records the skip.

Writes ``runs/bench/bench_gpu.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from _meta import run_meta  # noqa: E402 (benchmarks/ is on sys.path when run as a script)

SKIP_LINE = "no CUDA: GPU section skipped"


def _sam(model: str, device: torch.device) -> torch.nn.Module:
    if model == "lite_medsam":
        from sam_mix_monai.inference.box3d import pretrained_box_sam

        return pretrained_box_sam(device)
    from sam_mix_monai.networks.sam_builder import build_sam

    torch.manual_seed(0)
    return build_sam("vit_b", 1024).to(device).eval()


def fixed_box_volume(volume, box, sam: torch.nn.Module, batch: int) -> int:
    """Every slice of ``box`` encoded (batches of ``batch``) and decoded with the box's 2D extent; returns slices."""
    from sam_mix_monai.inference.box3d import _display_box
    from sam_mix_monai.inference.geometry import AxialGeometry
    from sam_mix_monai.inference.volume import volume_array
    from sam_mix_monai.networks.box_prompt import encode_slices, predict_box_mask, prepare_sam_slice

    arr = volume_array(volume)
    geo = AxialGeometry(np.asarray(volume.affine, dtype=np.float64), arr.shape)
    z_lo, z_hi, user = _display_box(box, geo)
    slices = np.clip(geo.read_slab(arr, z_lo, z_hi + 1).astype(np.float32), -160, 240)
    for i in range(0, len(slices), batch):
        prepared = encode_slices(sam, [prepare_sam_slice(s, sam) for s in slices[i : i + batch]], batch)
        for prep in prepared:
            predict_box_mask(sam, prep, user)
    return len(slices)


def bench_model(model: str, dtypes: list[str], runs: int, volume, box, device: torch.device, batch: int) -> list[dict]:
    """Slices per second of box-prompted volume inference for one SAM, per autocast dtype."""
    from sam_mix_monai.inference.box3d import segment_box
    from sam_mix_monai.networks.encoder_backend import CountingEncoder

    sam = _sam(model, device)
    counter = CountingEncoder(sam.image_encoder)
    sam.image_encoder = counter
    rows = []
    for name in dtypes:
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[name]
        if name == "bf16" and not torch.cuda.is_bf16_supported():
            rows.append({"model": model, "dtype": name, "skipped": "bf16 not supported by this GPU"})
            continue
        times, slices = [], 0
        for k in range(runs + 1):  # the first is a warm-up (cuDNN autotuning, allocator)
            counter.calls = counter.slices = 0
            torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            with torch.autocast("cuda", dtype=dtype), torch.no_grad():
                if model == "lite_medsam":
                    segment_box(volume, box, sam, batch_size=batch, pick_start=True)
                else:
                    fixed_box_volume(volume, box, sam, batch)
            torch.cuda.synchronize(device)
            if k:
                times.append(time.perf_counter() - t0)
                slices = counter.slices
        sec = statistics.median(times)
        mode = "MedSAM propagation" if model == "lite_medsam" else "fixed box on every box slice"
        rows.append({"model": model, "dtype": name, "mode": mode, "seconds": sec, "encoded_slices": slices,
                     "slices_per_s": slices / sec, "batch": batch,
                     "max_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30})
        print(f"  {model:<12} {name}: {slices / sec:7.1f} slices/s ({slices} slices in {sec:.2f} s)", flush=True)
    del sam
    torch.cuda.empty_cache()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["lite_medsam", "vit_b"])
    ap.add_argument("--dtypes", nargs="+", default=["fp16", "bf16"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--depth", type=int, default=200)
    ap.add_argument("--out", default="runs/bench/bench_gpu.json")
    a = ap.parse_args()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not torch.cuda.is_available():
        print(SKIP_LINE)
        out.write_text(json.dumps({"meta": run_meta(), "skipped": SKIP_LINE}, indent=1))
        return
    from monai.data import MetaTensor

    from sam_mix_monai.data.phantom import generate_case
    from sam_mix_monai.inference.box3d import Box3D

    device = torch.device("cuda", 0)
    torch.backends.cudnn.benchmark = True
    case = generate_case(0, 0, "a", a.size, a.depth, orientation="LPS")
    volume = MetaTensor(torch.from_numpy(np.asarray(case.image, dtype=np.float32))[None], affine=torch.as_tensor(case.affine))
    ref = np.asarray(case.label) > 0
    idx = [np.flatnonzero(ref.any(axis=tuple(x for x in range(3) if x != ax))) for ax in range(3)]
    box = Box3D(tuple(int(i[0]) for i in idx), tuple(int(i[-1]) for i in idx))
    res: dict = {"meta": run_meta(), "gpu": torch.cuda.get_device_name(device), "box": str(box), "rows": []}
    print(f"GPU section on {res['gpu']} (box {box}):", flush=True)
    for model in a.models:
        res["rows"] += bench_model(model, a.dtypes, a.runs, volume, box, device, a.batch)
    out.write_text(json.dumps(res, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
