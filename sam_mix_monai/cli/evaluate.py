"""``sam-mix evaluate``: a training checkpoint or a zero-shot pretrained SAM on a slice store, or a folder of
masks against a folder of references."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from sam_mix_monai.utils.atomic import atomic_output
from sam_mix_monai.utils.errors import InputError


_HELP = "evaluate a checkpoint (slice2d: per-slice Dice/HD in pixels; volume3d: 3D Dice/HD95 in mm)"
_DESCRIPTION = """\
Evaluate a training checkpoint on an HDF5 slice store. The checkpoint carries its model configuration, so
nothing else is needed. --zero-shot rows evaluate the packaged pretrained LiteMedSAM with no training:
sam_pp_0 (SAM-PP-0, the image centre as point prompt) and oracle_box ('SAM, oracle box': the reference mask's
tight box per slice, an upper bound). --pred/--ref score a folder of predicted masks against a folder of
references at full resolution instead: per-case Dice, HD95 in mm, volume difference in mL, in evaluation.csv
and evaluation_summary.json; cases paired by case id; grids compared in physical space.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``sam-mix evaluate``."""
    p = sub.add_parser("evaluate", help=_HELP, description=_DESCRIPTION)
    what = p.add_mutually_exclusive_group()
    what.add_argument("--checkpoint", help="best.pt or last.pt of a run")
    what.add_argument("--zero-shot", action="append", choices=("sam_pp_0", "oracle_box"), dest="zero_shot",
                      help="a zero-shot row (repeatable); --set model.KEY=VALUE picks another SAM (e.g. model.size)")
    what.add_argument("--pred", metavar="DIR", help="folder of predicted masks (ours, TotalSegmentator's, nnU-Net's, ...)")
    p.add_argument("--data", help="HDF5 slice store (sam-mix convert output)")
    p.add_argument("--ref", metavar="DIR", help="with --pred: folder of reference masks (NIfTI, NRRD, MHA, DICOM-SEG, "
                                                "DICOM series)")
    p.add_argument("--resample", action="store_true",
                   help="with --pred/--ref: resample a prediction on another grid onto its reference (nearest "
                        "neighbour) instead of stopping")
    p.add_argument("--label", type=int, default=None, metavar="N",
                   help="with --pred/--ref: the reference label to score (default: any non-zero label)")
    p.add_argument("--threshold", type=float, default=None, metavar="T",
                   help="with --pred/--ref: count prediction values >= T as liver (probability or label maps); "
                        "without it a prediction must be a binary mask")
    p.add_argument("--protocol", action="append", choices=("slice2d", "volume3d"),
                   help="evaluation protocol (repeatable; default slice2d)")
    p.add_argument("--prompt-mode", choices=("volume", "slice"), default=None,
                   help="a SAM-Mix checkpoint's prompts for volume3d: volume (one 3D prompt per case, scored by the "
                        "sam-mix infer path on each case put back together from the store) or slice (the per-slice "
                        "predictions stacked); default: the checkpoint's model.prompt_mode")
    p.add_argument("--split", default="test", help="split to evaluate, or 'all' (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=16, help="slices per batch (default %(default)s)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="device (default %(default)s)")
    p.add_argument("--output", help="also write the results to this JSON file (with --pred/--ref: the folder for "
                                    "evaluation.csv and evaluation_summary.json, default the --pred folder)")
    p.add_argument("--set", action="append", default=[], metavar="model.KEY=VALUE",
                   help="change a prompt switch of the checkpoint's model (repeatable): cam_component, "
                        "cam_threshold, cls_threshold, box_refine, box_margin, fallback_box_fraction; "
                        "with --zero-shot: any model key")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate and print a table (and the per-case volume metrics)."""
    if args.pred or args.ref:
        return run_folders(args)
    if not (args.checkpoint or args.zero_shot) or not args.data:
        raise InputError(None, "give --checkpoint (or --zero-shot) with --data, or --pred DIR with --ref DIR")
    from sam_mix_monai.engines.config import apply_overrides
    from sam_mix_monai.engines.evaluate import evaluate_zero_shot, format_results
    from sam_mix_monai.engines.handlers.history import json_safe

    if args.batch_size < 1:
        raise InputError("--batch-size", "must be at least 1")
    split = None if args.split == "all" else args.split
    if split not in (None, "train", "val", "test"):
        raise InputError("--split", f"unknown split {args.split!r} (train, val, test or all)")
    protocols = args.protocol or ["slice2d"]
    sets = apply_overrides({}, args.set)
    if set(sets) - {"model"}:
        raise InputError("--set", "only model.* prompt switches can be changed at evaluation")
    if args.zero_shot:
        if args.prompt_mode is not None:
            raise InputError("--prompt-mode", "applies to a SAM-Mix checkpoint, not to --zero-shot rows")
        results = {}
        for row in dict.fromkeys(args.zero_shot):
            res = evaluate_zero_shot(row, args.data, protocols, split, args.device, args.batch_size, sets.get("model", {}))
            results[f"{res['row']} ({args.split})"] = res
    else:
        from sam_mix_monai.inference.store_volumes import evaluate_checkpoint_volumes

        res = evaluate_checkpoint_volumes(args.checkpoint, args.data, protocols, split, args.device, args.batch_size,
                                          sets.get("model", {}), args.prompt_mode)
        results = {f"{args.split}": res}
    print(format_results(results))
    for name, res in results.items():
        for row in res["volume3d_cases"]:
            prefix = f"{name}: " if len(results) > 1 else ""
            print(f"  {prefix}{row['case_id']:<16} slices {row['slices']:>4}  Dice {row['dice']:.4f}  HD95 {row['hd95_mm']:.2f} mm")
    if args.output:
        with atomic_output(args.output) as tmp:
            tmp.write_text(json.dumps(json_safe(results if args.zero_shot else res), indent=1), encoding="utf-8")
    return 0


def run_folders(args: argparse.Namespace) -> int:
    """Score a folder of predictions against references; print one line per case and the summary."""
    from sam_mix_monai.inference.evaluation import evaluate_folders, write_results

    if not (args.pred and args.ref):
        raise InputError(None, "folder evaluation needs both --pred DIR and --ref DIR")
    if args.data:
        raise InputError(None, "give --pred/--ref or --checkpoint/--data, not both")
    if args.threshold is not None and not math.isfinite(args.threshold):
        raise InputError(None, f"--threshold: expected a finite number, got {args.threshold}")
    rows, summary = evaluate_folders(args.pred, args.ref, resample=args.resample, label=args.label,
                                     threshold=args.threshold)
    files = write_results(rows, summary, args.output or args.pred)
    for r in rows:
        note = "  (resampled)" if r["resampled"] else ""
        print(f"{r['case']:<20} Dice {r['dice']:.4f}  HD95 {r['hd95_mm']:8.2f} mm  volume {r['volume_diff_ml']:+9.1f} mL"
              f"{note}  [{Path(r['prediction']).name} vs {Path(r['reference']).name}]")
    d, h = summary["dice"], summary["hd95_mm"]
    print(f"{summary['cases']} case(s): Dice {d['mean']:.4f} ± {d['std']:.4f}, HD95 {h['mean']:.2f} ± {h['std']:.2f} mm, "
          f"|volume difference| {summary['abs_volume_diff_ml_mean']:.1f} mL -> {files[0]}")
    return 0
