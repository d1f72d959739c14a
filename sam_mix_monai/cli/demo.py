"""``sam-mix demo``: the end-to-end phantom demo (data, SAM-Mix-50 and U-Net-50, inference, report)."""

from __future__ import annotations

import argparse
import sys

_DESCRIPTION = """\
Run the whole pipeline on synthetic CT phantoms, on a CPU, and write a report:

  [1/5] generate and convert the phantom cohorts (domain a: train/val/test, domain b: cross-domain)
  [2/5] train SAM-Mix-50 and a U-Net-50 baseline in parallel (one thread each); each run evaluates its
        best checkpoint in-domain and cross-domain under both protocols (slice2d, volume3d)
  [3/5] segment a held-out test volume with the `sam-mix infer` code path; 3D Dice against its label
  [4/5] figures: predictions vs truth, CAM + box prompts, 3-plane preview, training curves
  [5/5] OUT/report.md: what ran, timings, the results in the paper's table format, the paper's table

About 6-8 minutes on 2 CPU cores. Complete runs in OUT/runs of the same settings are reused.
Numbers on phantoms are not comparable to the paper's LiTS numbers.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``sam-mix demo``."""
    p = sub.add_parser("demo", help="end-to-end phantom demo: train SAM-Mix-50 and U-Net-50, infer, write report.md",
                       description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (report.md, figures/, runs/, infer/)")
    p.add_argument("--config", metavar="YAML", default=None,
                   help="demo config (default: configs/demo.yaml): the runs, the inference model, figure slices")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value of every run's experiment config (repeatable), e.g. --set train.epochs=2 "
                        "or --set phantom.root=/tmp/phantom")
    p.add_argument("--no-stream", action="store_true", help="do not echo the training runs' log lines")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo; print where the report is. Exit code 1 when a training failed."""
    from sam_mix_monai.experiments.demo import run_demo

    result = run_demo(args.out, args.config, args.overrides, stream=not args.no_stream, progress=not args.no_progress)
    print(f"report: {result.report} ({result.seconds:.0f} s)")
    for run in result.failed:
        print(f"sam-mix demo: error: {run.label}: training failed, see {run.log}", file=sys.stderr)
    return 1 if result.failed else 0
