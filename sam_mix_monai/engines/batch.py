"""Batches and network calls shared by the trainer and the evaluator.

* :func:`prepare_slices` is the engines' ``prepare_batch``: it moves a :class:`~sam_mix_monai.data.SliceDataset`
  batch to the device and returns ``(image, {"mask", "label"})``;
* :func:`run_network` calls any of the project's networks the same way: SAM-Mix and the U-Net take
  the image, a point-prompted network (SAM-PP) also takes one point per slice: a random pixel of
  the ground truth at training time; at test time the image centre (``point="centre"``, the
  default: no reference mask is read), or, for the explicitly named upper-bound row only, the
  interior-most pixel of the ground truth (``point="oracle"``), see :mod:`sam_mix_monai.networks.baselines`;
* :func:`predict_masks` turns an output into binary masks, emptying the slices the classifier
  calls liver-free.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from sam_mix_monai.networks.baselines import interior_point, random_point_in_mask
from sam_mix_monai.networks.cam import mask_to_box
from sam_mix_monai.networks.classifier import liver_probability

__all__ = ["POINT_RULES", "unwrap", "network_size", "prepare_slices", "run_network", "predict_masks",
           "resize_batch", "centre_point"]

#: Test-time point rules of a point-prompted network: ``centre`` (no oracle), ``oracle`` (upper bound).
POINT_RULES = ("centre", "oracle")


def centre_point(image: torch.Tensor) -> torch.Tensor:
    """(B, 2) points (x, y) at the centre of each (B, 1, H, W) image: the non-oracle SAM-PP prompt."""
    h, w = image.shape[-2:]
    return torch.tensor([(w - 1) / 2.0, (h - 1) / 2.0], device=image.device).expand(image.shape[0], 2).clone()


def unwrap(net: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper (or ``net``)."""
    return getattr(net, "module", net)


def network_size(net: nn.Module) -> int | None:
    """Square input size the network works at (``None`` when it takes any size)."""
    size = getattr(unwrap(net), "image_size", None)
    return int(size) if size is not None else None


def prepare_slices(
    batchdata: Mapping[str, Any], device: torch.device | str | None = None, non_blocking: bool = False, **kwargs: Any
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``prepare_batch`` of the SAM-Mix engines.

    Args:
        batchdata: a collated :class:`~sam_mix_monai.data.SliceDataset` batch.
        device: target device.
        non_blocking: asynchronous host-to-device copies.
        kwargs: further ``Tensor.to`` arguments.

    Returns:
        ``(image (B, 1, H, W), {"mask": (B, 1, H, W), "label": (B,)})``.
    """
    def to(x: torch.Tensor) -> torch.Tensor:
        return x.to(device=device, non_blocking=non_blocking, **kwargs)

    return to(batchdata["image"]), {"mask": to(batchdata["mask"]), "label": to(batchdata["label"])}


def resize_batch(image: torch.Tensor, mask: torch.Tensor | None, size: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Resize a training batch to the network's input size (bilinear image, nearest mask)."""
    if size is None or tuple(image.shape[-2:]) == (size, size):
        return image, mask
    image = F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False).to(image.dtype)  # not bf16 under autocast
    if mask is not None:
        mask = F.interpolate(mask, size=(size, size), mode="nearest")
    return image, mask


def run_network(
    net: nn.Module,
    image: torch.Tensor,
    mask: torch.Tensor | None = None,
    training: bool = False,
    generator: torch.Generator | None = None,
    point: str = "centre",
) -> dict[str, torch.Tensor]:
    """Forward any of the project's networks.

    Args:
        net: SAM-Mix, U-Net, SAM-PP or the oracle-box SAM (possibly wrapped in DDP).
        image: (B, 1, H, W) slices.
        mask: ground truth: SAM-PP's training point (and its ``oracle`` test point) comes from it, and
            the oracle-box SAM's box.
        training: training point rule (a random foreground pixel; the centre of a liver-free slice).
        generator: random generator of the training point.
        point: test-time point rule, one of :data:`POINT_RULES`.

    Returns:
        The network's output dict (``mask_logits`` at least).
    """
    if getattr(unwrap(net), "point_prompted", False):
        if point not in POINT_RULES:
            raise ValueError(f"point must be one of {POINT_RULES}, got {point!r}")
        if (training or point == "oracle") and mask is None:
            raise ValueError("a training or oracle point needs the ground-truth mask")
        if training:
            pts = random_point_in_mask(mask, generator)
        elif point == "oracle":
            pts = interior_point(mask)
        else:
            pts = centre_point(image)
        return net(image, pts.to(image.device))
    if getattr(unwrap(net), "box_prompted", False):  # the oracle-box upper bound: the reference's tight box
        if mask is None:
            raise ValueError("a box-prompted (oracle box) network needs the ground-truth mask")
        boxes, empty = mask_to_box(mask)
        return net(image, boxes, ~empty)
    return net(image)


def predict_masks(out: Mapping[str, torch.Tensor], cls_threshold: float = 0.5) -> torch.Tensor:
    """Binary masks ``sigmoid(mask_logits) > 0.5``, emptied where the classifier says liver-free.

    Args:
        out: network output (``mask_logits``; ``class_logits`` when the network classifies).
        cls_threshold: liver probability below which a slice is emptied.

    Returns:
        (B, 1, H, W) float {0, 1}.
    """
    pred = (out["mask_logits"] > 0).float()
    if "class_logits" in out:
        present = liver_probability(out["class_logits"]) >= cls_threshold
        pred = pred * present.view(-1, 1, 1, 1).float()
    return pred
