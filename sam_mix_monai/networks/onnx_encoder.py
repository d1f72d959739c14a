"""A frozen SAM image encoder run by ONNX Runtime (inference only; CPU speed).

Measured here on 2 shared cores (``benchmarks/bench_lite.py``, docs/benchmarks.md), ONNX Runtime
runs LiteMedSAM's TinyViT several times faster than eager PyTorch at batch 1 (fused convolutions and
layer norms). :func:`use_onnx_encoder` exports the encoder once (``torch.onnx.export``, TorchScript
exporter) at a fixed batch size, because TinyViT's ``PatchMerging`` bakes ``len(x)`` into a reshape,
and pads the last, partial batch. The module keeps the encoder's interface (``img_size``,
``forward(x) -> embeddings``), so :func:`.decoding.sam_forward` and :mod:`.box_prompt` use it unchanged.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["OnnxEncoder", "export_encoder", "fast_cpu_encoder", "ort_session", "use_onnx_encoder"]


class OnnxEncoder(nn.Module):
    """``forward(x) -> embeddings`` through an ONNX Runtime session of a fixed batch size.

    Args:
        encoder: the (frozen, eval-mode) PyTorch image encoder to export.
        batch: the exported batch size (inputs are split / zero-padded to it).
        threads: ONNX Runtime intra-op threads (``None``: torch's thread count).
        path: where to write the ``.onnx`` file (``None``: a temporary folder kept for the session).
        session: an ONNX Runtime session of an encoder already exported at ``batch`` (then ``encoder``
            only gives ``img_size``, nothing is exported; see :mod:`.encoder_backend`, which caches them).
    """

    def __init__(self, encoder: nn.Module, batch: int = 8, threads: int | None = None, path: str | Path | None = None,
                 session: Any = None) -> None:
        super().__init__()
        self.img_size = int(encoder.img_size)
        self.batch = int(batch)
        if session is not None:
            self.path = None if path is None else Path(path)
            self.session = session
            return
        if path is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="sam_encoder_onnx_")
            path = Path(self._tmp.name) / "encoder.onnx"
        self.path = Path(path)
        export_encoder(encoder, self.path, self.batch)
        self.session = ort_session(self.path, threads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings of (B, 3, S, S) encoder inputs, any B (no gradient)."""
        outs = []
        for i in range(0, x.shape[0], self.batch):
            chunk = x[i : i + self.batch].detach().float().cpu().numpy()
            n = chunk.shape[0]
            if n < self.batch:
                chunk = np.concatenate([chunk, np.zeros((self.batch - n, *chunk.shape[1:]), np.float32)])
            outs.append(torch.from_numpy(self.session.run(None, {"x": np.ascontiguousarray(chunk)})[0][:n]))
        return torch.cat(outs).to(x.device)


def export_encoder(encoder: nn.Module, path: str | Path, batch: int) -> Path:
    """Export an image encoder to ONNX (TorchScript exporter, opset 17) at a fixed ``batch``; returns ``path``."""
    size = int(encoder.img_size)
    x = torch.zeros(int(batch), 3, size, size)
    encoder = encoder.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(encoder, (x,), str(path), input_names=["x"], output_names=["embedding"],
                          opset_version=17, dynamo=False)
    return Path(path)


def ort_session(path: str | Path, threads: int | None = None) -> Any:
    """A CPU ONNX Runtime session of ``path``: ``threads`` intra-op threads (``None``: torch's), all graph optimisations."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def use_onnx_encoder(sam: nn.Module, batch: int = 8, threads: int | None = None) -> nn.Module:
    """Replace ``sam.image_encoder`` by an :class:`OnnxEncoder` of it (inference only; returns ``sam``)."""
    if any(p.requires_grad for p in sam.image_encoder.parameters()) and sam.training:
        raise ValueError("the ONNX encoder is for inference: put the SAM in eval mode first")
    sam.image_encoder = OnnxEncoder(sam.image_encoder, batch, threads)
    return sam


def fast_cpu_encoder(sam: nn.Module, device: torch.device | str) -> bool:
    """Run a frozen LiteMedSAM encoder on the CPU through ONNX Runtime; ``True`` when swapped.

    The ``auto`` choice of :func:`.encoder_backend.apply_encoder_backend` (kept for callers of the
    former ``--fast`` path): only the TinyViT of LiteMedSAM is swapped, there ONNX Runtime is the
    fastest CPU backend measured (``benchmarks/bench_lite.py``); ViT-B/L/H encoders and GPUs keep PyTorch.
    The export is cached per weights (:func:`.encoder_backend.onnx_encoder_file`).
    """
    from sam_mix_monai.networks.encoder_backend import apply_encoder_backend

    return apply_encoder_backend(sam, device, "auto") == "onnxruntime"
