"""Single-output inference wrapper for export (MONAI ``ckpt_export`` / ``onnx_export``, TorchScript).

MONAI's exporters need ``forward(x) -> Tensor``. :class:`SAMMixInference` returns the chosen mask
logits, with slices the classifier calls liver-free gated to a large negative logit. It traces
with ``torch.jit.trace`` and exports with ``torch.onnx.export`` (dynamic batch axis).
"""

from __future__ import annotations

import torch
from torch import nn

from sam_mix_monai.networks.cam import gate_logits

__all__ = ["SAMMixInference", "GATED_LOGIT"]

GATED_LOGIT = -1.0e4  # sigmoid(-1e4) == 0; still finite in float16


class SAMMixInference(nn.Module):
    """``forward(image) -> mask logits`` for a SAM-Mix network.

    Args:
        net: a :class:`.sam_mix.SAMMix`.
        cls_threshold: liver probability below which a slice is liver-free (``None``: the net's).
        fill: logit written on liver-free slices.

    Example:
        >>> from sam_mix_monai.networks import ModelConfig, build_model
        >>> net = build_model(ModelConfig(size="compact", image_size=64))
        >>> wrapper = SAMMixInference(net).eval()
        >>> traced = torch.jit.trace(wrapper, torch.rand(2, 1, 64, 64), check_trace=False)
        >>> traced(torch.rand(3, 1, 64, 64)).shape
        torch.Size([3, 1, 64, 64])
    """

    def __init__(self, net: nn.Module, cls_threshold: float | None = None, fill: float = GATED_LOGIT) -> None:
        super().__init__()
        self.net = net
        self.cls_threshold = float(net.cls_threshold if cls_threshold is None else cls_threshold)
        self.fill = float(fill)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Gated mask logits.

        Args:
            image: (B, 1, H, W) CT slices in [0, 1].

        Returns:
            (B, 1, H, W) logits of the chosen mask; liver-free slices are ``fill`` everywhere.
        """
        out = self.net(image)
        return gate_logits(out["mask_logits"], out["liver_prob"], self.cls_threshold, self.fill)
