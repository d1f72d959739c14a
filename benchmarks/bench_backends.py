"""Encoder backends on real CT (part of ``make bench``): 3D Dice change and speed against eager fp32.

For every real CT at hand (the committed example; ``../shared/data/real/ircadb_07`` and ``ircadb_17``
when present), the public box path (``Segmenter(...).predict(path, box=<reference 3D box>)``, the
pretrained LiteMedSAM, MedSAM-style propagation) runs with each encoder variant:

* ``torch fp32`` (eager PyTorch: the reference),
* ``onnxruntime fp32`` (the default on CPU),
* ``torch bf16`` (eager under ``torch.autocast("cpu", bfloat16)``),
* ``onnxruntime int8`` (dynamic quantization of the encoder's MatMul / Gemm weights; its own check
  must pass first, see :func:`sam_mix_monai.networks.encoder_backend.check_int8`).

Per variant and CT: wall seconds of ``predict`` (one run; model loading and the export outside), encoder
calls / slices, 3D Dice against the reference mask, and the 3D Dice change against the eager fp32 mask
(goal: <= 0.002 for onnxruntime fp32, <= 0.005 for bf16 / int8 to keep them as options).

Writes ``runs/bench/bench_backends.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from _meta import run_meta  # noqa: E402 (benchmarks/ is on sys.path when run as a script)
from _real import dice, load_real  # noqa: E402

VARIANTS = (("torch", "fp32"), ("onnxruntime", "fp32"), ("torch", "bf16"), ("onnxruntime", "int8"))
CASES = ("totalseg_example", "ircadb_07", "ircadb_17")


def _segmenter(backend: str, dtype: str):
    from sam_mix_monai import Segmenter
    from sam_mix_monai.networks.encoder_backend import CountingEncoder, apply_encoder_backend

    seg = Segmenter(device="cpu", encoder_backend=backend)
    sam = seg.box_sam
    check = None
    if dtype == "int8":  # measured whatever its own check says (recorded beside it)
        from sam_mix_monai.inference.box3d import pretrained_box_sam
        from sam_mix_monai.networks import encoder_backend as eb

        sam = pretrained_box_sam()
        apply_encoder_backend(sam, "cpu", "onnxruntime")
        enc = pretrained_box_sam().image_encoder
        q = eb._onnx(enc, eb.weights_hash(enc), "int8", None)
        check = eb.check_int8(sam, sam.image_encoder, q)
        sam.image_encoder = q
        seg._box_sam = sam
    sam.image_encoder = CountingEncoder(sam.image_encoder)
    return seg, sam.image_encoder, check


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cases", nargs="+", default=list(CASES))
    ap.add_argument("--variants", nargs="+", default=[f"{b}:{d}" for b, d in VARIANTS],
                    help="backend:dtype pairs (torch:fp32 first: the reference)")
    ap.add_argument("--bf16-cases", nargs="+", default=None,
                    help="cases for torch:bf16 (default: all; bf16 is emulated, slow, on CPUs without AVX512-BF16 / AMX)")
    ap.add_argument("--out", default="runs/bench/bench_backends.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    res: dict = {"meta": {**run_meta(a.threads), "load_average_start": list(os.getloadavg())}, "cases": {}}
    cts = {n: load_real(n) for n in a.cases}
    for name, ct in cts.items():
        if ct is None:
            print(f"{name}: absent, skipped", flush=True)
            res["cases"][name] = {"skipped": "absent"}
            continue
        res["cases"][name] = {"box": ct.box, "shape": list(ct.reference.shape), "variants": []}
    masks: dict[tuple, np.ndarray] = {}
    segs = {}
    for v in a.variants:
        backend, dtype = v.split(":")
        segs[(backend, dtype)] = _segmenter(backend, dtype)
        if segs[(backend, dtype)][2] is not None:
            res["int8_check_dice_change"] = segs[(backend, dtype)][2]
            print(f"int8 check (phantom slices): Dice change {segs[(backend, dtype)][2]:.4f}", flush=True)
    for name, ct in cts.items():  # case by case: each case's variants finish together
        if ct is None:
            continue
        for (backend, dtype), (seg, counter, _) in segs.items():
            if dtype == "bf16" and a.bf16_cases is not None and name not in a.bf16_cases:
                continue
            counter.calls = counter.slices = 0
            amp = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()
            t0 = time.perf_counter()
            with amp:
                pred = seg.predict(ct.path, box=ct.box)
            sec = time.perf_counter() - t0
            mask = np.asarray(pred.mask.dataobj) > 0
            masks[(name, backend, dtype)] = mask
            ref_mask = masks.get((name, "torch", "fp32"), mask)
            row = {"backend": backend, "dtype": dtype, "seconds": sec, "encoder_calls": counter.calls,
                   "encoded_slices": counter.slices, "mask_slices": int(mask.any(axis=(0, 1)).sum()),
                   "dice_vs_reference": dice(mask, ct.reference), "dice_vs_eager_fp32": dice(mask, ref_mask),
                   "load_average": os.getloadavg()[0]}
            eager = masks.get((name, "torch", "fp32"))
            row["dice_change_vs_eager_fp32"] = 0.0 if eager is None else abs(dice(eager, ct.reference)
                                                                             - row["dice_vs_reference"])
            res["cases"][name]["variants"].append(row)
            print(f"{name:>16} {backend:>11} {dtype}: {sec:6.1f} s, {counter.slices} slices encoded in {counter.calls} "
                  f"calls, Dice vs ref {row['dice_vs_reference']:.4f}, vs eager fp32 {row['dice_vs_eager_fp32']:.4f}, "
                  f"|Dice change| {row['dice_change_vs_eager_fp32']:.4f}, load {row['load_average']:.1f}", flush=True)
            out = Path(a.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(res, indent=1))
    res["meta"]["load_average_end"] = list(os.getloadavg())
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
