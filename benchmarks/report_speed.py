"""Sections of ``docs/benchmarks.md`` for the default CPU path, the encoder backends and the GPU (``report.py``)."""

from __future__ import annotations


def _meta(meta: dict) -> list[str]:
    end = meta.get("load_average_end")
    return [f"- command: `{meta.get('command', '?')}`",
            f"- machine: {meta.get('machine', '?')}; torch {meta.get('torch', '?')}, {meta.get('threads', '?')} thread(s)",
            f"- date: {meta.get('date', '?')}; load average (1 min) at start {meta.get('load_average_1min', '?')}, at the "
            f"end {f'{float(end[0]):.2f}' if end else '?'}; commit {meta.get('commit', '?')}", ""]


def default_section(r: dict) -> list[str]:
    """File in to mask on the default path, beside the same-run naive loop and GEMM peak."""
    if r.get("box"):
        model, call = "pretrained LiteMedSAM + reference 3D box", "segment(path, mask.nii.gz, box=...)"
    else:
        model = f"checkpoint `{r['checkpoint']}`" if r.get("checkpoint") else "the packaged default liver model"
        model, call = f"{model}, volume prompt mode", "segment(path, mask.nii.gz)"
    title = "## The default path, file in to mask (`make bench-default`, `bench_default.py`)"
    if r.get("fast"):
        title = "### The same with `--fast` (`bench_default.py --fast`)"
        model += "; `fast=True` as `sam-mix infer --fast`: bf16 only where the CPU has it natively, every second slice of a thin-slice CT"
    lines = [title, "", *_meta(r["meta"]),
             f"`Segmenter(...).{call}` as a user calls it ({model}), each CT in a fresh process (peak RSS = its "
             f"VmHWM: model load included); median of the runs. "
             f"Same-run references: the naive loop (eager fp32 LiteMedSAM, batch 1, encoder + decoder on every slice) "
             f"and the `torch.mm` 2048² fp32 peak, **{r['gemm_peak_gflops_per_s']:.0f} GFLOP/s**.", "",
             "| CT | slices | encoder backend | s, file → mask (median) | runs (s) | naive loop s | speed-up (goal ≥ 5×) | "
             "encoder calls / slices | slices encoded / volume slices | Dice vs reference | peak RSS MB (goal ≤ 3000) | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for name, c in r["cases"].items():
        if "skipped" in c:
            notes.append(f"- {name}: skipped ({c['skipped']}).")
            continue
        d, nv = c["default"], c["naive"]
        ext = f" (extrapolated from {nv['slices_timed']})" if nv.get("extrapolated") else ""
        lines.append(f"| {name} | {d['volume_slices']} | {d['backend']} | **{d['seconds']:.1f}** | "
                     f"{', '.join(f'{t:.1f}' for t in d['runs_s'])} | {nv['seconds']:.0f}{ext} | "
                     f"**{c['speedup_vs_naive']:.1f}×** | {d['encoder_calls']} / {d['encoded_slices']} | "
                     f"{d['encoded_per_slice']:.2f} | {d['dice_vs_reference']:.3f} | {c['peak_rss_mb']:.0f} | "
                     f"{c['load_average']:.1f} |")
    return lines + [""] + notes + ([""] if notes else [])


def backends_section(r: dict) -> list[str]:
    """3D Dice change and speed of each encoder variant against eager fp32 on real CT."""
    lines = ["## Encoder backends on real CT (`make bench-backends`, `bench_backends.py`)", "", *_meta(r["meta"]),
             "The public box path (`Segmenter(encoder_backend=...).predict(path, box=<reference 3D box>)`, pretrained "
             "LiteMedSAM) per encoder variant; Dice change = |3D Dice against the reference of the variant − that of "
             "eager fp32| (tolerance: 0.002 for the default, ONNX Runtime fp32; 0.005 to keep bf16 / int8 as options). "
             "Seconds are one run each, on a shared machine.", ""]
    if "int8_check_dice_change" in r:
        lines += [f"int8's own check (phantom slices, box prompt, against the fp32 ONNX encoder): Dice change "
                  f"**{r['int8_check_dice_change']:.4f}** (tolerance 0.005).", ""]
    lines += [f"- {n}" for n in r.get("notes", [])] + ([""] if r.get("notes") else [])
    lines += ["| CT | backend | dtype | s | slices encoded (calls) | 3D Dice vs reference | Dice vs eager fp32 mask | "
              "Dice change | load |", "|---|---|---|---|---|---|---|---|---|"]
    for name, c in r["cases"].items():
        if "skipped" in c:
            lines.append(f"| {name} | skipped: {c['skipped']} | | | | | | | |")
            continue
        for v in c["variants"]:
            lines.append(f"| {name} | {v['backend']} | {v['dtype']} | {v['seconds']:.0f} | {v['encoded_slices']} "
                         f"({v['encoder_calls']}) | {v['dice_vs_reference']:.4f} | {v['dice_vs_eager_fp32']:.4f} | "
                         f"**{v['dice_change_vs_eager_fp32']:.4f}** | {v['load_average']:.1f} |")
    return lines + [""]


def gpu_section(r: dict) -> list[str]:
    """Slices per second on CUDA, or the skip line."""
    lines = ["## GPU: box-prompted volume inference under autocast (`make bench-gpu`, `bench_gpu.py`)", "",
             *_meta(r["meta"])]
    if "skipped" in r:
        return lines + [r["skipped"] + ".", ""]
    lines += [f"GPU: {r['gpu']}; synthetic 512×512×200 CT, box {r['box']}.", "",
              "| model | mode | autocast | slices/s | encoded slices | s/volume | max GPU memory GB |",
              "|---|---|---|---|---|---|---|"]
    for x in r["rows"]:
        if "skipped" in x:
            lines.append(f"| {x['model']} | | {x['dtype']} | skipped: {x['skipped']} | | | |")
            continue
        lines.append(f"| {x['model']} | {x['mode']} | {x['dtype']} | **{x['slices_per_s']:.1f}** | {x['encoded_slices']} | "
                     f"{x['seconds']:.2f} | {x['max_memory_gb']:.2f} |")
    return lines + [""]
