"""``sam-mix study``: the paper's comparison grid (models × labelled slices × seeds), resumable."""

from __future__ import annotations

import argparse
import sys

from sam_mix_monai.utils.errors import InputError


_HELP = "run the comparison grid (SAM-Mix, U-Net, SAM-PP x labelled slices x seeds) and tabulate it"
_DESCRIPTION = """\
Train every cell of a study config (configs/study_*.yaml) as its own 'sam-mix train' run, WORKERS at a time,
then write study.md (paper-format tables, mean ± sd over seeds), study.json and dice_vs_n.png to the output
folder. Finished cells are skipped and interrupted ones resumed, so rerunning the command continues a stopped
study.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``sam-mix study``."""
    p = sub.add_parser("study", help=_HELP, description=_DESCRIPTION)
    p.add_argument("--config", required=True, help="study YAML")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a study key (seeds=[0], workers=2, output.dir=...) or an experiment key for "
                        "every cell (train.epochs=2, model.checkpoint=...); repeatable")
    p.add_argument("--out", metavar="DIR", help="output folder (default: the study's output.dir)")
    p.add_argument("--workers", type=int, metavar="K", help="cells trained at the same time (default: the study's)")
    p.add_argument("--threads", type=int, metavar="T", help="torch threads per cell (default: the study's)")
    p.add_argument("--only", action="append", default=[], metavar="GLOB",
                   help="run only the cells matching a glob, e.g. 'SAM-Mix-*' or 'U-Net-50/seed0' (repeatable); "
                        "the report still covers every cell")
    p.add_argument("--aggregate-only", action="store_true", help="train nothing; summarise the finished cells")
    p.add_argument("--dry-run", action="store_true", help="list the cells and their state, run nothing")
    p.add_argument("--no-stream", action="store_true", help="do not echo the cells' training output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Validate, run the missing cells, aggregate; exit 1 when a cell failed."""
    from sam_mix_monai.experiments.study import cell_states, config_differences, run_study, select_cells
    from sam_mix_monai.experiments.study_config import expand_cells, load_study, validate_cells

    for flag, value in (("--workers", args.workers), ("--threads", args.threads)):
        if value is not None and value < 1:
            raise InputError(flag, "must be at least 1")
    overrides = list(args.overrides) + ([f"output.dir={args.out}"] if args.out else [])
    study = load_study(args.config, overrides)
    if args.dry_run:
        cells = expand_cells(study)
        configs = validate_cells(study, cells)
        cells = select_cells(cells, args.only)
        states = cell_states(cells)
        print(f"study {study.name}: {len(cells)} cells in {study.out_dir} (base {study.base_path})")
        for c in cells:
            stale = config_differences(configs[c.name], c.run_dir) if states[c.name] != "new" else []
            note = f"  [other config: {', '.join(stale[:3])}]" if stale else ""
            print(f"  {c.name:<32} {states[c.name]:<8} {c.run_dir}{note}")
        counts = {s: list(states.values()).count(s) for s in ("done", "partial", "new")}
        print(f"{counts['done']} done, {counts['partial']} partial, {counts['new']} new")
        return 0
    report = run_study(study, workers=args.workers, threads=args.threads, aggregate_only=args.aggregate_only,
                       only=args.only, stream=not args.no_stream, progress=not args.no_stream)
    done = len(report.outcomes) - len(report.missing)
    print(f"study {study.name}: {done}/{len(report.outcomes)} cells complete; "
          f"report {report.files['md']}, {report.files['png']}, {report.files['json']}")
    if report.stale:
        print(f"warning: {len(report.stale)} cell(s) hold runs with another config than this study's: "
              + ", ".join(o.cell.name for o in report.stale) + " (delete their run directories to rerun)",
              file=sys.stderr)
    if report.failed:
        print("sam-mix study: failed cells: "
              + "; ".join(f"{o.cell.name} (log {o.log})" for o in report.failed), file=sys.stderr)
        return 1
    return 0
