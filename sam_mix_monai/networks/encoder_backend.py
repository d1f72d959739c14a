"""Which backend runs a SAM image encoder at inference: eager PyTorch or ONNX Runtime (fp32, or int8).

``auto`` (the default of :class:`~sam_mix_monai.inference.segmenter.Segmenter` and ``sam-mix infer``)
runs a LiteMedSAM (TinyViT) encoder on the CPU through ONNX Runtime: the fastest backend measured
(``make bench``: about 3x eager fp32 per slice) and, in fp32, the same masks within the tolerance
``docs/benchmarks.md`` states (3D Dice change <= 0.002 on every real CT at hand, eager against ONNX
Runtime, reference box). ViT-B/L/H encoders, GPUs and MPS keep PyTorch. ``torch`` forces eager PyTorch.

The ONNX file is exported once per weights: it is cached in the user's cache folder
(:func:`cache_dir`, keyed by the SHA-256 of the encoder's weights), never in the package or next to an
input, and the ONNX Runtime session once per process (a second ``Segmenter`` neither exports nor loads
again).

``int8`` (ONNX Runtime dynamic quantization of the encoder's matrix products) changes results. Before
it runs, :func:`check_int8` compares its masks with the fp32 encoder's on phantom slices with a box
prompt (:data:`INT8_TOLERANCE`), and it refuses to run (:class:`QuantizationToleranceError`) where
the check fails.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sam_mix_monai.networks.onnx_encoder import OnnxEncoder, export_encoder, ort_session

__all__ = ["ENCODER_BACKENDS", "FAST_QUANTIZATION", "INT8_TOLERANCE", "QUANTIZATIONS", "CountingEncoder", "QuantizationToleranceError",
           "apply_encoder_backend", "cache_dir", "check_int8", "onnx_encoder_file", "resolve_encoder_backend",
           "weights_hash"]

logger = logging.getLogger(__name__)

#: ``--encoder-backend`` choices.
ENCODER_BACKENDS = ("auto", "torch", "onnxruntime")
#: Encoder weight quantizations (ONNX Runtime only).
QUANTIZATIONS = ("none", "int8")
#: Largest mask Dice change (1 - Dice of the int8 against the fp32 encoder's masks) :func:`check_int8` accepts.
INT8_TOLERANCE = 0.005
#: Slices per exported ONNX encoder call: batch 1 is the fastest measured on CPU (``benchmarks/bench_lite.py``).
ONNX_BATCH = 1
#: What ``fast`` adds on the CPU: the int8 encoder (checked by :func:`check_int8` first) or ``none``.
FAST_QUANTIZATION = "none"

_SESSIONS: dict[tuple, tuple[Any, Path]] = {}  # (weights hash, size, batch, quantization, threads) -> (session, file)
_CHECKS: dict[str, float] = {}  # int8 file -> measured Dice change


class QuantizationToleranceError(RuntimeError):
    """A quantized encoder's masks differ from the fp32 encoder's by more than its tolerance."""


def cache_dir() -> Path:
    """The user cache folder for exported encoders: ``$SAM_MIX_CACHE_DIR``, else ``$XDG_CACHE_HOME/sam_mix_monai``
    (``~/.cache/sam_mix_monai``), with ``onnx/`` below it."""
    root = os.environ.get("SAM_MIX_CACHE_DIR")
    if not root:
        root = str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sam_mix_monai")
    return Path(root) / "onnx"


def weights_hash(module: nn.Module) -> str:
    """SHA-256 (hex) of a module's class name and state dict (names, shapes, dtypes and values)."""
    h = hashlib.sha256(type(module).__name__.encode())
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _writable(folder: Path) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
        return folder
    except OSError:
        fallback = Path(tempfile.gettempdir()) / f"sam_mix_monai-{os.getuid() if hasattr(os, 'getuid') else 'u'}" / "onnx"
        logger.warning("cache folder %s is not writable: exported encoders go to %s", folder, fallback)
        fallback.mkdir(parents=True, exist_ok=True)
        return fallback


def onnx_encoder_file(encoder: nn.Module, batch: int = ONNX_BATCH, quantization: str = "none",
                      digest: str | None = None) -> Path:
    """The cached ``.onnx`` export of ``encoder`` (exported, and quantized, the first time only).

    Args:
        encoder: the eval-mode PyTorch image encoder.
        batch: the exported batch size.
        quantization: ``none`` or ``int8`` (dynamic quantization of MatMul / Gemm weights).
        digest: :func:`weights_hash` of ``encoder`` if already known.

    Returns:
        The file, in :func:`cache_dir` (written atomically: a concurrent process sees it whole or not at all).
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization {quantization!r}: expected one of {QUANTIZATIONS}")
    digest = digest or weights_hash(encoder)
    folder = _writable(cache_dir())
    stem = f"encoder-{digest[:20]}-s{int(encoder.img_size)}-b{int(batch)}"
    fp32 = folder / f"{stem}.onnx"
    if not fp32.is_file():
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            export_encoder(encoder, Path(tmp) / "e.onnx", batch)
            os.replace(Path(tmp) / "e.onnx", fp32)
        logger.info("exported the image encoder to %s", fp32)
    if quantization == "none":
        return fp32
    q = folder / f"{stem}-int8.onnx"
    if not q.is_file():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            quantize_dynamic(str(fp32), str(Path(tmp) / "q.onnx"), weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul", "Gemm"])
            os.replace(Path(tmp) / "q.onnx", q)
    return q


def _onnx(encoder: nn.Module, digest: str, quantization: str, threads: int | None) -> OnnxEncoder:
    """An :class:`OnnxEncoder` on the process's session of this export (created, and exported, once)."""
    n = int(threads or torch.get_num_threads())
    key = (digest, int(encoder.img_size), ONNX_BATCH, quantization, n)
    if key not in _SESSIONS:
        path = onnx_encoder_file(encoder, ONNX_BATCH, quantization, digest)
        _SESSIONS[key] = (ort_session(path, n), path)
    session, path = _SESSIONS[key]
    return OnnxEncoder(encoder, ONNX_BATCH, path=path, session=session)


def resolve_encoder_backend(sam: nn.Module, device: torch.device | str, backend: str = "auto") -> str:
    """``torch`` or ``onnxruntime``: what ``backend`` means for this SAM on this device.

    ``auto``: ONNX Runtime for a LiteMedSAM (TinyViT) encoder on the CPU, PyTorch otherwise.

    Raises:
        ValueError: an unknown backend, or ``onnxruntime`` asked for a device other than the CPU.
    """
    from sam_mix_monai.networks.lite_medsam import LiteImageEncoder

    if backend not in ENCODER_BACKENDS:
        raise ValueError(f"encoder backend {backend!r}: expected one of {', '.join(ENCODER_BACKENDS)}")
    cpu = torch.device(device).type == "cpu"
    if backend == "onnxruntime" and not cpu:
        raise ValueError(f"encoder backend onnxruntime runs on the CPU only (device {device})")
    if backend == "auto":
        return "onnxruntime" if cpu and isinstance(sam.image_encoder, LiteImageEncoder) else "torch"
    return backend


def _phantom_slices(n: int = 3, size: int = 256) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` windowed (0..1) phantom CT slices with liver, and their liver masks (deterministic)."""
    from sam_mix_monai.data.phantom import generate_case

    case = generate_case(0, 0, "a", size, 24)
    img, lab = np.asarray(case.image, np.float32), np.asarray(case.label) > 0
    zs = [z for z in range(lab.shape[2]) if lab[..., z].sum() > 200]
    picks = [zs[int(i)] for i in np.linspace(0, len(zs) - 1, n).round()]
    return [(np.clip((img[..., z].T + 160) / 400, 0, 1), lab[..., z].T) for z in picks]


def check_int8(sam: nn.Module, fp32: nn.Module, int8: nn.Module, slices: list | None = None) -> float:
    """The largest mask Dice change (1 - Dice) between two encoders of ``sam``, box-prompted on phantom slices.

    Args:
        sam: the SAM whose prompt encoder and mask decoder decode both embeddings.
        fp32: the reference encoder.
        int8: the encoder to check.
        slices: ``(image, mask)`` pairs (default: :func:`_phantom_slices`).

    Returns:
        ``max over slices of 1 - Dice(mask with int8, mask with fp32)``.
    """
    from sam_mix_monai.networks.box_prompt import predict_box_mask, prepare_sam_slice

    worst = 0.0
    original = sam.image_encoder
    try:
        for image, mask in slices or _phantom_slices():
            rows, cols = np.nonzero(mask)
            box = (cols.min(), rows.min(), cols.max(), rows.max())
            masks = []
            for enc in (fp32, int8):
                sam.image_encoder = enc
                with torch.no_grad():
                    masks.append(predict_box_mask(sam, prepare_sam_slice(image, sam), box).mask.astype(bool))
            denom = masks[0].sum() + masks[1].sum()
            dice = 1.0 if denom == 0 else 2 * (masks[0] & masks[1]).sum() / denom
            worst = max(worst, 1.0 - float(dice))
    finally:
        sam.image_encoder = original
    return worst


def apply_encoder_backend(sam: nn.Module, device: torch.device | str, backend: str = "auto",
                          quantization: str = "none", threads: int | None = None, strict: bool = True) -> str:
    """Swap ``sam.image_encoder`` for the backend ``backend`` resolves to (inference only); returns that backend.

    Args:
        sam: a ``segment_anything`` ``Sam`` (put in eval mode here).
        device: where the SAM runs.
        backend: ``auto``, ``torch`` or ``onnxruntime`` (see :func:`resolve_encoder_backend`).
        quantization: ``none`` or ``int8`` (ONNX Runtime only; checked with :func:`check_int8` first).
        threads: ONNX Runtime intra-op threads (``None``: torch's thread count).
        strict: a failed int8 check raises; ``False``: it warns and the fp32 ONNX encoder runs instead.

    Raises:
        ValueError: an unknown backend or quantization, or int8 asked for with the PyTorch backend.
        QuantizationToleranceError: ``strict`` and the int8 encoder failed its check.
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization {quantization!r}: expected one of {', '.join(QUANTIZATIONS)}")
    if isinstance(sam.image_encoder, OnnxEncoder):  # already swapped (the box SAM of a checkpoint's SAM-Mix)
        return "onnxruntime"
    resolved = resolve_encoder_backend(sam, device, backend)
    if resolved == "torch":
        if quantization != "none":
            raise ValueError("int8 needs the onnxruntime encoder backend (on the CPU)")
        return "torch"
    sam.eval()
    enc = sam.image_encoder
    digest = weights_hash(enc)
    try:
        fp32 = _onnx(enc, digest, "none", threads)
    except Exception as e:  # noqa: BLE001 (any exporter / runtime failure)
        if backend != "auto" or quantization != "none":
            raise
        logger.warning("ONNX export of the image encoder failed (%s: %s): eager PyTorch runs it", type(e).__name__, e)
        return "torch"
    sam.image_encoder = fp32
    if quantization == "int8":
        q = _onnx(enc, digest, "int8", threads)
        if digest not in _CHECKS:
            _CHECKS[digest] = check_int8(sam, fp32, q)
        change = _CHECKS[digest]
        if change > INT8_TOLERANCE:
            msg = (f"int8 encoder refused: its masks differ from fp32 by a Dice change of {change:.4f} on the check "
                   f"slices (tolerance {INT8_TOLERANCE})")
            if strict:
                raise QuantizationToleranceError(msg)
            logger.warning("%s; running the fp32 ONNX Runtime encoder instead", msg)
        else:
            sam.image_encoder = q
    return "onnxruntime"


class CountingEncoder(nn.Module):
    """Wraps an image encoder and counts its calls and the slices it encoded (benchmarks, tests).

    Attributes:
        calls: forward calls.
        slices: slices encoded (the sum of the batch sizes).
    """

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.img_size = int(encoder.img_size)
        self.calls = 0
        self.slices = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The wrapped encoder's embeddings of ``x``, counted."""
        self.calls += 1
        self.slices += int(x.shape[0])
        return self.encoder(x)
