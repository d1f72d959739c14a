"""``sam-mix train``: train (and evaluate) an experiment from a YAML config."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from sam_mix_monai.utils.errors import InputError


_HELP = "train SAM-Mix or a baseline from an experiment config, then evaluate it"
_DESCRIPTION = """\
Train from a YAML experiment config (see configs/). Validation every k epochs, best and resumable checkpoints,
metrics.json and curves in the run directory; after training the best checkpoint is evaluated on the test
split and the cross-domain sets. Several processes: torchrun --nproc_per_node=K -m sam_mix_monai.cli.main
train ..., or --nproc-per-node K.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``sam-mix train``."""
    p = sub.add_parser("train", help=_HELP, description=_DESCRIPTION)
    p.add_argument("--config", help="experiment YAML (optional with --resume: the run's stored config)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, dotted key, YAML scalar (repeatable), e.g. --set train.lr=1e-3")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from RUN_DIR/last.pt")
    p.add_argument("--nproc-per-node", type=int, default=None, metavar="K",
                   help="spawn K processes here (gloo on CPU, NCCL on GPU); not needed under torchrun")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Validate the config, train, print the results."""
    from sam_mix_monai.engines.config import load_config
    from sam_mix_monai.engines.handlers import METRICS_FILE
    from sam_mix_monai.engines.rundir import resume_config
    from sam_mix_monai.engines.run import train

    if args.nproc_per_node is not None and args.nproc_per_node < 1:
        raise InputError("--nproc-per-node", "must be at least 1")
    if args.resume:
        source = Path(args.resume) / "config.yaml"
        cfg = resume_config(args.resume, args.overrides)
    elif args.config:
        source = Path(args.config)
        cfg = load_config(args.config, args.overrides)
    else:
        raise InputError(None, "give --config FILE (or --resume RUN_DIR)")
    run_dir = train(cfg, source, resume=bool(args.resume), nproc_per_node=args.nproc_per_node)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports
        return 0
    doc = json.loads((run_dir / METRICS_FILE).read_text(encoding="utf-8")) if (run_dir / METRICS_FILE).is_file() else {}
    timing = doc.get("results", {}).get("timing", {})
    print(f"run directory: {run_dir} (metrics.json, curves.png, best.pt, last.pt)"
          + (f"; training {timing['train_seconds']:.0f} s" if "train_seconds" in timing else ""))
    return 0
