"""``sam-mix infer``: segment the liver in CT volumes (NIfTI files, folders, DICOM series)."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from sam_mix_monai.utils.errors import InputError

# Kept here, not imported: ``sam-mix infer --help`` and argument errors must not wait for torch / MONAI.
# tests/cli/test_infer.py checks them against sam_mix_monai.transforms.DEFAULT_WINDOW and .settings' FAST_* values.
DEFAULT_WINDOW = (40.0, 400.0)
FAST_BATCH_SIZE = 32
FAST_Z_STEP_MM = 4.0

logger = logging.getLogger(__name__)

_DESCRIPTION = """\
Segment the liver in every axial slice of each CT volume (classifier-gated SAM-Mix, batched),
map the mask back onto the input grid, keep the largest 3D component and write, per case:

  OUTPUT/<case>_liver.nii.gz  uint8 mask, the input's exact shape and affine
  OUTPUT/<case>_liver.json    always: liver volume (mL), slices with liver, classifier confidence,
                              predicted IoU, quality flag, and statistics (HU mean, median,
                              p5, p95 inside the mask; touches_border per array axis i, j, k)
  OUTPUT/<case>_liver.png     with --preview: axial, coronal and sagittal overlays
  OUTPUT/<case>_liver_probabilities.nii.gz  with --save-probabilities: liver probability in [0, 1]
                              (NIfTI has no float16: uint16 with scl_slope 1/65535, 2 bytes/voxel)
  OUTPUT/<case>_liver.dcm     with --output-type dicom_seg (DICOM input): the mask as a DICOM-SEG
  OUTPUT/statistics.csv       with several cases: one row of statistics per case

INPUT is a NIfTI, NRRD or MHA file, a DICOM series folder or a .zip of one, or a folder of them
(also <case>/ct.nii.gz); -i/--input adds inputs too. The model is loaded once (Python API:
sam_mix_monai.Segmenter).
A bad case is reported at the end and the others still run (exit code 2 if any failed).
Under `torchrun --nproc_per_node=K` the cases are split over the K processes.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``sam-mix infer``."""
    p = sub.add_parser("infer", help="segment the liver in CT volumes (NIfTI / DICOM)", description=_DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="volume file, DICOM series folder, or folder of cases")
    p.add_argument("-i", "--input", action="append", default=[], dest="input_flags", metavar="INPUT",
                   help="an input, as the positional INPUT (repeatable)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", metavar="CKPT", help="training checkpoint (sam-mix train)")
    src.add_argument("--bundle", metavar="DIR", help="MONAI bundle folder (configs/inference.yaml + models/model.pt)")
    p.add_argument("--box", metavar="X1,Y1,Z1,X2,Y2,Z2",
                   help="a 3D box prompt: 0-based inclusive voxel indices along the input array's axes (NIfTI i, j, k "
                        "as ITK-SNAP / 3D Slicer show them; DICOM columns, rows, slice order). Replaces the CAM prompt "
                        "of a SAM-Mix checkpoint; without --checkpoint/--bundle the pretrained LiteMedSAM segments "
                        "alone. Propagated slice to slice as in MedSAM")
    p.add_argument("--prompt-mode", choices=("volume", "slice"), default=None,
                   help="SAM-Mix prompts: volume (one consistent 3D prompt per CT from the whole volume's evidence, "
                        "the SAM on every slice of the liver's range) or slice (the paper's per-slice CAM prompts); "
                        "default: the model's own (volume)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--preview", action="store_true", help="also write a PNG with axial/coronal/sagittal overlays")
    p.add_argument("-d", "--device", default="auto", metavar="DEVICE",
                   help="auto, cpu, cuda, cuda:N or mps (default auto: CUDA, then MPS, then CPU)")
    p.add_argument("--batch-size", type=int, default=None, metavar="B", help="slices per forward pass (default 8)")
    p.add_argument("--window", nargs=2, type=float, metavar=("CENTER", "WIDTH"), default=None,
                   help="HU window used in training (default: the training store's, else "
                        f"{DEFAULT_WINDOW[0]:g} {DEFAULT_WINDOW[1]:g})")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"),
                   help="autocast precision (bf16: faster on recent CPUs; fp16: CUDA only; default fp32)")
    p.add_argument("--fast", action="store_true",
                   help=f"the options that trade exactness for speed: fp16 autocast on CUDA, bf16 on CPUs with AVX512-BF16 / AMX, "
                        f"batch {FAST_BATCH_SIZE}, volume mode on slices {FAST_Z_STEP_MM:g} mm apart (--z-step-mm) "
                        "(same weights and slice size)")
    p.add_argument("--z-step-mm", type=float, default=None, metavar="MM",
                   help="volume prompt mode: run the networks on slices about MM apart and interpolate the slices "
                        f"between (default: {FAST_Z_STEP_MM:g} with --fast, else 0: every slice)")
    p.add_argument("--encoder-backend", default="auto", choices=("auto", "torch", "onnxruntime"),
                   help="what runs the SAM image encoder: auto (default: ONNX Runtime fp32 for LiteMedSAM on CPU, "
                        "the same masks as PyTorch within docs/benchmarks.md's tolerance; PyTorch otherwise), "
                        "torch (eager PyTorch) or onnxruntime (CPU)")
    p.add_argument("--skip-existing", action="store_true", help="leave cases alone whose whole output set exists (mask, JSON, and the preview / "
                        "probabilities when asked for) and whose JSON matches the mask")
    p.add_argument("--save-probabilities", action="store_true",
                   help="also write <case>_liver_probabilities.nii.gz (liver probability, 2 bytes per voxel)")
    p.add_argument("-ot", "--output-type", action="append", type=_types, default=None, metavar="TYPE",
                   help="nifti (default), dicom_seg (a DICOM-SEG <case>_liver.dcm referencing the input series; "
                        "DICOM input only), or both: nifti,dicom_seg (repeatable)")
    p.add_argument("--no-lcc", action="store_true", help="keep every connected component")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads (default: torch's)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


_OUTPUT_TYPES = ("nifti", "dicom_seg")  # = inference.outputs.OUTPUT_TYPES (tests check), kept here for a fast --help


def _types(text: str) -> list[str]:
    types = [t.strip().lower().replace("-", "_") for t in text.split(",") if t.strip()]
    bad = [t for t in types if t not in _OUTPUT_TYPES]
    if bad or not types:
        raise argparse.ArgumentTypeError(f"{text!r}: expected nifti, dicom_seg or nifti,dicom_seg")
    return types


def run(args: argparse.Namespace) -> int:
    """Segment the inputs; print one line per case and the failures at the end.

    The output folder is created when missing and removed again when the run leaves nothing in it;
    temporary files that a killed earlier run left there are removed first.
    """
    from sam_mix_monai.utils.atomic import output_folder

    inputs = [*args.inputs, *args.input_flags]
    if not inputs:
        raise InputError(None, "no input: give INPUT or -i/--input")
    with output_folder(args.output) as out:
        return _run(args, inputs, out)


def _run(args: argparse.Namespace, inputs: list, out) -> int:
    from sam_mix_monai.inference.cases import find_cases
    from sam_mix_monai.inference.distributed import dist_info
    from sam_mix_monai.inference.runner import Model, segment_cases
    from sam_mix_monai.inference.segmenter import Segmenter
    from sam_mix_monai.inference.settings import InferenceSettings, OutputSettings
    from sam_mix_monai.utils.atomic import clean_stale_parts

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    rank, world, _ = dist_info()
    started = time.time()
    cases = find_cases(inputs)
    settings = InferenceSettings.from_args(args)
    outputs = OutputSettings.from_args(args, cases[0].path if len(cases) == 1 else None)
    alone = len(cases) == 1 and world == 1  # one case: its problem is the command's error (one line, exit 2)
    if rank == 0:  # leftovers of a killed earlier run writing these cases
        clean_stale_parts(out, before=started, stems=[f"{c.name}_liver." for c in cases])

    def model() -> Model:  # loaded once the first case to segment is read and checked: a bad input fails fast and small
        return Segmenter(args.checkpoint, args.bundle, settings).model(outputs.box)

    report = segment_cases(cases, model, out, outputs, settings, rank, world, raise_errors=alone)
    for res in report.results:
        if res.skipped:
            print(f"{res.case.name}: skipped, {res.outputs[0]} exists")
        elif res.ok:
            _print_case(res.summary, res.outputs)
    if alone:
        return 0
    done = len(report.results) - len(report.failed)
    where = f" (rank {rank} of {world})" if world > 1 else ""
    print(f"segmented {done} of {len(report.results)} case(s) in {report.seconds:.1f} s{where}")
    for res in report.failed:
        print(f"sam-mix infer: error: {res.error}", file=sys.stderr)
    return report.exit_code


def _print_case(summary: dict, outputs: list) -> None:
    flag = "" if summary["quality"] == "ok" else f"  [check: {'; '.join(summary['quality_reasons'])}]"
    edge = [a for a, hit in summary.get("statistics", {}).get("touches_border", {}).items() if hit]
    border = f"  [touches the scan edge along {', '.join(edge)}]" if edge else ""
    print(f"{summary['case']}: liver {summary['liver_volume_ml']:.1f} mL in {summary['slices_with_liver']}/"
          f"{summary['slices']} slices, {summary['seconds_total']:.1f} s -> {outputs[0]}{flag}{border}")
