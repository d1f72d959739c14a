"""Write ``docs/benchmarks.md`` from the benchmark records in ``runs/bench/*.json`` (``make bench``).

Every figure in the page comes from a JSON file a benchmark script wrote in the same ``make bench``
run; each section names its command, machine, date and load, and gives each figure next to the
reference measured in the same run (the original layout, the naive ``SamPredictor`` path, the
machine's GEMM peak). A benchmark that did not run is reported as missing, never filled in.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable

from report_speed import backends_section, default_section, gpu_section  # noqa: E402 (benchmarks/ on sys.path)

ROOT = Path(__file__).resolve().parents[1]


def _f(v: Any, fmt: str = ".2f") -> str:
    return "-" if v is None else format(v, fmt)


def _meta_lines(meta: dict) -> list[str]:
    return [
        f"- command: `{meta.get('command', '?')}`",
        f"- machine: {meta.get('machine', '?')}; torch {meta.get('torch', '?')}, {meta.get('threads', '?')} thread(s)",
        f"- date: {meta.get('date', '?')}; load average at start {meta.get('load_average_1min', '?')}; "
        f"commit {meta.get('commit', '?')}",
        "",
    ]


def data_section(r: dict) -> list[str]:
    """Slice-store reads against the original layout; converter time."""
    rd, cv = r["reads"], r["convert"]
    return [
        "## Data: slice store reads and conversion (`make bench-data`)", "", *_meta_lines(r["meta"]),
        f"Random-access batches of {rd['batch']} slices of {rd['size']}² from a {rd['slices']}-slice store (tmpfs), "
        "through the training adapter, against the original SAM-Mix one-group-per-slice HDF5 layout read with h5py:",
        "",
        "| layout | slices/s | ratio |",
        "|---|---|---|",
        f"| ours (`SliceDataset`, chunked arrays) | {rd['ours_slices_per_s']:.0f} | **{rd['speedup']:.1f}×** |",
        f"| original (`Slice{{i}}/Slice` groups) — same-run reference | {rd['original_slices_per_s']:.0f} | 1× |",
        "",
        f"Converter: one {cv['volume']} volume in **{cv['seconds_per_volume']:.2f} s** "
        f"({cv['input_slices_per_s']:.0f} input slices/s, {cv['slices_kept']} slices kept; goal < 5 s).",
        "",
    ]


def train_section(r: dict) -> list[str]:
    """Training throughput and the share of step time spent waiting for data."""
    lines = ["## Training throughput (`make bench-train`)", "", *_meta_lines(r["meta"]),
             "Same-run reference: the iteration's own step time; the ratio is the share of it spent waiting for data.",
             "", "| model | data workers | threads | s/iteration | labelled slices/s | all slices/s | data wait |",
             "|---|---|---|---|---|---|---|"]
    for x in r["runs"]:
        lines.append(f"| {x['model']} | {x['data_workers']} | {x['threads']} | {x['seconds_per_iteration']:.3f} | "
                     f"{x['labelled_slices_per_s']:.1f} | {x['all_slices_per_s']:.1f} | {100 * x['data_wait_share']:.1f}% |")
    return lines + [""]


def model_section(r: dict) -> list[str]:
    """Parameters, FLOPs and latency per slice of the network sizes."""
    lines = ["## Network cost per slice (`make bench-model`)", "", *_meta_lines(r["meta"])]
    peak = r.get("gemm_peak_gflops")
    if peak:
        lines += [f"Same-run reference: fp32 GEMM peak of this machine at the same thread count, "
                  f"**{peak:.0f} GFLOP/s** (`torch.mm`, best of several).", ""]
    lines += ["| size | encoder | params (M) | trainable (M) | GFLOP/slice (classifier / encoder / rest) | s/slice B=1 | "
              "s/slice batched | GFLOP/s achieved (batched) | of GEMM peak |", "|---|---|---|---|---|---|---|---|---|"]
    for x in r["results"]:
        g = x["gflops_per_slice"]
        batched = next((v for k, v in x.items() if k.startswith("latency_batched")), None)
        rate = g["total"] / batched if batched else None
        lines.append(f"| {x['size']} | {x['encoder_mode']} | {x['params_total_M']:.2f} | {x['params_trainable_M']:.2f} | "
                     f"{g['total']:.2f} ({g['classifier']:.2f} / {g['image_encoder']:.2f} / {g['rest']:.2f}) | "
                     f"{x['latency_unbatched_s_per_slice']:.3f} | {_f(batched, '.3f')} | {_f(rate, '.1f')} | "
                     f"{_f(100 * rate / peak if rate and peak else None, '.0f')}% |")
    return lines + [""]


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def infer_section(r: dict) -> list[str]:
    """Volume inference against the naive per-slice SamPredictor path; memory; FLOP/s against the GEMM peak."""
    meta = r["meta"]
    peaks = meta.get("gemm_peak_gflops_per_s", {})
    used = peaks.get("used") or peaks.get("start") or {k: v for k, v in peaks.items() if k in ("fp32", "bf16")}
    c, v = r["compact"], r["vit_b"]
    depth = meta.get("depth", 200)
    lines = ["## Volume inference (`make bench-infer`)", "", *_meta_lines(meta),
             f"One {depth}-slice 512×512 phantom CT (`.nii.gz`, LPS header; its label has liver on "
             f"{meta.get('n_liver_slices', '?')} slices). Networks are randomly initialised, so their classifier "
             "gate is meaningless: \"all slices\" sends every slice through SAM (the worst case, measured end to end), "
             "\"gated\" is **composed** from the measured per-stage times as prompt stage × all slices + SAM stage × "
             "the label's liver slices (what a correct gate passes). Same-run references: the naive path "
             "(`segment_anything.SamPredictor.set_image` at 1024 + `predict` with the same box, same weights, same "
             f"threads, timed on {v['naive']['sample_slices']} slices) and the GEMM peak "
             f"(`torch.mm` {peaks.get('size', 2048)}², best of 5): fp32 **{_f(used.get('fp32'), '.0f')}**, "
             f"bf16 **{_f(used.get('bf16'), '.0f')}** GFLOP/s.", ""]
    lines += ["### Compact SAM-Mix (the CPU default)", "",
              "| precision | s/volume, file in → mask written (every slice through SAM) | s/volume with a liver-sized mask "
              "| prompt + SAM s/slice | GFLOP/s achieved | of GEMM peak |", "|---|---|---|---|---|---|"]
    for p in ("fp32", "bf16"):
        o, st = c.get(f"ours_{p}", {}), c.get(f"stages_{p}", {})
        eff = st.get("efficiency", {})
        lines.append(f"| {p} | {_f(o.get('seconds_per_volume'), '.1f')} | {_f(o.get('seconds_per_volume_liver_mask'), '.1f')} "
                     f"| {_f(st.get('prompt_s_per_slice'), '.3f')} + {_f(st.get('sam_s_per_slice'), '.3f')} "
                     f"| {_f(eff.get('total_gflops_per_s'), '.1f')} | {_pct(eff.get('total_fraction_of_peak'))} |")
    cli, nv = c.get("cli_fp32", {}), c.get("naive", {})
    lines += ["", f"`sam-mix infer` as a command (interpreter start-up and imports included): "
                  f"{_f(cli.get('wall_seconds'), '.1f')} s, peak RSS {_f(cli.get('peak_rss_mb'), '.0f')} MB. "
                  f"Naive path with the compact SAM: {_f(nv.get('seconds_per_slice'), '.2f')} s/slice → "
                  f"{_f(nv.get('seconds_per_volume_extrapolated'), '.0f')} s/volume; ours (fp32, all slices) is "
                  f"**{_f(c.get('speedup'), '.1f')}×** faster.", ""]
    nv = v["naive"]
    lines += ["### ViT-B SAM-Mix", "",
              f"Naive path (ViT-B at 1024): {nv['seconds_per_slice']:.1f} s/slice, "
              f"{_f(nv.get('gflops_per_slice'), '.0f')} GFLOP/slice ({_f(nv.get('gflops_per_s'), '.0f')} GFLOP/s) → "
              f"{nv['seconds_per_volume_extrapolated']:.0f} s per {depth}-slice volume.", "",
              "| classifier | precision | GFLOP/slice (prompt + SAM) | all slices: s/volume | speed-up | gated (composed): "
              "s/volume | speed-up | GFLOP/s achieved | of GEMM peak |", "|---|---|---|---|---|---|---|---|---|"]
    for key in ("resnet38", "compact"):
        if key not in v:
            continue
        s_ = v[key]
        g = s_["gflops_per_slice"]
        for p in ("fp32", "bf16"):
            if p not in s_:
                continue
            x = s_[p]
            a, gt, eff = x["all_slices_through_sam"], x["gated"], x.get("efficiency", {})
            lines.append(f"| {s_.get('label', key)} | {p} | {g['prompt']:.1f} + {g['sam']:.1f} | {a['seconds_per_volume']:.0f} "
                         f"| **{a['speedup']:.1f}×** | {gt['seconds_per_volume']:.0f} | **{gt['speedup']:.1f}×** "
                         f"| {_f(eff.get('total_gflops_per_s'), '.0f')} | {_pct(eff.get('total_fraction_of_peak'))} |")
    if "resnet38" in v and nv.get("seconds_per_slice"):
        peak = r["meta"].get("gemm_peak_gflops_per_s", {}).get("used", {})
        prompt = v["resnet38"]["gflops_per_slice"]["prompt"]
        bounds = {p: nv["seconds_per_slice"] / (prompt / peak[p]) for p in ("fp32", "bf16") if peak.get(p)}
        if bounds:
            verdict = ", so 30× cannot be reached with it here" if max(bounds.values()) < 30 else ""
            lines += ["", f"Bound for the paper's classifier: the ResNet-38 prompt stage alone ({prompt:.0f} GFLOP/slice) "
                          "run at 100% of the GEMM peak, with SAM free, is at most "
                      + ", ".join(f"{p} {b:.1f}×" for p, b in bounds.items())
                      + f" faster than the naive path on this machine{verdict}."]
    if "memory" in r:
        m = r["memory"]
        lines += ["", f"Peak memory: `sam-mix infer` (compact) on a 512×512×{m['depth']} `.nii.gz` peaked at "
                      f"**{m['peak_rss_mb']:.0f} MB** RSS ({m['wall_seconds']:.0f} s)."]
    goals = r.get("goals", {})
    if goals:
        lines += ["", "Goals (issue 5): " + "; ".join(f"`{k}` {'met' if ok else ('not measured' if ok is None else 'MISSED')}"
                                                      for k, ok in goals.items()) + "."]
    return lines + [""]


def _load_end(r: dict) -> str:
    """The 1-minute load average a record ends with, 2 decimals ('?' when not recorded)."""
    load = r["meta"].get("load_average_end")
    return f"{float(load[0]):.2f}" if load else "?"


def lite_section(r: dict) -> list[str]:
    """LiteMedSAM encoder backends against the same-run GEMM peak; file in to mask against the naive loop."""
    peaks = r["meta"]["gemm_peak_gflops_per_s"]
    lines = ["## LiteMedSAM on CPU: encoder backends and a CT file in to mask (`make bench-infer`, `bench_lite.py`)", "",
             *_meta_lines(r["meta"]),
             f"Same-run references: `torch.mm` 2048² GEMM peak fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} "
             f"GFLOP/s; load average at the end {_load_end(r)}.", "",
             "| encoder backend | dtype | batch | ms/slice | GFLOP/s | share of the GEMM peak (goal >= 40%) |",
             "|---|---|---|---|---|---|"]
    for e in r["encoder"]:
        lines.append(f"| {e['backend']} | {e['dtype']} | {e['batch']} | {e['ms_per_slice']:.0f} | {e['gflop_per_s']:.1f} | "
                     f"{100 * e['share_of_gemm_peak']:.0f}% |")
    f2m, nv, vb = r["file_to_mask"], r["naive"], r["volume_backend"]
    lines += ["", f"GFLOP per slice (encoder): {r['encoder'][0]['gflop_per_slice']:.1f}.", "",
              f"File in to mask, 512×512×200 phantom CT with liver on {f2m['liver_slices']} slices (box-prompted LiteMedSAM "
              f"on the liver slices, boxes from the label; encoder {vb['backend']} {vb['dtype']}, batch {vb['batch']}): "
              f"**{f2m['seconds']:.1f} s** (goal <= 30 s; Dice against the label {f2m['dice_vs_label']:.3f}).", "",
              f"Naive loop, same weights (eager fp32, batch 1, every slice): {nv['seconds_per_slice']:.2f} s/slice, "
              f"{nv['volume_s']:.0f} s per volume (extrapolated from {nv['slices_timed']} timed slices): ours is "
              f"**{r['speedup_vs_naive']:.1f}×** faster (goal >= 3×).", ""]
    return lines


SECTIONS: tuple[tuple[str, Callable[[dict], list[str]]], ...] = (
    ("bench_data.json", data_section),
    ("bench_model.json", model_section),
    ("bench_train.json", train_section),
    ("bench_infer.json", infer_section),
    ("bench_lite.json", lite_section),
    ("bench_default.json", default_section),
    ("bench_default_fast.json", default_section),
    ("bench_backends.json", backends_section),
    ("bench_gpu.json", gpu_section),
)


def render(bench_dir: Path) -> str:
    """The whole page from the JSON records in ``bench_dir``."""
    lines = ["# Benchmarks", "",
             "Written by `make bench` (`benchmarks/report.py`) from the records the benchmark scripts wrote in "
             f"`{bench_dir.relative_to(ROOT) if bench_dir.is_relative_to(ROOT) else bench_dir}`. "
             "Re-run `make bench` to refresh every figure on your machine. Timings on a shared machine are noisy: "
             "each section gives the load average when it started.", ""]
    for name, section in SECTIONS:
        path = bench_dir / name
        if not path.is_file():
            lines += [f"## {name}", "", f"Not run: `{path}` is missing.", ""]
            continue
        try:
            lines += section(json.loads(path.read_text(encoding="utf-8")))
        except (KeyError, TypeError, ValueError) as e:
            lines += [f"## {name}", "", f"Unreadable record `{path}` ({type(e).__name__}: {e}); re-run its benchmark.", ""]
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench-dir", type=Path, default=ROOT / "runs" / "bench")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    a = ap.parse_args()
    text = render(a.bench_dir.resolve())
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(text, encoding="utf-8")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
