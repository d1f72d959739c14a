"""Decoder fine-tuning: teach the SAM's mask decoder (and prompt encoder) to take rough boxes.

The paper fine-tunes SAM with its own CAM prompts. In volume prompt mode the boxes SAM gets at
inference are rough on purpose (smoothed over z, a margin added, from a coarse evidence map), while
the pretrained LiteMedSAM decoder was trained on tight boxes. This term (``loss.decoder``) trains the
decoder on the labelled liver slices with the boxes it will meet:

* the reference mask's tight box with every edge moved independently by up to ``jitter`` of the box's
  side (at least 2 pixels), which makes boxes both too large and too small;
* with probability ``evidence_share`` per slice, the box of the liver head's evidence on that slice
  (where the head sees liver; the jittered box otherwise): the rough box of the volume prompt itself.

The loss is Dice + BCE of the single-mask output (LiteMedSAM's official box inference, the one the
volume mode decodes) plus SAM's own IoU-prediction MSE, so that the quality flag's predicted IoU stays
meaningful. The image embeddings are the frozen encoder's (cached, detached): a step costs only the
prompt encoder and decoder. Nothing else learns from this term.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss

from sam_mix_monai.networks.cam import mask_to_box
from sam_mix_monai.networks.decoding import sam_decode, sam_encode

__all__ = ["jitter_boxes", "evidence_boxes", "decoder_loss"]

_MIN_JITTER_PX = 2.0
_DICE = DiceLoss(sigmoid=True, reduction="none")


def jitter_boxes(boxes: torch.Tensor, size: int, jitter: float, generator: torch.Generator) -> torch.Tensor:
    """Move every edge of inclusive ``(x1, y1, x2, y2)`` boxes by a uniform amount in ``±jitter`` of the side.

    Args:
        boxes: (B, 4) inclusive pixel boxes.
        size: the image side (boxes are clipped to ``[0, size - 1]``).
        jitter: the largest move of an edge, as a fraction of the box's side along that edge
            (at least 2 pixels).
        generator: the random generator (CPU).

    Returns:
        (B, 4) float boxes, each at least one pixel wide and high.
    """
    b = boxes.float()
    side = torch.stack([b[:, 2] - b[:, 0] + 1, b[:, 3] - b[:, 1] + 1] * 2, dim=1)
    reach = torch.clamp(side * float(jitter), min=_MIN_JITTER_PX)
    u = torch.rand(b.shape, generator=generator).to(b.device) * 2.0 - 1.0
    out = (b + u * reach).clamp(0, size - 1)
    out[:, 2] = torch.maximum(out[:, 2], out[:, 0] + 1).clamp(max=size - 1)
    out[:, 3] = torch.maximum(out[:, 3], out[:, 1] + 1).clamp(max=size - 1)
    return out


def evidence_boxes(head_logits: torch.Tensor, size: int, threshold: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes of the liver head's evidence (cells with probability >= ``threshold``) on the image grid.

    Args:
        head_logits: (B, 1, h, w) liver-head logits.
        size: the image side the boxes are given on (a cell spans ``size / h`` pixels).
        threshold: the evidence counted as liver (the volume prompt's default).

    Returns:
        ``(boxes, found)``: (B, 4) inclusive float boxes and (B,) bool, ``False`` where no cell passed.
    """
    cells = (torch.sigmoid(head_logits.detach().float()) >= threshold).float()
    box, empty = mask_to_box(cells)
    scale = size / cells.shape[-1]
    out = box.float() * scale
    out[:, 2:] = out[:, 2:] + scale - 1  # a cell's last pixel
    return out.clamp(0, size - 1), ~empty.bool()


def decoder_loss(model: Any, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator, jitter: float = 0.15,
                 evidence_share: float = 0.5, head_logits: torch.Tensor | None = None) -> torch.Tensor:
    """Dice + BCE + IoU MSE of the SAM's single mask from rough boxes, on the labelled liver slices.

    Args:
        model: a :class:`~sam_mix_monai.networks.SAMMix` (its ``sam`` encoder frozen).
        image: (B, 1, S, S) slices at the SAM input size.
        mask: (B, 1, S, S) reference masks.
        generator: draws the jitter and the choice of box (CPU).
        jitter: see :func:`jitter_boxes`.
        evidence_share: probability that a slice takes its evidence box (where the head found liver).
        head_logits: (B, 1, h, w) the liver head's logits of ``image`` (``None``: jittered boxes only).

    Returns:
        The scalar loss (a zero that still reaches the decoder's graph when the batch has no liver).
    """
    sam = model.sam
    liver = mask.flatten(1).amax(1) > 0
    if not bool(liver.any()):
        return sum(p.sum() for p in sam.mask_decoder.parameters()) * 0.0
    x, m = image[liver], (mask[liver] > 0.5).float()
    size = int(getattr(model, "image_size", x.shape[-1]))
    if tuple(x.shape[-2:]) != (size, size):  # the slices at the SAM input size, as the network sees them
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        m = F.interpolate(m, size=(size, size), mode="nearest")
    ref, _ = mask_to_box(m)
    boxes = jitter_boxes(ref, size, jitter, generator)
    pick = torch.rand(len(boxes), generator=generator) < float(evidence_share)
    if head_logits is not None and bool(pick.any()):
        ev, found = evidence_boxes(head_logits[liver], size)
        use = (pick.to(found.device) & found).view(-1, 1)
        boxes = torch.where(use, ev.to(boxes.device), boxes)
    with torch.no_grad():
        emb = sam_encode(sam, x)
    out = sam_decode(sam, emb.detach(), (size, size), boxes=boxes, multimask_output=False)
    logits = out["mask_logits"].float()
    dice = _DICE(logits, m).flatten(1).mean(1).mean()
    with torch.no_grad():
        pred = (logits > 0).float()
        inter, union = (pred * m).sum((1, 2, 3)), ((pred + m) > 0).float().sum((1, 2, 3))
        true_iou = inter / union.clamp(min=1.0)
    iou = F.mse_loss(out["chosen_iou"].float(), true_iou)
    return dice + F.binary_cross_entropy_with_logits(logits, m) + iou
