"""Exporting the single-output SAM-Mix network to TorchScript or ONNX, and checking it against eager.

Both go through MONAI's converters, the same code ``python -m monai.bundle ckpt_export`` /
``onnx_export`` run:

* TorchScript: :func:`monai.networks.utils.convert_to_torchscript` with ``use_trace=True``
  (``segment_anything`` modules do not script), saved with
  :func:`monai.data.save_net_with_metadata` (``torch.jit.load`` reads it; the metadata and the
  model config ride along as extra files);
* ONNX: :func:`monai.networks.utils.convert_to_onnx` with input ``image`` and output ``pred``, both
  with a dynamic batch axis.

The exported graph runs without ``sam_mix_monai`` (or MONAI) installed. Its input is
``(B, 1, S, S)`` windowed slices in [0, 1]; its output ``(B, 1, S, S)`` mask logits, liver-free
slices gated to -1e4.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from sam_mix_monai.utils.atomic import atomic_output, ensure_free_space
from sam_mix_monai.utils.errors import InputError, PathLike

__all__ = [
    "FORMATS",
    "ExportCheck",
    "check_export",
    "default_check_batch",
    "export_network",
    "export_summary",
    "require_finite_outputs",
    "run_exported",
]

logger = logging.getLogger(__name__)

FORMATS = ("torchscript", "onnx")
Format = Literal["torchscript", "onnx"]


@dataclass
class ExportCheck:
    """Agreement of an exported model with the eager one on the same inputs.

    Attributes:
        max_abs_diff: largest absolute logit difference over non-gated pixels.
        mask_agreement: share of pixels with the same mask decision (logit > 0).
        batch: the batch size checked (differs from the traced one, to test the dynamic batch axis).
    """

    max_abs_diff: float
    mask_agreement: float
    batch: int


def export_network(
    network: nn.Module,
    fmt: Format,
    output: PathLike,
    image_size: int,
    trace_batch: int = 2,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Export a single-output network (e.g. :class:`~sam_mix_monai.networks.SAMMixInference`).

    Args:
        network: module with ``forward(x) -> Tensor``.
        fmt: ``torchscript`` or ``onnx``.
        output: file to write (atomically).
        image_size: square input size ``S``.
        trace_batch: batch size of the tracing input.
        meta: JSON-serialisable metadata (TorchScript: stored as ``metadata.json``).

    Returns:
        The written path.
    """
    from monai.networks.utils import convert_to_onnx, convert_to_torchscript

    if fmt not in FORMATS:
        raise InputError(None, f"unknown export format {fmt!r} (choose from {', '.join(FORMATS)})")
    network = network.cpu().eval()
    for noisy in ("onnx_ir", "onnxscript", "torch.onnx"):  # INFO lines per folded constant
        logging.getLogger(noisy).setLevel(logging.WARNING)
    x = torch.rand(trace_batch, 1, image_size, image_size, generator=torch.Generator().manual_seed(0))
    target = Path(output)
    weights = sum(t.numel() * t.element_size() for t in network.state_dict().values())
    ensure_free_space(target.parent, int(weights * 1.2), target)  # refuse before tracing, not midway
    from sam_mix_monai.networks.traceable import traceable_tiny_vit

    with warnings.catch_warnings(), traceable_tiny_vit():  # LiteMedSAM: a dynamic batch in the trace
        warnings.simplefilter("ignore")  # tracer warnings about python-side shape logic (static here)
        with atomic_output(target) as tmp:
            if fmt == "torchscript":
                from monai.data import save_net_with_metadata

                # check_trace=False: torch's re-run of the trace fails on LiteMedSAM's TinyViT views
                # ("view size is not compatible"); check_export compares the saved file with eager instead.
                ts = convert_to_torchscript(network, use_trace=True, inputs=[x], check_trace=False)
                # Serialised in memory, written by Python: torch's C++ file writer aborts the process
                # (SIGABRT) on a full disk, where a Python write raises OSError (one line, no .part left).
                buf = io.BytesIO()
                save_net_with_metadata(ts, buf, include_config_vals=False, append_timestamp=False,
                                       meta_values=meta or {})
                try:
                    _write_bytes(tmp, buf.getvalue())
                except OSError as e:
                    raise InputError(target, f"cannot write the TorchScript file: {e.strerror or e}") from None
            else:
                axes = {"image": {0: "batch"}, "pred": {0: "batch"}}
                with contextlib.redirect_stdout(io.StringIO()):  # the ONNX optimiser prints every folded constant
                    convert_to_onnx(network, inputs=[x], input_names=["image"], output_names=["pred"],
                                    dynamic_axes=axes, filename=str(tmp), use_trace=True, external_data=False)
                if meta:
                    import onnx

                    model = onnx.load(str(tmp))
                    onnx.helper.set_model_props(model, {"sam_mix_monai": json.dumps(meta)})
                    onnx.save(model, str(tmp))
    logger.info("exported %s to %s", fmt, target)
    return target


def _write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (a full disk raises ``OSError``; tests replace this writer)."""
    with open(path, "wb") as f:
        f.write(data)


def run_exported(path: PathLike, fmt: Format, image: torch.Tensor) -> torch.Tensor:
    """Run an exported model on ``(B, 1, S, S)`` slices (CPU)."""
    if fmt == "torchscript":
        model = torch.jit.load(str(path), map_location="cpu")
        with torch.no_grad():
            return model(image)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(sess.run(None, {"image": image.numpy()})[0])


def check_export(path: PathLike, fmt: Format, network: nn.Module, image: torch.Tensor) -> ExportCheck:
    """Compare an exported model with ``network`` on ``image``.

    Args:
        path: exported file.
        fmt: its format.
        network: the eager single-output network.
        image: (B, 1, S, S) slices in [0, 1].

    Returns:
        The agreement (pixels gated in both count as equal).

    Raises:
        InputError: the exported model's outputs are not finite.
    """
    with torch.no_grad():
        eager = network.cpu().eval()(image)
    exported = run_exported(path, fmt, image)
    if not bool(torch.isfinite(exported).all()):
        raise InputError(path, "the exported model gives NaN or infinite outputs on the check batch: refused")
    live = (eager > -1.0e3) | (exported > -1.0e3)
    diff = (eager - exported).abs()
    max_diff = float(diff[live].max()) if bool(live.any()) else 0.0
    agree = float(((eager > 0) == (exported > 0)).float().mean())
    return ExportCheck(max_abs_diff=max_diff, mask_agreement=agree, batch=int(image.shape[0]))


def require_finite_outputs(network: nn.Module, image: torch.Tensor, source: PathLike | None) -> None:
    """Refuse to export a network whose outputs on ``image`` hold NaN or infinite values.

    Raises:
        InputError: naming ``source`` (the checkpoint or bundle).
    """
    with torch.no_grad():
        out = network.cpu().eval()(image)
    if not bool(torch.isfinite(out).all()):
        raise InputError(source, "the network gives NaN or infinite outputs on the check batch: refused (nothing written)")


def default_check_batch(image_size: int, batch: int = 3, seed: int = 0) -> torch.Tensor:
    """A smooth random batch (blobs rather than white noise) for :func:`check_export`."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(batch, 1, max(2, image_size // 16), max(2, image_size // 16), generator=g)
    img = torch.nn.functional.interpolate(low, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return img.clamp(0, 1).contiguous()


def export_summary(check: ExportCheck) -> str:
    """One line describing an :class:`ExportCheck`."""
    return (f"max |logit difference| {check.max_abs_diff:.2e}, mask agreement {100 * check.mask_agreement:.4f}% "
            f"(batch {check.batch})")

