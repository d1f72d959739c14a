"""``sam-mix convert``: LiTS / TotalSegmentator / 3D-IRCADb NIfTI or DICOM -> HDF5 slice store."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sam_mix_monai.data.converter import convert, write_store_preview
from sam_mix_monai.data.layouts import FORMATS
from sam_mix_monai.data.splits import parse_slab, parse_split
from sam_mix_monai.transforms import DEFAULT_KEEP_RATE, DEFAULT_WINDOW, SlicingConfig
from sam_mix_monai.utils.atomic import output_folder
from sam_mix_monai.utils.errors import InputError

logger = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``sam-mix convert``."""
    p = sub.add_parser(
        "convert",
        help="convert LiTS/TotalSegmentator/3D-IRCADb volumes into an HDF5 slice store",
        description="Slice CT volumes (NIfTI or DICOM series) and liver labels into one HDF5 file, split by case.",
    )
    p.add_argument("--format", required=True, choices=FORMATS, help="input dataset layout")
    p.add_argument("--input", required=True, help="dataset folder (ircadb: one patient folder or a folder of 3Dircadb1.N)")
    p.add_argument("--output", required=True, help="output .h5 file (written atomically)")
    p.add_argument("--keep-rate", default=str(DEFAULT_KEEP_RATE),
                   help="share of central axial slices to keep, or 'all' (default %(default)s, as in the paper)")
    p.add_argument("--image-size", type=int, default=256, help="side of the square slices (default %(default)s)")
    p.add_argument("--window", nargs=2, type=float, metavar=("CENTER", "WIDTH"), default=list(DEFAULT_WINDOW),
                   help="HU window (default %(default)s)")
    p.add_argument("--split", default="train=0.7,val=0.1,test=0.2", help="case split fractions (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the case split (default %(default)s)")
    p.add_argument("--dev-slab", default=None, metavar="START:STOP",
                   help="cut slices START..STOP-1 of every case into a case of their own in the val split, for "
                        "development on a training patient (e.g. one 3D-IRCADb patient)")
    p.add_argument("--slab-gap", type=int, default=2, metavar="N",
                   help="with --dev-slab: slices on each side of the slab kept out of both parts (default %(default)s)")
    p.add_argument("--label-id", default=None, metavar="N[,N...]",
                   help="msd: the label value(s) that are liver (default: the labels dataset.json names liver, "
                        "plus its tumour labels; a dataset with no liver label is refused without this flag)")
    p.add_argument("--workers", type=int, default=None, help="parallel processes (default: CPUs, at most 4)")
    p.add_argument("--preview", action="store_true", help="also write OUTPUT.preview.png: random liver slices with their masks")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the conversion and print the per-split summary."""
    try:
        cfg = SlicingConfig(window_center=args.window[0], window_width=args.window[1],
                            keep_rate=args.keep_rate, image_size=args.image_size)
    except ValueError as e:
        err = e.errors()[0] if hasattr(e, "errors") else {"loc": ("?",), "msg": str(e)}
        raise InputError(None, f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}") from None
    if args.slab_gap < 0:
        raise InputError(None, f"--slab-gap: must be >= 0, got {args.slab_gap}")
    slab = parse_slab(args.dev_slab) if args.dev_slab else None
    label_ids = _label_ids(args.label_id) if args.label_id is not None else None
    with output_folder(Path(args.output).parent):  # removed again when the run leaves nothing in it
        summary = convert(args.input, args.output, args.format, cfg, parse_split(args.split), args.seed,
                          args.workers, progress=not args.no_progress, dev_slab=slab, slab_gap=args.slab_gap,
                          label_ids=label_ids)
        if args.preview:
            try:
                png = write_store_preview(summary.output, str(summary.output) + ".preview.png")
            except BaseException:  # the store and its preview appear together or not at all
                summary.output.unlink(missing_ok=True)
                raise
    print(summary.table())
    print(f"wrote {summary.output} in {summary.seconds:.1f} s")
    if args.preview:
        print(f"preview: {png}")
    return 0


def _label_ids(text: str) -> list[int]:
    """``"1"`` or ``"1,2"`` -> label ids (plain decimal integers > 0)."""
    import re

    parts = [t.strip() for t in text.split(",")]
    if not parts or not all(re.fullmatch(r"[0-9]+", t) and int(t) > 0 for t in parts):
        raise InputError(None, f"--label-id {text!r}: expected label values N or N,N,... (integers > 0)")
    return [int(t) for t in parts]
