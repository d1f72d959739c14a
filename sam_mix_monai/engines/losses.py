"""SAM-Mix training losses: supervised segmentation and classification, FixMatch, consistency.

Each term is returned unweighted under its name; :meth:`SAMMixLoss.total` applies the weights.
A weight of 0 switches a term off, and :meth:`SAMMixLoss.wants` lets the trainer skip computing it.

==================  =====================================================================
term                definition
==================  =====================================================================
``seg_dice``        MONAI ``DiceLoss(sigmoid=True)`` of the chosen mask, labelled slices with liver
                    (a known-empty mask has no Dice to learn from: any pixel would cost ~1)
``seg_bce``         BCE with logits of the chosen mask, every labelled slice (known-empty ones too)
``iou``             MSE between SAM's IoU predictions and the true IoU of each of its 3 masks
``cls``             CE of ``class_logits`` of labelled slices (labels >= 0), class-balanced by default
``unlabelled_cls``  CE of the weak view of unlabelled slices whose image label is known (balanced too)
``pseudo_cls``      FixMatch: CE of the strong view against the known image label where there is one,
                    else against the weak view's confident argmax (pseudo-labels only where withheld)
``seg_consistency`` BCE of the strong view's mask against the weak view's confident pixels
==================  =====================================================================
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from monai.metrics import compute_iou
from torch import nn

__all__ = ["SAMMixLoss", "masked_cross_entropy", "fixmatch_loss", "consistency_loss", "mask_iou"]

TERMS = ("seg_dice", "seg_bce", "iou", "cls", "unlabelled_cls", "pseudo_cls", "seg_consistency")


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, balanced: bool = False) -> torch.Tensor:
    """``F.cross_entropy(ignore_index=-1)``: CE over the samples with a known label; 0 (with a graph) when none.

    Args:
        logits: (B, C) class logits.
        labels: (B,) labels, -1 unknown.
        balanced: weight each class by the inverse of its count in the batch, i.e. the mean of the
            per-class mean losses (a batch of 5 positives and 1 negative weighs both classes alike).
    """
    labels = labels.long()
    valid = labels >= 0
    if not bool(valid.any()):
        return logits.sum() * 0.0
    weight = None
    if balanced:
        counts = torch.bincount(labels[valid], minlength=logits.shape[1]).float()
        weight = torch.where(counts > 0, 1.0 / counts.clamp_min(1.0), torch.zeros_like(counts))
    return F.cross_entropy(logits.float(), labels, weight=weight, ignore_index=-1)


def fixmatch_loss(weak_logits: torch.Tensor, strong_logits: torch.Tensor, threshold: float,
                  labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """FixMatch classification term.

    Args:
        weak_logits: (B, C) logits of the weak view (detached inside).
        strong_logits: (B, C) logits of the strong view.
        threshold: minimum softmax confidence of a pseudo-label.
        labels: (B,) known image labels (-1: withheld); where known, the label is the strong view's
            target (always kept) and no pseudo-label is formed.

    Returns:
        ``(loss, mask_rate)``: CE of the strong view against its targets, averaged over the whole
        batch as in FixMatch, and the share of samples with a target.
    """
    probs = torch.softmax(weak_logits.detach().float(), dim=1)
    conf, target = probs.max(dim=1)
    keep = conf >= threshold
    if labels is not None:
        known = labels >= 0
        target = torch.where(known, labels.long().to(target.device), target)
        keep = keep | known
    keep = keep.float()
    ce = F.cross_entropy(strong_logits.float(), target, reduction="none")
    return (ce * keep).mean(), keep.mean()


def consistency_loss(strong_logits: torch.Tensor, target_prob: torch.Tensor, valid: torch.Tensor, threshold: float) -> torch.Tensor:
    """Segmentation consistency: BCE of the strong view against confident weak-view pixels.

    Args:
        strong_logits: (B, 1, H, W) mask logits of the strong view.
        target_prob: (B, 1, H, W) weak-view foreground probability, warped into the strong view.
        valid: (B, 1, H, W) pixels that exist in both views (and slices allowed to contribute).
        threshold: minimum pixel confidence ``max(p, 1 - p)``.

    Returns:
        The masked BCE averaged over all pixels.
    """
    p = target_prob.detach().float()
    keep = (torch.maximum(p, 1.0 - p) >= threshold).float() * valid.float()
    bce = F.binary_cross_entropy_with_logits(strong_logits.float(), (p > 0.5).float(), reduction="none")
    return (bce * keep).mean()


def mask_iou(mask_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of each binarised mask (``logit > 0``) with the target: (B, M, H, W), (B, 1, H, W) -> (B, M).

    MONAI ``compute_iou`` per mask channel; 1 where both are empty.
    """
    pred = (mask_logits.detach() > 0).float()
    t = (target.detach() > 0.5).float().expand_as(pred)
    return compute_iou(pred, t, include_background=True, ignore_empty=False).to(pred.dtype)


class SAMMixLoss(nn.Module):
    """Weighted SAM-Mix objective.

    Args:
        seg_dice, seg_bce, iou, cls, unlabelled_cls, pseudo_cls, seg_consistency: term weights
            (see the module table; 0 switches a term off).
        pseudo_threshold: FixMatch confidence threshold (default 0.7, MultiMix).
        seg_consistency_threshold: pixel confidence of the consistency target.
        balanced_cls: class-balanced ``cls`` and ``unlabelled_cls`` (:func:`masked_cross_entropy`).
    """

    def __init__(
        self,
        seg_dice: float = 1.0,
        seg_bce: float = 1.0,
        iou: float = 1.0,
        cls: float = 1.0,
        unlabelled_cls: float = 1.0,
        pseudo_cls: float = 0.25,
        pseudo_threshold: float = 0.7,
        seg_consistency: float = 0.0,
        seg_consistency_threshold: float = 0.9,
        balanced_cls: bool = True,
    ) -> None:
        super().__init__()
        self.weights = {
            "seg_dice": float(seg_dice), "seg_bce": float(seg_bce), "iou": float(iou), "cls": float(cls),
            "unlabelled_cls": float(unlabelled_cls), "pseudo_cls": float(pseudo_cls),
            "seg_consistency": float(seg_consistency),
        }
        self.pseudo_threshold = float(pseudo_threshold)
        self.seg_consistency_threshold = float(seg_consistency_threshold)
        self.balanced_cls = bool(balanced_cls)
        self.dice = DiceLoss(sigmoid=True)

    def wants(self, *terms: str) -> bool:
        """Whether any of ``terms`` has a non-zero weight."""
        return any(self.weights[t] > 0 for t in terms)

    def supervised(self, out: dict[str, torch.Tensor], mask: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
        """Terms of a labelled batch.

        Args:
            out: network output (``mask_logits``, needed only by the segmentation terms; optionally
                ``all_mask_logits``, ``iou_pred``, ``class_logits``).
            mask: (B, 1, H, W) ground truth.
            label: (B,) image labels (-1: unknown).

        Returns:
            The unweighted terms that apply (``seg_dice``, ``seg_bce``, ``iou``, ``cls``).
        """
        terms: dict[str, torch.Tensor] = {}
        logits = out["mask_logits"].float() if self.wants("seg_dice", "seg_bce") else None
        if self.wants("seg_dice"):
            liver = mask.flatten(1).amax(1) > 0
            terms["seg_dice"] = self.dice(logits[liver], mask[liver]) if bool(liver.any()) else logits.sum() * 0.0
        if self.wants("seg_bce"):
            terms["seg_bce"] = F.binary_cross_entropy_with_logits(logits, mask)
        if self.wants("iou") and "iou_pred" in out and "all_mask_logits" in out:
            terms["iou"] = F.mse_loss(out["iou_pred"].float(), mask_iou(out["all_mask_logits"], mask))
        if self.wants("cls") and "class_logits" in out:
            terms["cls"] = masked_cross_entropy(out["class_logits"], label, self.balanced_cls)
        return terms

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """Weighted sum of the terms present (diagnostics such as ``pseudo_mask_rate`` are ignored)."""
        parts = [self.weights[k] * v for k, v in terms.items() if k in self.weights and self.weights[k] > 0]
        if not parts:
            raise ValueError("no loss term is active: every weight that applies is 0")
        return torch.stack([p.float() for p in parts]).sum()

    def forward(self, out: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> torch.Tensor:
        """Supervised objective (the ``loss_function`` interface of MONAI's trainers).

        Args:
            out: network output.
            target: ``{"mask": (B, 1, H, W), "label": (B,)}``.
        """
        return self.total(self.supervised(out, target["mask"], target["label"]))
