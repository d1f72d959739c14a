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
                    else against the weak view's confident argmax (pseudo-labels only where withheld);
                    optionally balanced (over the kept targets, scaled by the kept share)
``seg_consistency`` BCE of the strong view's mask against the weak view's confident pixels
``cam_mask``        CAM localisation (not in the paper): ``-log`` of the share of the spatial softmax of
                    the classifier's liver map (:meth:`~sam_mix_monai.networks.SAMMix.liver_map`) that
                    falls inside the liver, labelled slices with liver (:func:`cam_mask_loss`)
``head``            Dice + BCE of the liver head on the SAM embedding grid (not in the paper), every
                    labelled slice, liver-free ones included (:func:`head_loss`)
==================  =====================================================================

Means over a subset of the batch (Dice over liver slices, CE over known labels, class weights,
FixMatch's kept targets) are **global** under ``torch.distributed``: the class counts and the
denominators are summed over the ranks (:func:`global_ratio`), so K processes holding K parts of a
batch get the gradient and the (rank-averaged) value of the one-process loss, whatever the share
of each class or of liver slices on each rank. Every rank must then compute the same terms (the
trainer does: which terms run depends on the config only). Plain means over every sample or pixel
need nothing: the ranks hold equal-sized parts (``run.py`` requires it).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from monai.losses import DiceLoss
from monai.metrics import compute_iou
from torch import nn
from sam_mix_monai.networks.liver_head import head_target

__all__ = ["SAMMixLoss", "cam_mask_loss", "head_loss", "masked_cross_entropy", "fixmatch_loss", "consistency_loss", "mask_iou", "global_sum",
           "global_ratio"]

TERMS = ("seg_dice", "seg_bce", "iou", "cls", "unlabelled_cls", "pseudo_cls", "seg_consistency")


def _world() -> int:
    """Processes of the default group (1 without one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def global_sum(x: torch.Tensor) -> torch.Tensor:
    """``x`` (detached) summed over the ranks of the default process group (``x`` itself without one).

    A collective: every rank must call it, in the same order.
    """
    x = x.detach()
    if _world() <= 1:
        return x
    x = x.clone()
    dist.all_reduce(x)
    return x


def global_ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """This rank's share of the global ratio ``sum_r num_r / sum_r den_r`` (0, with a graph, where the
    global ``den`` is 0).

    ``num`` keeps its graph, ``den`` (a count or a sum of weights) is summed over the ranks without
    one. The share is ``K * num / sum_r den_r``: DDP averages the K ranks' gradients and the trainer's
    history averages their values, which gives the gradient and value of the one-process ratio. With
    one process it is ``num / den``.
    """
    total = global_sum(den).to(num.dtype)
    return torch.where(total > 0, num * _world() / total.clamp_min(torch.finfo(num.dtype).tiny), num * 0.0)


def _class_weights(labels: torch.Tensor, valid: torch.Tensor, num_classes: int, balanced: bool) -> torch.Tensor:
    """(C,) per-class weights: the inverse of each class's global count among ``valid`` samples
    (``balanced``; 0 for an absent class), else ones."""
    if not balanced:
        return torch.ones(num_classes, device=labels.device)
    counts = global_sum(torch.bincount(labels[valid], minlength=num_classes).float())
    return torch.where(counts > 0, 1.0 / counts.clamp_min(1.0), torch.zeros_like(counts))


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, balanced: bool = False) -> torch.Tensor:
    """``F.cross_entropy(ignore_index=-1)``: CE over the samples with a known label; 0 (with a graph) when none.

    Global under ``torch.distributed`` (counts and denominator over all ranks, see :func:`global_ratio`).

    Args:
        logits: (B, C) class logits.
        labels: (B,) labels, -1 unknown.
        balanced: weight each class by the inverse of its count in the batch, i.e. the mean of the
            per-class mean losses (a batch of 5 positives and 1 negative weighs both classes alike).
    """
    labels = labels.long().to(logits.device)
    valid = labels >= 0
    weight = _class_weights(labels, valid, logits.shape[1], balanced)
    if _world() <= 1:  # one process: the plain library mean (bit for bit the former loss; real-CT runs are that sensitive)
        if not bool(valid.any()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits.float(), labels, weight=weight if balanced else None, ignore_index=-1)
    num = F.cross_entropy(logits.float(), labels, weight=weight, ignore_index=-1, reduction="sum")
    return global_ratio(num, weight[labels[valid]].sum())


def fixmatch_loss(weak_logits: torch.Tensor, strong_logits: torch.Tensor, threshold: float,
                  labels: torch.Tensor | None = None, balanced: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """FixMatch classification term.

    Args:
        weak_logits: (B, C) logits of the weak view (detached inside).
        strong_logits: (B, C) logits of the strong view.
        threshold: minimum softmax confidence of a pseudo-label.
        labels: (B,) known image labels (-1: withheld); where known, the label is the strong view's
            target (always kept) and no pseudo-label is formed.
        balanced: class-balance the kept targets (each class's kept samples weigh alike, as in
            :func:`masked_cross_entropy`), keeping FixMatch's scale: the balanced mean over the kept
            samples times the kept share. Equal to FixMatch's loss when the kept classes are balanced.

    Returns:
        ``(loss, mask_rate)``: CE of the strong view against its targets, averaged over the whole
        batch as in FixMatch, and the share of samples with a target (both global under
        ``torch.distributed``).
    """
    probs = torch.softmax(weak_logits.detach().float(), dim=1)
    conf, target = probs.max(dim=1)
    keep = conf >= threshold
    if labels is not None:
        known = labels.to(target.device) >= 0
        target = torch.where(known, labels.long().to(target.device), target)
        keep = keep | known
    ce = F.cross_entropy(strong_logits.float(), target, reduction="none")
    kept = keep.float()
    n = torch.tensor(float(keep.numel()), device=ce.device)
    rate = global_sum(kept.sum()) / global_sum(n)  # the global share kept (the same on every rank)
    if not balanced:
        if _world() <= 1:
            return (ce * kept).mean(), kept.mean()
        return global_ratio((ce * kept).sum(), n), rate
    w = _class_weights(target, keep, strong_logits.shape[1], True)[target] * kept
    return global_ratio((ce * w).sum(), w.sum()) * rate, rate


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


def cam_mask_loss(liver_map: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over liver slices of ``-log`` (share of the liver map's spatial softmax inside the liver).

    The image-level labels alone let a classifier trained on one patient find its liver slices by any
    anatomy that changes with height (measured: on ircadb_07 its CAM peak sat on the body wall). The
    labelled slices' masks say where the liver is; this term puts the CAM's mass there without touching
    the image logit (a softmax over cells does not depend on their mean). A per-cell BCE against the
    liver share of each cell was tried instead and did worse on the ircadb_07 development slab (its CAM
    shrank to the liver's centre: slice2d Dice 0.18 against 0.61 after 8 epochs).

    Args:
        liver_map: (B, 1, h, w) per-cell liver logits.
        mask: (B, 1, H, W) binary reference masks, ``H``, ``W`` multiples of ``h``, ``w``.

    Returns:
        Scalar loss (0 with a graph when no slice holds liver); global over ranks under DDP.
    """
    h, w = liver_map.shape[-2:]
    share = F.avg_pool2d(mask.float(), (mask.shape[-2] // h, mask.shape[-1] // w))  # liver share of each cell
    liver = share.flatten(1).amax(1) > 0
    logp = torch.log_softmax(liver_map.float().flatten(1), dim=1)
    # log of sum_i p_i * share_i, stably; cells without liver drop out (log 0 = -inf)
    inside = torch.logsumexp(logp + torch.log(share.flatten(1).clamp_min(1e-12)), dim=1)
    per_slice = -inside * liver.float()
    if _world() <= 1:
        return per_slice.sum() / liver.float().sum().clamp_min(1.0)
    return global_ratio(per_slice.sum(), liver.float().sum())


def head_loss(head_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Dice + BCE of the liver head's ``(B, 1, h, w)`` logits against the mask's liver share per grid cell.

    Every labelled slice counts, known liver-free ones included (their target is all zero: the head
    learns where the liver is *not*). The soft Dice is over the whole batch, so empty slices do not
    divide by zero; under a process group its sums are global, as the other masked means.
    """
    logits = head_logits.float()
    target = head_target(mask, tuple(logits.shape[-2:]))
    prob = torch.sigmoid(logits)
    inter, total = global_sum((prob * target).sum()), global_sum(prob.sum() + target.sum())
    dice = 1.0 - (2.0 * inter + 1.0) / (total + 1.0)
    return F.binary_cross_entropy_with_logits(logits, target) + dice


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
        balanced_pseudo: class-balanced ``pseudo_cls`` (:func:`fixmatch_loss`).
        cam_mask: weight of the CAM localisation term (:func:`cam_mask_loss`; 0: off, the paper).
        head: weight of the liver head's Dice + BCE on its embedding grid (:func:`head_loss`; 0: off).
        decoder: weight of decoder fine-tuning (:func:`.decoder_tuning.decoder_loss`, computed by the
            trainer; 0: off); ``decoder_jitter``, ``decoder_evidence_share``: its box settings.
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
        balanced_pseudo: bool = False,
        cam_mask: float = 0.0,
        head: float = 0.0,
        decoder: float = 0.0,
        decoder_jitter: float = 0.15,
        decoder_evidence_share: float = 0.5,
    ) -> None:
        super().__init__()
        self.weights = {
            "seg_dice": float(seg_dice), "seg_bce": float(seg_bce), "iou": float(iou), "cls": float(cls),
            "unlabelled_cls": float(unlabelled_cls), "pseudo_cls": float(pseudo_cls),
            "seg_consistency": float(seg_consistency), "cam_mask": float(cam_mask),
            "head": float(head), "decoder": float(decoder),
        }
        self.decoder_jitter = float(decoder_jitter)
        self.decoder_evidence_share = float(decoder_evidence_share)
        self.pseudo_threshold = float(pseudo_threshold)
        self.seg_consistency_threshold = float(seg_consistency_threshold)
        self.balanced_cls = bool(balanced_cls)
        self.balanced_pseudo = bool(balanced_pseudo)
        self.dice = DiceLoss(sigmoid=True, reduction="none")  # (B, 1, 1, 1): per-slice Dice losses

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
            The unweighted terms that apply (``seg_dice``, ``seg_bce``, ``iou``, ``cls``, ``cam_mask``).
        """
        terms: dict[str, torch.Tensor] = {}
        logits = out["mask_logits"].float() if self.wants("seg_dice", "seg_bce") else None
        if self.wants("seg_dice"):  # per-slice Dice, averaged over the liver slices (of every rank)
            liver = mask.flatten(1).amax(1) > 0
            if _world() <= 1:  # the former one-process expression, bit for bit
                terms["seg_dice"] = self.dice(logits[liver], mask[liver]).mean() if bool(liver.any()) else logits.sum() * 0.0
            else:
                per_slice = self.dice(logits, mask).flatten(1).mean(1)
                terms["seg_dice"] = global_ratio((per_slice * liver.float()).sum(), liver.float().sum())
        if self.wants("seg_bce"):
            terms["seg_bce"] = F.binary_cross_entropy_with_logits(logits, mask)
        if self.wants("iou") and "iou_pred" in out and "all_mask_logits" in out:
            terms["iou"] = F.mse_loss(out["iou_pred"].float(), mask_iou(out["all_mask_logits"], mask))
        if self.wants("cls") and "class_logits" in out:
            terms["cls"] = masked_cross_entropy(out["class_logits"], label, self.balanced_cls)
        if self.wants("cam_mask") and "liver_map" in out:
            terms["cam_mask"] = cam_mask_loss(out["liver_map"], mask)
        if self.wants("head") and "head_logits" in out:
            terms["head"] = head_loss(out["head_logits"], mask)
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
