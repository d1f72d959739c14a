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

import numpy as np
import torch
from torch import nn

__all__ = ["OnnxEncoder", "fast_cpu_encoder", "use_onnx_encoder"]


class OnnxEncoder(nn.Module):
    """``forward(x) -> embeddings`` through an ONNX Runtime session of a fixed batch size.

    Args:
        encoder: the (frozen, eval-mode) PyTorch image encoder to export.
        batch: the exported batch size (inputs are split / zero-padded to it).
        threads: ONNX Runtime intra-op threads (``None``: torch's thread count).
        path: where to write the ``.onnx`` file (``None``: a temporary folder kept for the session).
    """

    def __init__(self, encoder: nn.Module, batch: int = 8, threads: int | None = None, path: str | Path | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        self.img_size = int(encoder.img_size)
        self.batch = int(batch)
        if path is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="sam_encoder_onnx_")
            path = Path(self._tmp.name) / "encoder.onnx"
        self.path = Path(path)
        x = torch.zeros(self.batch, 3, self.img_size, self.img_size)
        encoder = encoder.eval()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(encoder, (x,), str(self.path), input_names=["x"], output_names=["embedding"],
                              opset_version=17, dynamo=False)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or torch.get_num_threads())
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])

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


def use_onnx_encoder(sam: nn.Module, batch: int = 8, threads: int | None = None) -> nn.Module:
    """Replace ``sam.image_encoder`` by an :class:`OnnxEncoder` of it (inference only; returns ``sam``)."""
    if any(p.requires_grad for p in sam.image_encoder.parameters()) and sam.training:
        raise ValueError("the ONNX encoder is for inference: put the SAM in eval mode first")
    sam.image_encoder = OnnxEncoder(sam.image_encoder, batch, threads)
    return sam


def fast_cpu_encoder(sam: nn.Module, device: torch.device | str) -> bool:
    """Run a frozen LiteMedSAM encoder on the CPU through ONNX Runtime (``--fast``); ``True`` when swapped.

    Only the TinyViT of LiteMedSAM is swapped: there ONNX Runtime is the fastest CPU backend measured
    (``benchmarks/bench_lite.py``: 388 vs 1235 ms/slice eager fp32 and 587 ms bf16 autocast, batch 1, 2 threads;
    batch 1 beats batch 8), and its export takes seconds. ViT-B/L/H encoders and GPUs keep PyTorch.
    """
    from sam_mix_monai.networks.lite_medsam import LiteImageEncoder

    if torch.device(device).type != "cpu" or not isinstance(sam.image_encoder, LiteImageEncoder):
        return False
    use_onnx_encoder(sam.eval(), batch=1)
    return True
