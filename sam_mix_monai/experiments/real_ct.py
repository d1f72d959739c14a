"""The demo's real-CT table: the committed TotalSegmentator example segmented by every demo model.

``examples/totalseg_example_dicom`` (Apache-2.0, see its ``NOTICE``) is 20 axial slices of a real,
contrast-enhanced abdominal CT with TotalSegmentator's liver mask. Rows, each a mask on the CT's own
voxel grid, scored by 3D Dice and HD95 (mm) against the reference resampled onto that grid
(:class:`monai.transforms.ResampleToMatch`, nearest neighbour: the mask's header is LAS, the CT's LPS):

* every trained demo model (SAM-Mix-50, U-Net-50), through ``sam-mix infer``'s code path
  (:func:`~sam_mix_monai.inference.runner.segment_cases`: automatic prompts, classifier gate, largest
  component, JSON summary with the quality flag of :mod:`~sam_mix_monai.inference.quality`);
* **SAM-PP-0**: the pretrained LiteMedSAM with no segmentation training, prompted on every slice by one
  point at the image centre (the test-time rule of :func:`~sam_mix_monai.engines.batch.centre_point`,
  as ``sam-mix evaluate`` scores SAM-PP), best of SAM's 3 masks by predicted IoU as in
  :class:`~sam_mix_monai.networks.baselines.SAMPP`: no reference involved, so it gets a quality flag too;
* **SAM, oracle box**: the same LiteMedSAM prompted by the reference's tight box on each slice, with
  LiteMedSAM's own inference procedure (:func:`~sam_mix_monai.networks.box_prompt.predict_box_mask`).
  An upper bound of what a box prompt can give, never a result.

Both LiteMedSAM rows use LiteMedSAM's own slice preparation (:func:`~sam_mix_monai.networks.box_prompt.prepare_sam_slice`:
longest side to 256, min-max, bottom/right padding) and share one encoder pass per slice; each row's
``seconds`` includes that pass.

Example:
    >>> outcome = run_real_ct([("SAM-Mix-50", Path("runs/demo/runs/sam_mix_50"))], Path("runs/demo"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sam_mix_monai.utils.errors import InputError, PathLike

__all__ = ["RealCtOutcome", "RealCtRow", "example_ct", "reference_on_grid", "run_real_ct", "score_masks",
           "segment_with_checkpoint"]

logger = logging.getLogger(__name__)
EXAMPLE = Path("examples") / "totalseg_example_dicom"


@dataclass
class RealCtRow:
    """One model on the real CT.

    Attributes:
        model: row label; ``prompt``: how it was prompted.
        dice, hd95_mm: 3D Dice and HD95 (mm) against the reference on the CT grid.
        volume_ml: the mask's volume; ``quality`` / ``reasons``: the summary's flag (``None`` for
            the reference-prompted rows, which ``sam-mix infer`` cannot run).
        seconds: wall time; ``oracle``: the reference placed the prompt; ``error``: why it did not run.
    """

    model: str
    prompt: str
    dice: float | None = None
    hd95_mm: float | None = None
    volume_ml: float | None = None
    quality: str | None = None
    reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0
    oracle: bool = False
    error: str | None = None


@dataclass
class RealCtOutcome:
    """The real-CT table and its figure.

    Attributes:
        image, label: the example's DICOM folder and reference mask.
        reference_ml: the reference's volume; ``slices``: the CT's axial slices.
        rows: the models; ``figure``: the side-by-side overlay PNG, if written.
        precision: of the forward passes (``fp32`` or ``bf16`` autocast).
    """

    image: Path
    label: Path
    reference_ml: float
    slices: int
    rows: list[RealCtRow]
    figure: Path | None = None
    precision: str = "fp32"


def example_ct() -> tuple[Path, Path]:
    """The committed example's DICOM folder and liver mask (working directory first, then the source checkout).

    Raises:
        InputError: when neither holds it.
    """
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        d = root / EXAMPLE
        if (d / "dicom").is_dir() and (d / "liver.nii.gz").is_file():
            return d / "dicom", d / "liver.nii.gz"
    raise InputError(EXAMPLE, "the real-CT example is missing (it ships with the repository)")


def reference_on_grid(image: Any, label: PathLike) -> np.ndarray:
    """A label file resampled (nearest neighbour, in physical space) onto ``image``'s voxel grid.

    Args:
        image: the CT as a ``(1, X, Y, Z)`` MetaTensor (:func:`~sam_mix_monai.data.io.read_volume`).
        label: a NIfTI mask on any grid covering the CT.

    Returns:
        ``(X, Y, Z)`` uint8 0/1 on the CT's grid.
    """
    from monai.transforms import ResampleToMatch

    from sam_mix_monai.data.io import read_volume

    ref = ResampleToMatch(mode="nearest", padding_mode="zeros")(read_volume(label), img_dst=image)
    return (np.asarray(ref.as_tensor()[0]) > 0.5).astype(np.uint8)


def score_masks(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> tuple[float, float]:
    """3D Dice and HD95 (mm) of two binary ``(X, Y, Z)`` masks on one grid (MONAI's metrics).

    HD95 is NaN when either mask is empty.
    """
    import torch
    from monai.metrics import compute_dice, compute_hausdorff_distance

    p = torch.from_numpy(np.asarray(pred) > 0)[None, None].float()
    r = torch.from_numpy(np.asarray(ref) > 0)[None, None].float()
    dice = float(compute_dice(p, r, include_background=True, ignore_empty=False)[0, 0])
    hd95 = float("nan")
    if p.any() and r.any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # a MONAI-internal deprecation
            hd95 = float(compute_hausdorff_distance(p, r, include_background=True, percentile=95,
                                                    spacing=[float(s) for s in spacing])[0, 0])
    return dice, hd95


def segment_with_checkpoint(checkpoint: PathLike, image: PathLike, out_dir: PathLike, progress: bool = False,
                            precision: str = "fp32", prompt_mode: str | None = None) -> tuple[Any, str]:
    """Segment one input with a training checkpoint exactly as ``sam-mix infer --preview`` does.

    ``precision`` is ``sam-mix infer --precision`` (``fp32`` or ``bf16`` autocast), ``prompt_mode`` its
    ``--prompt-mode`` (``None``: the model's own).

    Returns:
        The :class:`~sam_mix_monai.inference.runner.CaseResult` (mask, JSON, preview written to ``out_dir``)
        and the backend that ran the SAM image encoder (``onnxruntime`` or ``torch``).

    Raises:
        InputError: a bad checkpoint or input, or a failed case.
    """
    from sam_mix_monai.inference.segmenter import Segmenter

    # the sam-mix infer path itself: its default encoder backend (ONNX Runtime for LiteMedSAM on the CPU)
    segmenter = Segmenter(checkpoint, device="cpu", precision=precision, prompt_mode=prompt_mode, progress=progress)
    report = segmenter.run([image], out_dir, preview=True)
    res = report.results[0]
    if not res.ok:
        raise InputError(image, f"inference failed: {res.error}")
    return res, segmenter.encoder_backend


def _cam_prompt_text(run_dir: Path) -> str:
    """How a SAM-Mix run prompts SAM, from its resolved ``config.yaml`` (e.g. ``CAM box prompt, refined once``)."""
    import yaml

    try:
        model = (yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}).get("model") or {}
    except (OSError, yaml.YAMLError):
        model = {}
    kind = {"box": "CAM box prompt", "mask": "CAM mask prompt"}.get(model.get("prompts", "box+mask"), "CAM box + mask prompt")
    refine = int(model.get("box_refine") or 0)
    clip = ", cut to the body" if model.get("box_clip_body") and "box" in kind else ""
    return kind + clip + (f", box refined {refine}x from SAM's mask" if refine and "box" in kind else "")


def _is_sam_mix(run_dir: Path) -> bool:
    import yaml

    try:
        model = (yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}).get("model") or {}
    except (OSError, yaml.YAMLError):
        return False
    return model.get("name", "sam_mix") == "sam_mix"


def _trained_row(label: str, run_dir: Path, image: Path, ref: np.ndarray, spacing: np.ndarray, out: Path,
                 progress: bool, precision: str, prompt_mode: str | None = None) -> tuple[RealCtRow, np.ndarray | None]:
    import nibabel as nib

    t0 = time.perf_counter()
    row = RealCtRow(label, "none (dense prediction)")
    try:
        slug = re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_") or "run"
        res, _ = segment_with_checkpoint(run_dir / "best.pt", image, out / "real_ct" / slug, progress, precision,
                                         prompt_mode)
    except InputError as e:
        row.error = str(e)
        return row, None
    mask = (np.asarray(nib.load(str(res.outputs[0])).dataobj) > 0).astype(np.uint8)
    row.dice, row.hd95_mm = score_masks(mask, ref, spacing)
    s = res.summary
    row.volume_ml, row.quality, row.reasons = s.get("liver_volume_ml"), s.get("quality"), list(s.get("quality_reasons", []))
    if prompt_mode == "volume":
        row.prompt = "automatic: one 3D box prompt per CT (smooth edges, every slice of the liver's range)"
    elif s.get("mean_classifier_confidence") is not None:
        row.prompt = f"automatic, per slice: {_cam_prompt_text(run_dir)}, classifier gate"
    row.seconds = time.perf_counter() - t0
    return row, mask


def _prompted_rows(ct: Any, ref: np.ndarray, spacing: np.ndarray,
                   precision: str = "fp32") -> list[tuple[RealCtRow, np.ndarray | None]]:
    """SAM-PP-0 (centre point, every slice) and the oracle box, both with the pretrained LiteMedSAM."""
    import torch

    from sam_mix_monai.inference.geometry import AxialGeometry
    from sam_mix_monai.inference.summary import case_summary
    from sam_mix_monai.networks import encode_slices, predict_box_mask, predict_point_mask, prepare_sam_slice
    from sam_mix_monai.networks.encoder_backend import apply_encoder_backend
    from sam_mix_monai.networks.registry import ModelConfig, build_model
    from sam_mix_monai.transforms import DEFAULT_WINDOW, HUWindow
    from sam_mix_monai.utils.precision import autocast

    geo = AxialGeometry(np.asarray(ct.affine, dtype=np.float64), tuple(ct.shape[1:]))
    hu = np.asarray(ct.as_tensor()[0])
    slices = HUWindow(*DEFAULT_WINDOW)(torch.from_numpy(geo.read_slab(hu, 0, geo.depth).astype(np.float32)))
    truth = torch.from_numpy(geo.read_slab(ref, 0, geo.depth).astype(np.float32))
    net = build_model(ModelConfig(name="sam_pp")).eval()  # default SAM: the packaged LiteMedSAM weights
    apply_encoder_backend(net.sam, torch.device("cpu"), "auto")  # sam-mix infer's default encoder backend
    volume_ml = geo.voxel_volume_ml
    rows = []

    # One encoder pass per slice serves both rows (the encoder is nearly all the cost).
    t0 = time.perf_counter()
    with autocast(precision, "cpu"):
        prepared = encode_slices(net.sam, [prepare_sam_slice(slices[k], net.sam) for k in range(geo.depth)])
    for p in prepared:
        p.embedding = p.embedding.float()  # the decoder runs in fp32
    t_encode = time.perf_counter() - t0
    h, w = slices.shape[-2:]
    t0 = time.perf_counter()
    centre = ((w - 1) / 2.0, (h - 1) / 2.0)  # the rule of engines.batch.centre_point
    point = np.stack([predict_point_mask(net.sam, p, centre).mask for p in prepared])
    rows.append((RealCtRow("SAM-PP-0", "1 point per slice at the image centre, LiteMedSAM zero-shot",
                           seconds=t_encode + time.perf_counter() - t0), point))
    t0 = time.perf_counter()
    box = np.zeros(truth.shape, bool)
    for k, p in enumerate(prepared):
        if truth[k].any():  # no liver, no box: an empty slice
            ys, xs = np.nonzero(truth[k].numpy())
            box[k] = predict_box_mask(net.sam, p, (xs.min(), ys.min(), xs.max(), ys.max())).mask
    rows.append((RealCtRow("SAM, oracle box", "tight box of the reference per slice (upper bound), LiteMedSAM zero-shot",
                           oracle=True, seconds=t_encode + time.perf_counter() - t0), box))

    scored = []
    for row, display in rows:
        mask = np.zeros(geo.shape, np.uint8)
        geo.write_slab(mask, np.asarray(display, dtype=np.uint8), 0, geo.depth)
        row.dice, row.hd95_mm = score_masks(mask, ref, spacing)
        row.volume_ml = round(float(mask.sum()) * volume_ml, 1)
        if not row.oracle:  # the quality flag sam-mix infer would give this mask
            s = case_summary(mask, geo, image=hu)
            row.quality, row.reasons = s["quality"], list(s["quality_reasons"])
        scored.append((row, mask))
    return scored


def _figure(ct: Any, ref: np.ndarray, masks: dict[str, np.ndarray], path: Path) -> Path:
    """Three axial slices (lower, middle, upper) with the reference and each model's mask."""
    import torch

    from sam_mix_monai.experiments.figures import save_prediction_comparison
    from sam_mix_monai.inference.geometry import AxialGeometry
    from sam_mix_monai.transforms import DEFAULT_WINDOW, HUWindow

    geo = AxialGeometry(np.asarray(ct.affine, dtype=np.float64), tuple(ct.shape[1:]))
    ks = sorted({int(round(f * (geo.depth - 1))) for f in (0.15, 0.5, 0.85)})

    def show(vol: np.ndarray) -> list[np.ndarray]:
        return [geo.read_slab(vol, k, k + 1)[0] for k in ks]

    images = [np.asarray(HUWindow(*DEFAULT_WINDOW)(torch.from_numpy(s.astype(np.float32)))) for s in show(np.asarray(ct.as_tensor()[0]))]
    preds = {name: show(m) for name, m in masks.items()}
    return save_prediction_comparison(images, show(ref), preds, path, [f"slice {k}" for k in ks],
                                      suptitle="real CT: reference (green) vs prediction (red)")


def run_real_ct(runs: Sequence[tuple[str, Path]], out: Path, progress: bool = False,
                prompted: bool = True, precision: str = "fp32") -> RealCtOutcome:
    """Segment the committed real CT with each trained run, plus SAM-PP-0 and the oracle box.

    Args:
        runs: ``(label, run directory with best.pt)`` of the trained demo models, in table order.
        out: the demo folder (masks under ``out/real_ct/``, the figure under ``out/figures/``).
        progress: progress bars.
        prompted: also the two LiteMedSAM zero-shot rows.
        precision: ``fp32`` or ``bf16`` (autocast) for every network's forward pass.

    Returns:
        The rows (a row that failed carries its one-line error) and the figure.
    """
    from sam_mix_monai.data.io import read_volume, voxel_spacing

    image, label = example_ct()
    ct = read_volume(image)
    ref = reference_on_grid(ct, label)
    affine = np.asarray(ct.affine, dtype=np.float64)
    spacing = voxel_spacing(affine)
    ref_ml = round(float(ref.sum()) * float(abs(np.linalg.det(affine[:3, :3]))) / 1000.0, 1)
    results = []
    for lab, d in runs:  # a SAM-Mix in both prompt modes: volume (the default) and slice (the paper's)
        modes = ("volume", "slice") if _is_sam_mix(Path(d)) else (None,)
        for mode in modes:
            name = lab if mode is None else f"{lab}, {mode} prompt" + ("s" if mode == "slice" else "")
            results.append(_trained_row(name, Path(d), image, ref, spacing, out, progress, precision, mode))
    if prompted:
        try:
            results += _prompted_rows(ct, ref, spacing, precision)
        except (InputError, ImportError, ValueError) as e:  # e.g. LiteMedSAM unavailable
            logger.warning("real CT: the LiteMedSAM rows did not run: %s", e)
            results.append((RealCtRow("SAM-PP-0 / oracle box", "LiteMedSAM", error=str(e)), None))
    figure = None
    masks = {r.model: m for r, m in results if m is not None}
    if masks:
        figure = _figure(ct, ref, masks, out / "figures" / "real_ct.png")
    return RealCtOutcome(image, label, ref_ml, int(ct.shape[3]), [r for r, _ in results], figure, precision)
