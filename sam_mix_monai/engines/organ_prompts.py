"""Prompts for promptable-segmentation training and scoring of SAM, from ground-truth masks.

* :func:`sample_prompt`: box (jittered), positive points, box + point, and box + a coarse,
  CAM-like mask prompt (blurred, re-thresholded, shifted, area-pooled to SAM's S/4 mask input,
  the form of SAM-Mix's dense prompt);
* :func:`decode_prompts`: SAM's prompt encoder + the paired decoder on given image embeddings;
* :func:`prompted_dice`: per-mask Dice with the mask chosen by the IoU head (as SAM-Mix does);
* :func:`transfer_dice`: that, on the liver of a converted slice store (zero-shot transfer).

Used by :mod:`.sam_pretrain`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam

from sam_mix_monai.networks.baselines import interior_point
from sam_mix_monai.networks.cam import mask_to_box
from sam_mix_monai.networks.decoding import decode_paired, select_best_mask
from sam_mix_monai.networks.sam_builder import preprocess_gray
from sam_mix_monai.utils.errors import InputError, PathLike

__all__ = [
    "PROMPT_KINDS",
    "coarse_masks",
    "decode_prompts",
    "jittered_boxes",
    "prompted_dice",
    "random_points",
    "sample_prompt",
    "transfer_dice",
]

#: Prompt kinds drawn during pretraining and their default probabilities.
PROMPT_KINDS: dict[str, float] = {"box": 0.3, "point": 0.25, "box+point": 0.15, "box+mask": 0.3}


def jittered_boxes(masks: torch.Tensor, frac: float, rng: np.random.Generator) -> torch.Tensor:
    """(P, 4) boxes (x1, y1, x2, y2) of (P, S, S) masks, each coordinate moved by up to ``frac``
    of the box's width (x) or height (y), kept inside the image (inclusive pixel indices)."""
    boxes, _ = mask_to_box(masks[:, None].float())
    if frac <= 0:
        return boxes
    w = (boxes[:, 2] - boxes[:, 0] + 1).unsqueeze(1)
    h = (boxes[:, 3] - boxes[:, 1] + 1).unsqueeze(1)
    noise = torch.from_numpy(rng.uniform(-frac, frac, (len(boxes), 4)).astype(np.float32))
    out = boxes + noise * torch.cat([w, h, w, h], dim=1)
    s = float(masks.shape[-1] - 1)
    out = out.clamp(0.0, s)
    x1, x2 = torch.minimum(out[:, 0], out[:, 2]), torch.maximum(out[:, 0], out[:, 2])
    y1, y2 = torch.minimum(out[:, 1], out[:, 3]), torch.maximum(out[:, 1], out[:, 3])
    return torch.stack([x1, y1, x2, y2], dim=1)


def random_points(masks: torch.Tensor, n: int, rng: np.random.Generator) -> torch.Tensor:
    """(P, n, 2) uniformly random foreground pixels (x, y) of (P, S, S) non-empty masks."""
    s = masks.shape[-1]
    pts = np.zeros((len(masks), n, 2), np.float32)
    for i, m in enumerate(masks.numpy().reshape(len(masks), -1)):
        idx = rng.choice(np.flatnonzero(m), size=n)
        pts[i, :, 0], pts[i, :, 1] = idx % s, idx // s
    return torch.from_numpy(pts)


def coarse_masks(masks: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """CAM-like dense prompts: blurred, re-thresholded, shifted masks, area-pooled to S/4."""
    s = masks.shape[-1]
    out = torch.empty(len(masks), 1, s // 4, s // 4)
    for i, m in enumerate(masks):
        f = int(rng.choice([4, 8, 16]))
        low = F.avg_pool2d(m[None, None].float(), f)
        blob = F.interpolate(low, size=(s, s), mode="bilinear", align_corners=False) >= rng.uniform(0.2, 0.6)
        if not bool(blob.any()):
            blob = m[None, None]
        dy, dx = (int(v) for v in rng.integers(-s // 16, s // 16 + 1, 2))
        blob = torch.roll(blob.float(), shifts=(dy, dx), dims=(2, 3))
        out[i] = F.avg_pool2d(blob, 4)[0]
    return out


def sample_prompt(kind: str, masks: torch.Tensor, rng: np.random.Generator, box_jitter: float = 0.1, train: bool = True):
    """Prompts of one kind for a batch of masks.

    Args:
        kind: ``box``, ``point``, ``box+point`` or ``box+mask`` (:data:`PROMPT_KINDS`).
        masks: (P, S, S) bool masks.
        rng: random generator.
        box_jitter: box-side jitter (fraction of the side length) when ``train``.
        train: random prompts (jittered box, 1 or 2 random points for ``point``, one for
            ``box+point``); else deterministic ones (exact box, interior-most point).

    Returns:
        ``(points, boxes, dense)`` for SAM's prompt encoder (``None`` where unused).
    """
    points = boxes = dense = None
    if "box" in kind:
        boxes = jittered_boxes(masks, box_jitter if train else 0.0, rng)
    if "point" in kind:
        if train:
            coords = random_points(masks, 2 if (kind == "point" and rng.random() < 0.5) else 1, rng)
        else:
            coords = interior_point(masks[:, None].float()).unsqueeze(1)
        points = (coords, torch.ones(coords.shape[:2]))
    if "mask" in kind:
        dense = coarse_masks(masks, rng)
    return points, boxes, dense


def decode_prompts(sam: Sam, emb: torch.Tensor, points, boxes, dense, size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, 3, size, size) mask logits (default size: the SAM input size) and (P, 3) IoU scores."""
    sparse, dense_emb = sam.prompt_encoder(points=points, boxes=boxes, masks=dense)
    if dense_emb.shape[0] != emb.shape[0]:
        dense_emb = dense_emb.expand(emb.shape[0], -1, -1, -1)
    low, iou = decode_paired(sam.mask_decoder, emb, sam.prompt_encoder.get_dense_pe(), sparse, dense_emb, True)
    s = size or sam.image_encoder.img_size
    return F.interpolate(low, size=(s, s), mode="bilinear", align_corners=False), iou


@torch.no_grad()
def prompted_dice(
    sam: Sam,
    images: torch.Tensor,
    masks: torch.Tensor,
    kind: str = "box",
    batch_size: int = 32,
    targets: torch.Tensor | None = None,
) -> np.ndarray:
    """Per-mask hard Dice of SAM prompted from the ground truth, mask chosen by the IoU head.

    Prompts are deterministic: the exact box (``box``), the interior-most point (``point``);
    ``box+mask`` draws its coarse mask from a generator seeded with 0.

    Args:
        sam: the SAM (input size ``S``).
        images: (P, 1, S, S) slices in [0, 1], one per mask.
        masks: (P, S, S) bool masks the prompts come from.
        kind: a prompt kind (:data:`PROMPT_KINDS`).
        batch_size: prompts per forward pass.
        targets: (P, H, W) bool masks to score against, at any size (the chosen logits are
            resized bilinearly to it); default ``masks``.

    Returns:
        (P,) Dice per mask (1 where both prediction and target are empty).
    """
    was_training = sam.training
    sam.eval()
    rng = np.random.default_rng(0)
    out = []
    for a in range(0, len(masks), batch_size):
        m = masks[a : a + batch_size]
        emb = sam.image_encoder(preprocess_gray(sam, images[a : a + batch_size]))
        logits, iou = decode_prompts(sam, emb, *sample_prompt(kind, m, rng, train=False))
        best, _ = select_best_mask(logits, iou)
        tgt = m if targets is None else targets[a : a + batch_size]
        if tuple(best.shape[-2:]) != tuple(tgt.shape[-2:]):
            best = F.interpolate(best, size=tuple(tgt.shape[-2:]), mode="bilinear", align_corners=False)
        pred = (best[:, 0] > 0).flatten(1).float()
        t = tgt.flatten(1).float()
        denom = pred.sum(1) + t.sum(1)
        d = torch.where(denom > 0, 2 * (pred * t).sum(1) / denom.clamp_min(1.0), torch.ones_like(denom))
        out.append(d.numpy())
    sam.train(was_training)
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def transfer_dice(
    sam: Sam, store: PathLike, split: str = "test", kinds: Sequence[str] = ("box", "point")
) -> dict[str, float]:
    """Zero-shot liver Dice: SAM prompted from the ground-truth liver of a slice store.

    Every liver-positive slice of ``split`` is resized (bilinear) to the SAM input size, prompted
    with the box / interior point of its liver mask (nearest-resized to that size), and scored
    at the store's resolution (logits resized bilinearly), as SAM-Mix's ``slice2d`` protocol does.

    Args:
        sam: the SAM.
        store: an HDF5 slice store (``sam-mix convert`` / the demo's ``phantom_a.h5``).
        split: which split.
        kinds: prompt kinds (see :func:`prompted_dice`).

    Returns:
        ``{"slices": n, "dice_<kind>": mean Dice, ...}``.
    """
    from sam_mix_monai.data import SliceDataset

    ds = SliceDataset(store, split=split)
    items = ds.__getitems__(list(range(len(ds)))) if len(ds) else []
    if not items:
        raise InputError(store, f"split {split!r} holds no slices")
    images = torch.stack([i["image"] for i in items])
    masks = torch.stack([i["mask"] for i in items])[:, 0] > 0.5
    s = int(sam.image_encoder.img_size)
    small = F.interpolate(masks[:, None].float(), size=(s, s), mode="nearest")[:, 0] > 0.5
    keep = small.flatten(1).any(1)
    if not bool(keep.any()):
        raise InputError(store, f"split {split!r} holds no liver-positive slice")
    x = F.interpolate(images[keep], size=(s, s), mode="bilinear", align_corners=False)
    out: dict[str, float] = {"slices": float(keep.sum())}
    for kind in kinds:
        out[f"dice_{kind}"] = float(prompted_dice(sam, x, small[keep], kind, targets=masks[keep]).mean())
    return out
