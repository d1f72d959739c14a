"""``sam-mix infer``: segment the liver in CT volumes (NIfTI files, folders, DICOM series)."""

from __future__ import annotations

import argparse
import logging
import sys
import time

import torch

from sam_mix_monai.transforms import DEFAULT_WINDOW
from sam_mix_monai.utils.errors import InputError

logger = logging.getLogger(__name__)

_DESCRIPTION = """\
Segment the liver in every axial slice of each CT volume (classifier-gated SAM-Mix, batched),
map the mask back onto the input grid, keep the largest 3D component and write, per case:

  OUTPUT/<case>_liver.nii.gz  uint8 mask, the input's exact shape and affine
  OUTPUT/<case>_liver.json    liver volume (mL), slices with liver, classifier confidence,
                              predicted IoU, quality flag
  OUTPUT/<case>_liver.png     with --preview: axial, coronal and sagittal overlays

INPUT is a NIfTI file, a DICOM series folder, or a folder of them (also <case>/ct.nii.gz).
A bad case is reported at the end and the others still run (exit code 2 if any failed).
Under `torchrun --nproc_per_node=K` the cases are split over the K processes.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``sam-mix infer``."""
    p = sub.add_parser("infer", help="segment the liver in CT volumes (NIfTI / DICOM)", description=_DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="NIfTI file, DICOM series folder, or folder of cases")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", metavar="CKPT", help="training checkpoint (sam-mix train)")
    src.add_argument("--bundle", metavar="DIR", help="MONAI bundle folder (configs/inference.yaml + models/model.pt)")
    p.add_argument("--output", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--preview", action="store_true", help="also write a PNG with axial/coronal/sagittal overlays")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: cuda when available")
    p.add_argument("--batch-size", type=int, default=None, metavar="B", help="slices per forward pass (default 8)")
    p.add_argument("--window", nargs=2, type=float, metavar=("CENTER", "WIDTH"), default=None,
                   help="HU window used in training (default: the training store's, else "
                        f"{DEFAULT_WINDOW[0]:g} {DEFAULT_WINDOW[1]:g})")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"),
                   help="autocast precision (bf16: faster on recent CPUs; fp16: CUDA only; default fp32)")
    p.add_argument("--no-lcc", action="store_true", help="keep every connected component")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads (default: torch's)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def _device(name: str, local_rank: int) -> torch.device:
    from sam_mix_monai.inference.distributed import rank_device

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError(None, "--device cuda: no CUDA device available")
    return rank_device(name, local_rank)


def run(args: argparse.Namespace) -> int:
    """Segment the inputs; print one line per case and the failures at the end.

    The output folder is created when missing and removed again when the run leaves nothing in it;
    temporary files that a killed earlier run left there are removed first.
    """
    from sam_mix_monai.utils.atomic import output_folder

    with output_folder(args.output) as out:
        return _run(args, out)


def _run(args: argparse.Namespace, out) -> int:
    from sam_mix_monai.inference import (INFERABLE_MODELS, SlicePredictor, VolumeSliceInferer, find_cases, load_bundle,
                                         load_checkpoint)
    from sam_mix_monai.inference.loading import training_preprocessing
    from sam_mix_monai.inference.distributed import dist_info
    from sam_mix_monai.inference.runner import segment_cases
    from sam_mix_monai.utils.atomic import clean_stale_parts

    if args.batch_size is not None and args.batch_size < 1:
        raise InputError(None, f"--batch-size must be at least 1 (got {args.batch_size})")
    if args.window is not None and args.window[1] <= 0:
        raise InputError(None, f"--window: width must be positive (got {args.window[1]:g})")
    if args.threads:
        torch.set_num_threads(args.threads)
    rank, world, local_rank = dist_info()
    device = _device(args.device, local_rank)
    started = time.time()
    cases = find_cases(args.inputs)
    if rank == 0:  # leftovers of a killed earlier run writing these cases
        clean_stale_parts(out, before=started, stems=[f"{c.name}_liver." for c in cases])
    settings: dict = {}
    if args.checkpoint:
        network, cfg, record = load_checkpoint(args.checkpoint, device, models=INFERABLE_MODELS)
        settings = training_preprocessing(record)  # slice size / window of training
        settings.setdefault("image_size", cfg.image_size)
    else:
        network, settings = load_bundle(args.bundle, device)
    window = args.window or settings.get("window") or DEFAULT_WINDOW
    batch = args.batch_size or settings.get("batch_size") or 8
    if args.precision == "fp16" and device.type != "cuda":
        raise InputError(None, "--precision fp16 needs CUDA (use bf16 on CPU)")
    predictor = SlicePredictor(network, device=device, precision=args.precision)
    inferer = VolumeSliceInferer(image_size=settings.get("image_size") or predictor.image_size, batch_size=batch,
                                  window=window, device=device)
    progress = not args.no_progress
    if len(cases) == 1 and world == 1:  # one case: its problem is the command's error (one line, exit 2)
        from sam_mix_monai.inference.runner import segment_case

        inferer.progress = progress
        res = segment_case(cases[0], predictor, inferer, out, args.preview, not args.no_lcc)
        _print_case(res.summary, res.outputs)
        return 0
    report = segment_cases(cases, predictor, inferer, out, preview=args.preview, largest_component=not args.no_lcc,
                           rank=rank, world_size=world, progress=progress)
    for res in report.results:
        if res.ok:
            _print_case(res.summary, res.outputs)
    done = len(report.results) - len(report.failed)
    where = f" (rank {rank} of {world})" if world > 1 else ""
    print(f"segmented {done} of {len(report.results)} case(s) in {report.seconds:.1f} s{where}")
    for res in report.failed:
        print(f"sam-mix infer: error: {res.error}", file=sys.stderr)
    return report.exit_code


def _print_case(summary: dict, outputs: list) -> None:
    flag = "" if summary["quality"] == "ok" else f"  [check: {'; '.join(summary['quality_reasons'])}]"
    print(f"{summary['case']}: liver {summary['liver_volume_ml']:.1f} mL in {summary['slices_with_liver']}/"
          f"{summary['slices']} slices, {summary['seconds_total']:.1f} s -> {outputs[0]}{flag}")
