"""``sam-mix phantom``: generate synthetic abdominal CT with liver labels in a public layout."""

from __future__ import annotations

import argparse
import time

from sam_mix_monai.data.phantom import LAYOUTS, generate_cohort

_DESCRIPTION = """\
Generate synthetic contrast-enhanced abdominal CT volumes with liver (and lesion)
labels, written exactly like the public datasets:

  lits      DIR/volume-<i>.nii + DIR/segmentation-<i>.nii (0 bg, 1 liver, 2 lesion)
  totalseg  DIR/s<iiii>/ct.nii.gz + DIR/s<iiii>/segmentations/liver.nii.gz (0/1)

Domain a is portal venous; domain b is a shifted "other hospital" (late arterial
phase, other noise, HU offset, field of view and slice thickness). The output is
deterministic for (seed, case id, domain, matrix, slices), whatever --workers.
A phantom_manifest.json with per-case parameters is written beside the cases.
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``phantom`` sub-command.

    Args:
        subparsers: the ``add_subparsers()`` object of the top-level parser.

    Returns:
        The sub-command parser.
    """
    p = subparsers.add_parser(
        "phantom",
        help="generate synthetic abdominal CT with liver labels (LiTS / TotalSegmentator layout)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--cases", required=True, type=int, metavar="N", help="number of cases")
    p.add_argument("--layout", default="lits", metavar="|".join(LAYOUTS), help="dataset layout (default: lits)")
    p.add_argument("--domain", default="a", metavar="a|b", help="acquisition domain (default: a)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="cohort seed (default: 0)")
    p.add_argument("--matrix", type=int, default=512, metavar="M", help="in-plane matrix size (default: 512)")
    p.add_argument("--slices", type=int, default=120, metavar="K", help="slices per case (default: 120)")
    p.add_argument("--workers", type=int, default=None, metavar="W", help="worker processes (default: CPU count, at most 4)")
    p.add_argument("--start-id", type=int, default=0, metavar="I", help="id of the first case (default: 0)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Generate the cohort described by ``args``; print a one-line summary.

    Args:
        args: parsed arguments.

    Returns:
        0 on success (bad input raises :class:`~sam_mix_monai.utils.errors.InputError`).
    """
    t0 = time.perf_counter()
    records = generate_cohort(args.out, args.cases, layout=args.layout, domain=args.domain, seed=args.seed,
                              matrix=args.matrix, slices=args.slices, workers=args.workers, start_id=args.start_id,
                              progress=not getattr(args, "quiet", False))
    dt = time.perf_counter() - t0
    ids = [r["id"] for r in records]
    print(
        f"phantom: wrote {len(records)} {args.layout} case(s) (ids {ids[0]}-{ids[-1]}, domain {args.domain}, "
        f"{args.matrix}x{args.matrix}x{args.slices}) to {args.out} in {dt:.1f} s"
    )
    return 0
