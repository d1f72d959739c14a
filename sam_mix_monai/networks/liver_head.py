"""A coarse liver head on the SAM image embedding: prompt evidence from pretrained medical features.

SAM-Mix's classifier learns where the liver is from image labels alone; trained on one patient (or
on phantoms) its CAM does not transfer to other patients' CT (box IoU 0.45-0.53 on real CT). The SAM
image encoder of LiteMedSAM was pretrained on a large medical corpus, and its embedding is computed
anyway for every slice SAM segments. This head reads that embedding (frozen encoder) and returns a
coarse liver logit map on the embedding grid (64 x 64 for LiteMedSAM), trained with Dice + BCE on
the labelled slices' masks (area-downsampled) and on known liver-free slices (all-zero target).

Its sigmoid is the evidence of the volume prompt (:mod:`sam_mix_monai.inference.volume_prompt`) and,
in the per-slice mode, replaces the CAM as the map the box prompt comes from (``model.prompt_source``).

Example:
    >>> import torch
    >>> head = LiverHead(32)
    >>> head(torch.zeros(2, 32, 16, 16)).shape
    torch.Size([2, 1, 16, 16])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LiverHead", "head_target"]


class LiverHead(nn.Module):
    """``(B, C, h, w)`` embedding -> ``(B, 1, h, w)`` liver logits.

    A 1x1 reduction, a 3x3 and a dilated 3x3 conv block (GroupNorm, ReLU), a 1x1 output: the
    embedding already carries the ViT's global context, so the head stays small (about 0.15 GFLOP
    per 64 x 64 slice embedding: it trains on cached embeddings in seconds on a CPU).

    Args:
        in_channels: embedding channels (256 for every SAM family).
        width: hidden channels.
    """

    def __init__(self, in_channels: int = 256, width: int = 32) -> None:
        super().__init__()
        groups = 8 if width % 8 == 0 else 1
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 1), nn.GroupNorm(groups, width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1), nn.GroupNorm(groups, width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=2, dilation=2), nn.GroupNorm(groups, width), nn.ReLU(inplace=True),
            nn.Conv2d(width, 1, 1),
        )

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        """Liver logits on the embedding grid."""
        return self.body(embedding)


def head_target(mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """A ``(B, 1, H, W)`` binary mask -> the head's soft target on the embedding ``grid`` (area share of liver)."""
    return F.adaptive_avg_pool2d(mask.float(), grid)
