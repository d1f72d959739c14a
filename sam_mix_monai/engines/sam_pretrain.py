"""Promptable-segmentation pretraining of a compact SAM on the phantom's non-liver organs.

No SAM weights can be downloaded here, so the CPU demo's compact SAM starts random; this
engine gives it a SAM-style pretraining on :mod:`~sam_mix_monai.data.phantom.organ_slices`
(spleen, kidneys, stomach, bowel, vessels, bone, ... but never the liver), so that the phantom
study can show what pretrained weights bring to SAM-Mix.

Training (SAM's recipe, shrunk):

* every step encodes ``batch_size`` slices once and decodes ``masks_per_image`` organ instances
  of each (SAM also decodes many prompts per image embedding); instances are drawn with
  weights inversely proportional to their organ's frequency, so the many bone and bowel
  pieces do not dominate;
* each instance gets a prompt drawn from ``box`` (the mask's box, each side jittered by up to
  ``box_jitter`` of its length), ``point`` (one or two positive points inside the mask),
  ``box+point``, and ``box+mask``: a box plus a coarse, shifted, blob-like version of the mask
  area-downsampled to SAM's mask-input grid, the same form as SAM-Mix's dense CAM prompt
  (without it, SAM-Mix would add the output of an untrained ``mask_downscaling`` to the
  pretrained image embedding);
* three masks per prompt (``multimask_output``), SAM's rule: Dice + BCE of the best of the three
  masks only (minimum loss; computed at ``image_size / loss_stride``), plus the MSE between the IoU head and the true IoU of all three.
  The IoU head therefore learns to rank the masks, which is what SAM-Mix and SAM-PP use to pick
  their single mask (highest predicted IoU);
* horizontal flips (p = 0.5), Adam with linear warm-up and cosine decay, gradient clipping;
  seeded, and deterministic on CPU for a given thread count.

Prompt sampling and prompted scoring live in :mod:`.organ_prompts`. At the end, held-out
instances (other cases) are scored with the exact box and the interior-most point, the mask
chosen by the IoU head.

The saved file is ``sam.state_dict()`` (official key layout, no LoRA keys), loadable with
``ModelConfig(size="compact", image_size=..., checkpoint=FILE)``, which then trains SAM-Mix
with a frozen encoder and LoRA (rank 8), the paper's setting.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from tqdm.auto import tqdm

from sam_mix_monai.data.phantom.organ_slices import OrganSlices
from sam_mix_monai.engines.organ_prompts import PROMPT_KINDS, decode_prompts, prompted_dice, sample_prompt
from sam_mix_monai.networks.sam_builder import build_sam, preprocess_gray
from sam_mix_monai.utils.atomic import atomic_output
from sam_mix_monai.utils.errors import InputError, PathLike

__all__ = [
    "PretrainConfig",
    "PretrainResult",
    "multimask_loss",
    "pretrain_sam",
    "save_pretrained",
    "sidecar_path",
]

logger = logging.getLogger(__name__)

@dataclass
class PretrainConfig:
    """Settings of :func:`pretrain_sam`.

    Attributes:
        image_size: SAM input size (the slices' size).
        steps: optimiser steps.
        batch_size: slices per step (each encoded once).
        masks_per_image: organ instances decoded per slice and step.
        lr: peak Adam learning rate; ``warmup`` share of the steps ramps up to it, then cosine to 0.
        weight_decay: Adam (L2) weight decay.
        grad_clip: maximum gradient norm.
        box_jitter: maximum box-side jitter, as a fraction of the side length.
        flip: probability of a horizontal flip of a slice.
        loss_stride: the losses are computed at ``image_size / loss_stride`` (logits upsampled
            from the decoder's S/4, targets area-downsampled); 2 halves the step time at 128 px.
        iou_weight: weight of the IoU-head MSE.
        prompt_probs: probabilities of the prompt kinds (:data:`PROMPT_KINDS`).
        heldout_masks: held-out instances scored at the end (0: none).
        seed: seed of weights, sampling and prompts.
    """

    image_size: int = 128
    steps: int = 600
    batch_size: int = 8
    masks_per_image: int = 4
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: float = 0.05
    grad_clip: float = 1.0
    box_jitter: float = 0.1
    flip: float = 0.5
    loss_stride: int = 2
    iou_weight: float = 1.0
    prompt_probs: dict[str, float] = field(default_factory=lambda: dict(PROMPT_KINDS))
    heldout_masks: int = 400
    seed: int = 0

    def check(self) -> None:
        """Raise :class:`InputError` for impossible settings."""
        if self.image_size % 16 or self.image_size < 64:
            raise InputError(None, f"image_size must be a multiple of 16 and at least 64 (got {self.image_size})")
        for name in ("steps", "batch_size", "masks_per_image"):
            if getattr(self, name) < 1:
                raise InputError(None, f"{name} must be at least 1 (got {getattr(self, name)})")
        if self.loss_stride not in (1, 2, 4):
            raise InputError(None, f"loss_stride must be 1, 2 or 4 (got {self.loss_stride})")
        if not self.lr > 0:
            raise InputError(None, f"lr must be positive (got {self.lr})")
        bad = sorted(set(self.prompt_probs) - set(PROMPT_KINDS))
        if bad or not self.prompt_probs or min(self.prompt_probs.values()) < 0 or sum(self.prompt_probs.values()) <= 0:
            raise InputError(None, f"prompt_probs must weight some of {sorted(PROMPT_KINDS)} (got {self.prompt_probs})")


@dataclass
class PretrainResult:
    """What :func:`pretrain_sam` returns: the model and what to put in the sidecar."""

    sam: Sam
    losses: list[float]
    heldout: dict[str, float]
    seconds: float
    meta: dict = field(default_factory=dict)


# -------------------------------------------------------------------------------------- loss


def multimask_loss(logits: torch.Tensor, iou_pred: torch.Tensor, target: torch.Tensor, iou_weight: float = 1.0):
    """SAM's multimask objective.

    Args:
        logits: (P, 3, S, S) mask logits.
        iou_pred: (P, 3) IoU-head output.
        target: (P, S, S) float in [0, 1] (soft at a reduced loss resolution).
        iou_weight: weight of the IoU MSE.

    Returns:
        ``(loss, best_dice)``: Dice + BCE of the lowest-loss mask of each prompt (averaged) plus
        ``iou_weight`` x the IoU MSE over all three masks; and the soft Dice of those masks.
    """
    t = target[:, None].expand_as(logits)
    p = torch.sigmoid(logits)
    inter = (p * t).flatten(2).sum(-1)
    dice = (2 * inter + 1.0) / (p.flatten(2).sum(-1) + t.flatten(2).sum(-1) + 1.0)
    bce = F.binary_cross_entropy_with_logits(logits, t, reduction="none").flatten(2).mean(-1)
    per_mask = (1.0 - dice) + bce  # (P, 3)
    best, idx = per_mask.min(dim=1)
    with torch.no_grad():
        hard = (logits > 0).float()
        t = (t > 0.5).float()
        i = (hard * t).flatten(2).sum(-1)
        u = ((hard + t) > 0).float().flatten(2).sum(-1)
        true_iou = torch.where(u > 0, i / u.clamp_min(1.0), torch.ones_like(i))
    loss = best.mean() + iou_weight * F.mse_loss(iou_pred, true_iou)
    return loss, dice.gather(1, idx[:, None]).mean()


def _heldout_scores(sam: Sam, data: OrganSlices, n: int, seed: int) -> dict[str, float]:
    if n <= 0 or len(data) == 0:
        return {}
    rows = np.sort(np.random.default_rng(seed).permutation(len(data))[:n])
    images = torch.from_numpy(data.images[data.mask_slice[rows]])[:, None]
    masks = torch.from_numpy(data.masks[rows])
    scores: dict[str, float] = {"masks": float(len(rows))}
    for kind in ("box", "point"):
        d = prompted_dice(sam, images, masks, kind)
        scores[f"dice_{kind}"] = float(d.mean())
        per_organ = []
        for k, organ in enumerate(data.organs):
            sel = data.mask_organ[rows] == k
            if sel.any():
                scores[f"dice_{kind}_{organ}"] = float(d[sel].mean())
                per_organ.append(scores[f"dice_{kind}_{organ}"])
        scores[f"dice_{kind}_organ_mean"] = float(np.mean(per_organ))
    return scores


# ---------------------------------------------------------------------------------- training


def _lr_factor(step: int, total: int, warmup: float) -> float:
    w = max(1, int(round(warmup * total)))
    if step < w:
        return (step + 1) / w
    return 0.5 * (1.0 + math.cos(math.pi * (step - w) / max(1, total - w)))


def pretrain_sam(
    train: OrganSlices,
    cfg: PretrainConfig | None = None,
    heldout: OrganSlices | None = None,
    size: str = "compact",
    progress: bool = True,
) -> PretrainResult:
    """Pretrain a randomly initialised SAM on promptable organ segmentation.

    Args:
        train: training samples (slices at ``cfg.image_size``).
        cfg: settings (defaults when ``None``).
        heldout: samples of other cases, scored at the end (box and point prompts).
        size: SAM size (see :func:`~sam_mix_monai.networks.sam_builder.build_sam`).
        progress: show a progress bar.

    Returns:
        The trained SAM (eval mode), per-step losses, held-out Dice and the time taken.

    Raises:
        InputError: bad settings, or data at another size than ``cfg.image_size`` / without masks.
    """
    cfg = cfg or PretrainConfig()
    cfg.check()
    if len(train) == 0:
        raise InputError(None, "no organ masks to train on")
    if train.image_size != cfg.image_size:
        raise InputError(None, f"slices are {train.image_size} px but image_size is {cfg.image_size}")
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    sam = build_sam(size, cfg.image_size).train()
    opt = torch.optim.Adam(sam.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg.steps, cfg.warmup))

    # Instance sampling weights: inverse organ frequency, normalised per slice at draw time.
    organ_n = np.bincount(train.mask_organ, minlength=len(train.organs)).astype(np.float64)
    weight = 1.0 / organ_n[train.mask_organ]
    order = np.argsort(train.mask_slice, kind="stable")
    starts = np.searchsorted(train.mask_slice[order], np.arange(len(train.images) + 1))
    slices_with = np.flatnonzero(np.diff(starts) > 0)
    kinds = list(cfg.prompt_probs)
    probs = np.asarray([cfg.prompt_probs[k] for k in kinds], np.float64)
    probs /= probs.sum()

    loss_size = cfg.image_size // cfg.loss_stride
    losses: list[float] = []
    bar = tqdm(range(cfg.steps), desc="pretrain SAM", unit="step", disable=not progress)
    for step in bar:
        chosen = rng.choice(slices_with, size=cfg.batch_size, replace=len(slices_with) < cfg.batch_size)
        rows = []
        for z in chosen:
            cand = order[starts[z] : starts[z + 1]]
            p = weight[cand] / weight[cand].sum()
            rows.append(rng.choice(cand, size=cfg.masks_per_image, p=p, replace=len(cand) < cfg.masks_per_image))
        rows_a = np.concatenate(rows)
        img_of = np.repeat(np.arange(cfg.batch_size), cfg.masks_per_image)
        images = torch.from_numpy(train.images[chosen])[:, None]
        masks = torch.from_numpy(train.masks[rows_a])
        flip = rng.random(cfg.batch_size) < cfg.flip
        if flip.any():
            images[flip] = images[flip].flip(-1)
            fm = torch.from_numpy(flip[img_of])
            masks[fm] = masks[fm].flip(-1)
        kind_of = rng.choice(len(kinds), size=len(rows_a), p=probs)

        emb = sam.image_encoder(preprocess_gray(sam, images))
        logits, ious, targets = [], [], []
        for k in np.unique(kind_of):
            sel = np.flatnonzero(kind_of == k)
            prompt = sample_prompt(kinds[k], masks[sel], rng, cfg.box_jitter)
            lg, io = decode_prompts(sam, emb[torch.from_numpy(img_of[sel])], *prompt, size=loss_size)
            logits.append(lg)
            ious.append(io)
            targets.append(masks[sel])
        target = torch.cat(targets).float()
        if cfg.loss_stride > 1:
            target = F.avg_pool2d(target[:, None], cfg.loss_stride)[:, 0]
        loss, dice = multimask_loss(torch.cat(logits), torch.cat(ious), target, cfg.iou_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(sam.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if step % 10 == 0 or step == cfg.steps - 1:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}", dice=f"{float(dice.detach()):.3f}")
    bar.close()
    sam.eval()
    train_seconds = time.perf_counter() - t0
    scores = _heldout_scores(sam, heldout, cfg.heldout_masks, cfg.seed) if heldout is not None else {}
    if scores:
        logger.info("held-out organ Dice (%d masks): box %.3f, point %.3f (means over organs %.3f, %.3f)",
                    int(scores["masks"]), scores["dice_box"], scores["dice_point"], scores["dice_box_organ_mean"],
                    scores["dice_point_organ_mean"])
    meta = {
        "size": size,
        "config": asdict(cfg),
        "organs": train.counts(),
        "train_slices": int(len(train.images)),
        "train_masks": int(len(train)),
        "heldout_slices": int(len(heldout.images)) if heldout is not None else 0,
        "heldout_masks": int(len(heldout)) if heldout is not None else 0,
        "first_loss": float(np.mean(losses[: max(1, min(20, len(losses)))])),
        "final_loss": float(np.mean(losses[-max(1, min(20, len(losses))) :])),
        "train_seconds": round(train_seconds, 1),
        "threads": torch.get_num_threads(),
    }
    return PretrainResult(sam, losses, scores, time.perf_counter() - t0, meta)


def sidecar_path(path: PathLike) -> Path:
    """The JSON sidecar of a weights file: ``FILE`` with its suffix replaced by ``.json``."""
    p = Path(path)
    return p.with_suffix(".json") if p.suffix else p.with_name(p.name + ".json")


def save_pretrained(result: PretrainResult, path: PathLike, extra: dict | None = None) -> tuple[Path, Path]:
    """Write ``sam.state_dict()`` (official layout) and a JSON sidecar, both atomically.

    Args:
        result: the pretraining result.
        path: weights file (``.pt`` / ``.pth``); the sidecar is :func:`sidecar_path`.
        extra: more entries for the sidecar.

    Returns:
        ``(weights, sidecar)`` paths.
    """
    path = Path(path)
    side = sidecar_path(path)
    if side == path:
        raise InputError(path, "the weights file cannot be a .json file (its sidecar is FILE.json)")
    state = {k: v.detach().cpu().clone() for k, v in result.sam.state_dict().items()}
    with atomic_output(path) as tmp:
        torch.save(state, tmp)
    doc = {**result.meta, "heldout": result.heldout, "seconds": round(result.seconds, 1), **(extra or {})}
    doc["weights"] = path.name
    with atomic_output(side) as tmp:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
    return path, side


#: Share of the phantom cases held out to score the pretraining (box and point prompts).
HELDOUT_FRACTION = 0.15


def pretrain_to_file(
    out: PathLike,
    cases: int = 20,
    image_size: int = 128,
    steps: int = 600,
    batch_size: int = 8,
    lr: float = 1e-3,
    seed: int = 0,
    data_seed: int = 1000,
    transfer: PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Build the organ slices of ``cases`` phantom cases, pretrain a compact SAM, save weights + sidecar.

    Used by ``sam-mix pretrain`` and by studies with a ``sam_pretrain`` section.

    Args:
        out: weights file (the sidecar is :func:`sidecar_path`).
        cases: phantom cases of cohort ``data_seed``; :data:`HELDOUT_FRACTION` of them are held out.
        image_size: SAM input size.
        steps, batch_size, lr, seed: optimisation (see :class:`PretrainConfig`).
        data_seed: phantom cohort seed (disjoint from the demo/study cohort, seed 0).
        transfer: an HDF5 slice store whose test-split liver slices give a zero-shot liver Dice.
        progress: progress bars.

    Returns:
        The sidecar's content.
    """
    from sam_mix_monai.data.phantom.organ_slices import build_organ_slices
    from sam_mix_monai.engines.organ_prompts import transfer_dice

    data = build_organ_slices(cases=cases, seed=data_seed, image_size=image_size, progress=progress)
    n_held = max(1, round(HELDOUT_FRACTION * cases)) if cases > 1 else 0
    train, heldout = data.split_by_case(range(cases - n_held, cases))
    cfg = PretrainConfig(image_size=image_size, steps=steps, batch_size=batch_size, lr=lr, seed=seed)
    result = pretrain_sam(train, cfg, heldout if n_held else None, progress=progress)
    extra: dict[str, Any] = {"cases": cases, "heldout_cases": n_held, "data_seed": data_seed, "domain": "a",
                             "train_masks": len(train), "train_slices": len(train.images)}
    if transfer:
        extra["transfer"] = {"store": str(transfer), "split": "test", **transfer_dice(result.sam, transfer)}
    _, side = save_pretrained(result, out, extra)
    return json.loads(side.read_text())
