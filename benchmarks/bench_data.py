"""Data benchmark (``make bench-data``).

1. Random-access batch reads: slices/s from our HDF5 store (through the dataset
   adapter) against the original SAM-Mix one-group-per-slice layout (plain h5py
   reads of ``Slice{i}/Slice``, ``Slice{i}/Segmentation`` and ``ImageLabel``, as the
   original code reads it), same slices, same run.
2. Converter throughput: one uncompressed 512x512x500 ``.nii`` LiTS volume end to end
   (read, checks, RAS, slicing, window, resize, HDF5 write), single process.

Writes ``runs/bench/bench_data.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np

from sam_mix_monai.data.converter import convert
from sam_mix_monai.data.dataset import SliceTable
from sam_mix_monai.data.h5store import CaseSlices, SliceStoreWriter
from sam_mix_monai.data.legacy import write_legacy_file
from sam_mix_monai.transforms import SlicingConfig
from _common import best_time  # noqa: E402 (benchmarks/ is on sys.path when run as a script)
from _meta import run_meta  # noqa: E402


def bench_reads(tmp: Path, n: int, size: int, batch: int, batches: int) -> dict:
    rng = np.random.default_rng(0)
    hu = rng.uniform(-1000, 1000, (n, size, size)).astype(np.float32)
    lab = (rng.random((n, size, size)) > 0.7).astype(np.uint8)
    unit = np.clip((hu + 160) / 400, 0, 1)
    ours, orig = tmp / "ours.h5", tmp / "original.h5"
    with SliceStoreWriter(ours, size) as w:
        w.append(CaseSlices("bench", "-", unit, lab, lab.reshape(n, -1).max(1), np.arange(n),
                            np.ones(3), np.eye(4), (size, size, n)), "train")
    write_legacy_file(str(orig), hu, lab.astype(np.int16))
    del hu, lab, unit
    idx = [rng.choice(n, batch, replace=False) for _ in range(batches)]
    table = SliceTable(ours)

    def read_ours() -> None:
        for b in idx:
            table.read_many(b)
            _ = table.labels[b]

    f = h5py.File(orig, "r")

    def read_original() -> None:
        for b in idx:
            for r in b:
                g = f[f"Slice{r}"]
                g["Slice"][()], g["Segmentation"][()], g.attrs["ImageLabel"]

    total = batch * batches
    os.sync()  # let the writes above settle before timing reads
    read_ours(), read_original()  # warm the page cache for both files alike
    t_ours = best_time(read_ours, 5)
    t_orig = best_time(read_original, 5)
    f.close()
    return {"slices": n, "size": size, "batch": batch, "ours_slices_per_s": total / t_ours,
            "original_slices_per_s": total / t_orig, "speedup": t_orig / t_ours}


def bench_convert(tmp: Path, depth: int) -> dict:
    rng = np.random.default_rng(1)
    shape = (512, 512, depth)
    x, y = np.meshgrid(np.linspace(-1, 1, 512), np.linspace(-1, 1, 512), indexing="ij")
    body = (x**2 + y**2 < 0.8).astype(np.int16)
    img = np.where(body[..., None] > 0, 40, -1000).astype(np.int16) + rng.integers(-20, 20, shape, dtype=np.int16)
    liver = ((x + 0.3) ** 2 + y**2 < 0.1)[..., None] & (np.abs(np.arange(depth) - depth / 2) < depth / 4)
    root = tmp / "lits"
    root.mkdir()
    aff = np.diag([-0.75, -0.75, 1.0, 1.0])
    nib.save(nib.Nifti1Image(img, aff), str(root / "volume-0.nii"))
    nib.save(nib.Nifti1Image(liver.astype(np.uint8), aff), str(root / "segmentation-0.nii"))
    del img, liver
    out = tmp / "c.h5"
    secs = best_time(lambda: convert(root, out, "lits", SlicingConfig(), {"train": 1.0}, workers=1, progress=False), 2)
    with h5py.File(out) as f:
        kept = f["image"].shape[0]
    return {"volume": f"512x512x{depth} int16 .nii", "seconds_per_volume": secs, "slices_kept": kept,
            "input_slices_per_s": depth / secs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=2000, help="slices in the read benchmark stores")
    ap.add_argument("--depth", type=int, default=500, help="depth of the converted volume")
    ap.add_argument("--out", default="runs/bench/bench_data.json")
    a = ap.parse_args()
    # The read benchmark runs on tmpfs when there is one: it measures the layouts,
    # not the disk (this machine's page cache is small and shared).
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(dir=shm) as d:
        reads = bench_reads(Path(d), a.slices, 256, 32, 100)
    with tempfile.TemporaryDirectory() as d:
        conv = bench_convert(Path(d), a.depth)
    res = {"meta": run_meta(), "reads": reads, "convert": conv}
    print(f"random-access reads, batches of {reads['batch']} slices of {reads['size']}^2 from {reads['slices']} slices:")
    print(f"  our layout (adapter):        {reads['ours_slices_per_s']:>10.0f} slices/s")
    print(f"  original one-group-per-slice:{reads['original_slices_per_s']:>10.0f} slices/s")
    print(f"  speed-up:                    {reads['speedup']:>10.1f}x   (goal >= 10x)")
    print(f"converter, one {conv['volume']}: {conv['seconds_per_volume']:.2f} s "
          f"({conv['input_slices_per_s']:.0f} input slices/s, {conv['slices_kept']} kept)   (goal < 5 s)")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2), encoding="utf-8")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
