"""``sam-mix pretrain``: pretrain a compact SAM on promptable segmentation of phantom organs (not the liver)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sam_mix_monai.utils.errors import InputError

#: Defaults: about 5 minutes at one thread on a 2-core CPU (see docs / the sidecar's timings). Kept here
#: as the defaults of engines.sam_pretrain.pretrain_to_file, here so that ``--help`` does not import torch.
DEFAULT_CASES = 20
DEFAULT_STEPS = 600

_DESCRIPTION = """\
Pretrain the compact SAM (random init otherwise; no SAM weights can be downloaded here) on
promptable segmentation of the phantom's organs other than the liver: spleen, kidneys,
stomach, bowel, pancreas, gallbladder, aorta, IVC, portal vein, bone, heart, lungs. Phantom
cases of cohort --data-seed (disjoint from the demo's seed 0) are sliced exactly like the
converter does; 15% of them are held out and scored at the end (box and point prompts).
Prompts: jittered box, 1-2 points, box+point, box+coarse mask; SAM's multimask loss.

Writes FILE (sam.state_dict(), official SAM key layout) and a JSON sidecar (FILE with the
suffix .json: settings, organ counts, held-out Dice, seconds). Use it with
  sam-mix train --config configs/phantom_demo.yaml --set model.checkpoint=FILE
(the image size must match model.image_size); SAM-Mix then trains LoRA (r=8) on a frozen
encoder, the paper's setting.
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``sam-mix pretrain``."""
    p = sub.add_parser(
        "pretrain",
        help="pretrain a compact SAM on phantom organs other than the liver (stand-in for SAM weights)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, metavar="FILE", help="weights file to write (.pt / .pth)")
    p.add_argument("--cases", type=int, default=DEFAULT_CASES, metavar="N",
                   help=f"phantom cases generated (default: {DEFAULT_CASES})")
    p.add_argument("--image-size", type=int, default=128, metavar="S",
                   help="SAM input size, a multiple of 16 (default: 128, the demo's)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, metavar="K", help=f"optimiser steps (default: {DEFAULT_STEPS})")
    p.add_argument("--batch-size", type=int, default=8, metavar="B", help="slices per step, 4 prompts each (default: 8)")
    p.add_argument("--lr", type=float, default=1e-3, metavar="LR", help="peak learning rate (default: 1e-3)")
    p.add_argument("--seed", type=int, default=0, metavar="K", help="training seed (default: 0)")
    p.add_argument("--data-seed", type=int, default=1000, metavar="K", help="phantom cohort seed (default: 1000)")
    p.add_argument("--threads", type=int, default=1, metavar="T", help="torch threads (default: 1)")
    p.add_argument("--transfer", metavar="STORE",
                   help="also score zero-shot liver Dice (GT box / point prompts) on STORE's test split")
    p.set_defaults(func=run)
    return p


def _check(args: argparse.Namespace) -> None:
    for name in ("cases", "steps", "batch_size", "threads"):
        if getattr(args, name) < 1:
            raise InputError(None, f"--{name.replace('_', '-')} must be at least 1 (got {getattr(args, name)})")
    if args.image_size < 64 or args.image_size % 16:
        raise InputError(None, f"--image-size must be a multiple of 16 and at least 64 (got {args.image_size})")
    if not args.lr > 0:
        raise InputError(None, f"--lr must be positive (got {args.lr})")
    if args.seed < 0 or args.data_seed < 0:
        raise InputError(None, "--seed and --data-seed must be non-negative")
    out = Path(args.out)
    if out.is_dir():
        raise InputError(out, "is a folder, expected a weights file name")
    if out.suffix.lower() == ".json":
        raise InputError(out, "the weights file cannot be a .json file (the sidecar gets that name)")
    if args.transfer and not Path(args.transfer).is_file():
        raise InputError(args.transfer, "HDF5 file not found")


def run(args: argparse.Namespace) -> int:
    """Build the organ data, pretrain, save; print a summary."""
    _check(args)
    import torch

    from sam_mix_monai.engines.sam_pretrain import pretrain_to_file, sidecar_path

    torch.set_num_threads(args.threads)
    doc = pretrain_to_file(args.out, cases=args.cases, image_size=args.image_size, steps=args.steps,
                           batch_size=args.batch_size, lr=args.lr, seed=args.seed, data_seed=args.data_seed,
                           transfer=args.transfer, progress=not getattr(args, "quiet", False))
    held = doc["heldout"]
    line = (f"pretrain: {doc['train_masks']} organ masks on {doc['train_slices']} slices, {args.steps} steps in {doc['seconds']:.0f} s; "
            f"loss {doc['first_loss']:.3f} -> {doc['final_loss']:.3f}")
    if held:
        line += (f"; held-out organ Dice box {held['dice_box']:.3f}, point {held['dice_point']:.3f} (means over organs "
                 f"{held['dice_box_organ_mean']:.3f}, {held['dice_point_organ_mean']:.3f})")
    if args.transfer:
        t = doc["transfer"]
        line += f"; zero-shot liver Dice box {t['dice_box']:.3f}, point {t['dice_point']:.3f}"
    print(line)
    print(f"wrote {args.out} and {sidecar_path(args.out)}")
    return 0
