"""Baselines behind the SAM-Mix interface: a 2D U-Net and SAM-PP (SAM + LoRA, one positive point).

Both return a dict with at least ``mask_logits`` (B, 1, H, W), like :class:`.sam_mix.SAMMix`.

SAM-PP-N (the paper's table) is read as SAM with LoRA fine-tuned on the same N labelled slices and
prompted with a single positive point:

* training: a uniformly random pixel inside the ground-truth mask (:func:`random_point_in_mask`;
  labels are there to train on); a liver-free slice gets the image centre;
* test (the reported row): the image centre on every slice (no reference mask is read; SAM-PP has
  no liver-free gate), see :func:`sam_mix_monai.engines.batch.centre_point`;
* test, upper-bound row only ("SAM-PP-N, oracle point"): the interior-most pixel of the
  ground-truth mask, the maximum of its Euclidean distance transform (:func:`interior_point`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import UNet
from monai.transforms.utils import distance_transform_edt
from segment_anything.modeling import Sam
from torch import nn

from sam_mix_monai.networks.decoding import sam_forward

__all__ = ["UNetSeg", "PromptedSAM", "SAMPP", "random_point_in_mask", "interior_point"]

UNET_CHANNELS = {"compact": (8, 16, 32, 64), "default": (16, 32, 64, 128, 256)}


class UNetSeg(nn.Module):
    """MONAI 2D U-Net returning ``{"mask_logits": (B, 1, H, W)}``.

    Args:
        channels: feature channels per level (strides of 2 between levels).
        num_res_units: residual units per block.
    """

    def __init__(self, channels: tuple[int, ...] = UNET_CHANNELS["default"], num_res_units: int = 2) -> None:
        super().__init__()
        self.unet = UNet(
            spatial_dims=2,
            in_channels=1,
            out_channels=1,
            channels=channels,
            strides=(2,) * (len(channels) - 1),
            num_res_units=num_res_units,
        )

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Segment (B, 1, H, W) slices in [0, 1] (H, W divisible by 2**(levels-1)).

        Returns:
            dict with ``mask_logits`` (B, 1, H, W).
        """
        return {"mask_logits": self.unet(image)}


class PromptedSAM(nn.Module):
    """A SAM alone, prompted per slice by the engines (base of :class:`SAMPP` and ``SAMBox``).

    Args:
        sam: SAM from :func:`.sam_builder.build_sam` (encoder mode already configured).
    """

    def __init__(self, sam: Sam) -> None:
        super().__init__()
        self.sam = sam

    @property
    def image_size(self) -> int:
        """Square SAM input size."""
        return int(self.sam.image_encoder.img_size)


class SAMPP(PromptedSAM):
    """SAM prompted by one positive point per image ("SAM-PP").

    Args:
        sam: SAM from :func:`.sam_builder.build_sam` (encoder mode already configured).

    Attributes:
        point_prompted: capability flag the engines read: ``forward(image, point)`` needs a point per
            slice (networks without the attribute take the image alone).
    """

    point_prompted = True

    def forward(self, image: torch.Tensor, point: torch.Tensor) -> dict[str, torch.Tensor]:
        """Segment slices from one positive point each.

        Args:
            image: (B, 1, H, W) slices in [0, 1] (resized to ``image_size`` when needed).
            point: (B, 2) point (x, y) in input pixel coordinates (e.g. from :func:`interior_point`).

        Returns:
            dict with ``mask_logits`` (B, 1, H, W), ``all_mask_logits`` (B, 3, H, W), ``iou_pred`` (B, 3),
            ``chosen_iou`` (B,), ``low_res_logits`` (B, 1, S/4, S/4), ``points`` (B, 2) in SAM input pixels.
        """
        in_size = image.shape[-2:]
        s = self.image_size
        scale = torch.tensor([s / in_size[1], s / in_size[0]], dtype=torch.float32, device=image.device)
        pts = point.float() * scale
        x = image
        if tuple(in_size) != (s, s):
            x = F.interpolate(image, size=(s, s), mode="bilinear", align_corners=False)
        labels = torch.ones(pts.shape[0], 1, dtype=torch.float32, device=image.device)
        out = sam_forward(self.sam, x, points=(pts.unsqueeze(1), labels))
        out["points"] = pts
        if tuple(in_size) != (s, s):
            for key in ("mask_logits", "all_mask_logits"):
                out[key] = F.interpolate(out[key], size=in_size, mode="bilinear", align_corners=False)
        return out


def _center(h: int, w: int) -> tuple[float, float]:
    return (w - 1) / 2.0, (h - 1) / 2.0


def random_point_in_mask(mask: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Training-time SAM-PP prompt: a uniformly random foreground pixel per image.

    Args:
        mask: (B, 1, H, W) ground-truth masks.
        generator: optional random generator (CPU).

    Returns:
        (B, 2) float points (x, y); the image centre for an empty mask.
    """
    b, _, h, w = mask.shape
    fg = (mask.detach().flatten(1) > 0.5).float().cpu()  # (B, H*W)
    # Gumbel-free uniform choice: random scores, masked, argmax.
    scores = torch.rand(fg.shape, generator=generator) * fg
    idx = scores.argmax(dim=1)
    pts = torch.stack([(idx % w).float(), (idx // w).float()], dim=1)
    cx, cy = _center(h, w)
    empty = fg.sum(dim=1) == 0
    pts[empty] = torch.tensor([cx, cy])
    return pts.to(mask.device)


def interior_point(mask: torch.Tensor) -> torch.Tensor:
    """Test-time SAM-PP prompt: the interior-most pixel (maximum of the distance transform).

    Uses ``monai.transforms.utils.distance_transform_edt`` (SciPy / cuCIM underneath). Among
    equal maxima, the one nearest their centroid (a rectangle gives its centre).

    Args:
        mask: (B, 1, H, W) ground-truth masks.

    Returns:
        (B, 2) float points (x, y); the image centre for an empty mask.
    """
    b, _, h, w = mask.shape
    fg = (mask.detach().cpu().numpy() > 0.5)[:, 0]  # (B, H, W): channel-first for MONAI
    # Pad with background so that a mask touching the border measures distance to it.
    dist = np.asarray(distance_transform_edt(np.pad(fg, ((0, 0), (1, 1), (1, 1)))))[:, 1:-1, 1:-1]
    pts = np.zeros((b, 2), dtype=np.float32)
    for i in range(b):
        if not fg[i].any():
            pts[i] = _center(h, w)
            continue
        # A ridge of equal maxima (e.g. in a rectangle): take the maximum nearest the ridge's centroid.
        ys, xs = np.nonzero(dist[i] >= dist[i].max() - 1e-6)
        k = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
        pts[i] = (xs[k], ys[k])
    return torch.from_numpy(pts).to(mask.device)
