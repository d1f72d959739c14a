"""CAM prompts: closed-form GradCAM, threshold, one connected component, box.

Everything here is plain tensor arithmetic with static shapes: it runs batched, under
``torch.no_grad()``, and survives ``torch.jit.trace`` and ONNX export.

Pipeline (:func:`cam_prompts`):

1. **Closed-form GradCAM.** For a GAP + linear head ``y_c = sum_k W_ck mean(A_k) + b_c`` the
   GradCAM channel weights are ``W_ck / (h w)``, so ``GradCAM_c = ReLU(sum_k W_ck A_k) / (h w)``.
   No backward pass is needed (see ``tests/networks/test_cam.py`` for the check against
   ``monai.visualize.GradCAM``).
2. **Min-max normalisation** per image to [0, 1] (a constant map becomes all zeros).
3. **Threshold** (default 0.4) at the low-resolution CAM grid, then **one 8-connected component**
   there (:func:`select_component`): by default (``component="area"``, the guide's reading) the
   largest; ``"peak"`` keeps the component holding the CAM maximum, ``"mass"`` the one with the
   largest CAM sum. A broad low-heat region can outgrow the liver peak by area; by peak or mass it
   cannot.
4. **Upsampling** to the SAM input size: the normalised CAM is zeroed outside the component and a
   one-cell ring around it, bilinearly upsampled and thresholded again. Because the bilinear stencil
   of a pixel is a 2x2 block of mutually adjacent cells, this gives exactly the pixels of the
   high-resolution thresholded map that belong to the kept component.
5. **Box** (x1, y1, x2, y2), inclusive pixel indices in SAM input coordinates. When the
   thresholded map is empty (a constant CAM, or a threshold above 1) the box falls back to a
   central box covering ``fallback_fraction`` of each side, and the CAM mask stays empty.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "BODY_THRESHOLD",
    "clip_boxes_to_body",
    "mask_cam_to_body",
    "closed_form_gradcam",
    "minmax_normalize",
    "largest_component",
    "select_component",
    "COMPONENT_RULES",
    "mask_to_box",
    "central_box",
    "cam_prompts",
    "gate_logits",
]


def closed_form_gradcam(features: torch.Tensor, fc_weight: torch.Tensor, class_idx: int = 1) -> torch.Tensor:
    """GradCAM of one class for a GAP + linear classifier, without autograd.

    Args:
        features: (B, K, h, w) last feature map ``A``.
        fc_weight: (num_classes, K) weight of the linear head.
        class_idx: class to explain (1 = liver).

    Returns:
        (B, 1, h, w) raw GradCAM map ``ReLU(sum_k W_ck A_k) / (h w)``, equal to
        ``monai.visualize.GradCAM.compute_map`` on the same network.
    """
    h, w = features.shape[-2:]
    weights = fc_weight[class_idx].to(features.dtype).view(1, -1, 1, 1)
    return F.relu((features * weights).sum(1, keepdim=True)) / float(h * w)


def minmax_normalize(cam: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Min-max normalise each (B, 1, h, w) map to [0, 1]; a constant map becomes zeros.

    The range is clamped to ``eps`` rather than offset by it, so a non-constant map reaches
    exactly 1 (and the result does not depend on how an exporter orders ``hi - lo + eps``).
    """
    flat = cam.flatten(1)
    lo = flat.amin(dim=1).view(-1, 1, 1, 1)
    hi = flat.amax(dim=1).view(-1, 1, 1, 1)
    return (cam - lo) / (hi - lo).clamp_min(eps)


#: Rules of :func:`select_component`.
COMPONENT_RULES = ("area", "peak", "mass")


def select_component(
    mask: torch.Tensor, score: torch.Tensor | None = None, rule: str = "area", iterations: int | None = None
) -> torch.Tensor:
    """One 8-connected component of each binary map, by max-pool label propagation.

    Every foreground pixel starts with a unique label; ``iterations`` rounds of 3x3 max pooling
    (restricted to the foreground) spread the largest label of each component over it. Then one
    component is kept:

    * ``"area"``: the one with the most pixels (ties: the one with the larger label);
    * ``"peak"``: the one holding the foreground pixel of highest ``score`` (ties: the first in
      raster order);
    * ``"mass"``: the one with the largest sum of ``score`` (ties: the larger label).

    Hand-written because the library versions (``monai.transforms.utils.get_largest_connected_component_mask``,
    ``skimage.measure.label``, cuCIM) are not batched tensor ops and cannot be traced or exported.

    Limit: a label travels one pixel per iteration, so a component is labelled consistently when its
    8-connected geodesic eccentricity is at most ``iterations``. The default ``h + w`` covers any
    convex blob on the grid (eccentricity at most ``max(h, w)``) with room to spare; a longer,
    snake-like component would end up split into parts, and only one part would be kept.

    Args:
        mask: (B, 1, h, w) binary map (bool or {0, 1} float).
        score: (B, 1, h, w) map the ``peak`` and ``mass`` rules rank by (e.g. the normalised CAM).
        rule: ``area``, ``peak`` or ``mass``.
        iterations: propagation rounds; ``None`` = ``h + w``.

    Returns:
        (B, 1, h, w) float {0, 1} mask of the kept component (all zeros for an empty map).
    """
    if rule not in COMPONENT_RULES:
        raise ValueError(f"component rule must be one of {COMPONENT_RULES}, got {rule!r}")
    if rule != "area" and score is None:
        raise ValueError(f"component rule {rule!r} needs a score map")
    b, _, h, w = mask.shape
    fg = (mask > 0.5).to(torch.float32) if mask.dtype != torch.bool else mask.to(torch.float32)
    n_iter = h + w if iterations is None else int(iterations)
    ids = torch.arange(1, h * w + 1, dtype=torch.float32, device=mask.device).view(1, 1, h, w)
    labels = fg * ids  # labels up to h*w are exact in float32 for any realistic CAM grid
    for _ in range(n_iter):
        labels = F.max_pool2d(labels, kernel_size=3, stride=1, padding=1) * fg
    flat = labels.flatten(1).long()  # (B, h*w), 0 = background
    fg_flat = fg.flatten(1)
    if rule == "peak":
        s = score.to(torch.float32).flatten(1)
        # foreground pixels only: background gets a score below any foreground one
        ranked = s * fg_flat + (s.amin(dim=1, keepdim=True) - 1.0) * (1.0 - fg_flat)
        best = torch.gather(flat, 1, ranked.argmax(dim=1, keepdim=True))  # (B, 1); 0 for an empty map
    else:
        weight = fg_flat if rule == "area" else score.to(torch.float32).flatten(1) * fg_flat
        counts = torch.zeros(flat.shape[0], h * w + 1, dtype=torch.float32, device=mask.device)
        counts = counts.scatter_add(1, flat, weight)
        sizes = torch.zeros_like(counts).scatter_add(1, flat, fg_flat)[:, 1:]
        counts = counts[:, 1:]  # drop background
        # The largest count wins; among equal counts, the larger label (a deterministic tie-break).
        label_ids = torch.arange(1, h * w + 1, dtype=torch.float32, device=mask.device).view(1, -1)
        is_max = (counts >= counts.amax(dim=1, keepdim=True)) & (sizes > 0)
        best = (is_max.to(torch.float32) * label_ids).argmax(dim=1, keepdim=True) + 1  # (B, 1)
    keep = (flat == best).to(torch.float32) * fg_flat
    return keep.view(b, 1, h, w)


def largest_component(mask: torch.Tensor, iterations: int | None = None) -> torch.Tensor:
    """Largest 8-connected component of each binary map: :func:`select_component` with ``rule="area"``.

    Args:
        mask: (B, 1, h, w) binary map (bool or {0, 1} float).
        iterations: propagation rounds; ``None`` = ``h + w``.

    Returns:
        (B, 1, h, w) float {0, 1} mask of the largest component (all zeros for an empty map).
    """
    return select_component(mask, None, "area", iterations)


def mask_to_box(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Tight box around each binary mask.

    Written with float reductions instead of ``segment_anything.utils.amg.batched_mask_to_box``
    because that one reduces boolean tensors, which ONNX Runtime does not implement.

    Args:
        mask: (B, 1, H, W) binary mask.

    Returns:
        ``(boxes, empty)``: (B, 4) float boxes (x1, y1, x2, y2), inclusive pixel indices
        (zeros for an empty mask), and a (B,) bool flag for empty masks.
    """
    m = (mask > 0.5).to(torch.float32).flatten(0, 1)  # (B, H, W)
    h, w = m.shape[-2:]
    rows = m.amax(dim=2)  # (B, H)
    cols = m.amax(dim=1)  # (B, W)
    ys = torch.arange(h, dtype=torch.float32, device=mask.device).view(1, -1)
    xs = torch.arange(w, dtype=torch.float32, device=mask.device).view(1, -1)
    y2 = (rows * ys).amax(dim=1)
    x2 = (cols * xs).amax(dim=1)
    y1 = (rows * ys + (1.0 - rows) * float(h)).amin(dim=1)
    x1 = (cols * xs + (1.0 - cols) * float(w)).amin(dim=1)
    empty = rows.amax(dim=1) < 0.5
    boxes = torch.stack([x1, y1, x2, y2], dim=1) * (~empty).to(torch.float32).unsqueeze(1)
    return boxes, empty


#: Windowed intensity above which a pixel counts as body (the demo window 40/400 maps -160 HU to 0:
#: 0.02 is about -152 HU, so air is out and fat is in).
BODY_THRESHOLD = 0.02


def clip_boxes_to_body(boxes: torch.Tensor, image: torch.Tensor, threshold: float = BODY_THRESHOLD) -> torch.Tensor:
    """Intersect each box with the bounding box of the body (pixels above ``threshold``).

    A liver lies inside the body, but a coarse CAM can spill into the air around it (measured on the
    demo's phantom-trained classifier: its CAM boxes start at the image border on the real CT).
    A box that does not overlap the body, or a slice without body pixels, keeps its box.

    Args:
        boxes: (B, 4) float (x1, y1, x2, y2) inclusive pixel boxes on ``image``'s grid.
        image: (B, 1, H, W) windowed slices in [0, 1].
        threshold: body intensity threshold.

    Returns:
        (B, 4) float boxes.
    """
    body, empty = mask_to_box((image > threshold).to(torch.float32))
    lo = torch.maximum(boxes[:, :2], body[:, :2])
    hi = torch.minimum(boxes[:, 2:], body[:, 2:])
    ok = (hi >= lo).all(dim=1, keepdim=True) & ~empty.unsqueeze(1)
    return torch.where(ok, torch.cat([lo, hi], dim=1), boxes)


def mask_cam_to_body(cam: torch.Tensor, image: torch.Tensor, threshold: float = BODY_THRESHOLD) -> torch.Tensor:
    """Zero the CAM on cells that lie mostly outside the body, before its threshold and component step.

    The liver lies inside the body, yet a small classifier can put its CAM peak in the air at the image
    border (measured on ``configs/ircadb_sammix_50.yaml`` trained on image labels only: on the ircadb_07
    development slab every box sat on the air beside the body). Zeroing those cells makes the peak and the
    component fall inside; there it moved them onto the body wall, not the liver (slab Dice 0.000 either
    way), so the switch is off in every config and the CAM localisation loss (``loss.cam_mask``) is what helped.

    Args:
        cam: (B, 1, h, w) raw CAM.
        image: (B, 1, H, W) windowed slices in [0, 1]; ``H`` and ``W`` multiples of ``h`` and ``w``.
        threshold: body intensity threshold.

    Returns:
        (B, 1, h, w) CAM, zero where less than half of a cell's pixels are body.
    """
    h, w = cam.shape[-2:]
    factor = (int(image.shape[-2]) // h, int(image.shape[-1]) // w)
    # avg_pool2d rather than interpolate(mode="area"), which ONNX cannot export
    body = F.avg_pool2d((image > threshold).to(cam.dtype), factor)
    return cam * (body >= 0.5).to(cam.dtype)


def central_box(height: int, width: int, fraction: float = 0.5) -> torch.Tensor:
    """Fallback box: centred, covering ``fraction`` of each side, (4,) inclusive (x1, y1, x2, y2)."""
    bw, bh = fraction * width, fraction * height
    x1, y1 = (width - bw) / 2.0, (height - bh) / 2.0
    return torch.tensor([x1, y1, x1 + bw - 1.0, y1 + bh - 1.0], dtype=torch.float32)


def cam_prompts(
    cam: torch.Tensor,
    out_size: tuple[int, int],
    threshold: float = 0.4,
    lcc_iterations: int | None = None,
    fallback_fraction: float = 0.5,
    component: str = "area",
) -> dict[str, torch.Tensor]:
    """Turn raw low-resolution CAMs into SAM prompts.

    Args:
        cam: (B, 1, h, w) raw CAM (e.g. from :func:`closed_form_gradcam`).
        out_size: (H, W) SAM input size.
        threshold: threshold on the min-max normalised CAM.
        lcc_iterations: label-propagation rounds of :func:`largest_component`.
        fallback_fraction: side fraction of the central fallback box.
        component: which thresholded component to keep (:data:`COMPONENT_RULES`: ``area``, ``peak``, ``mass``).

    Returns:
        dict with ``cam`` (B, 1, H, W) normalised CAM, ``cam_mask`` (B, 1, H, W) float {0, 1}
        kept thresholded component, ``boxes`` (B, 4) float (x1, y1, x2, y2) in SAM input pixels,
        ``box_fallback`` (B,) bool (True where the central box was used).
    """
    cam = cam.float()
    norm = minmax_normalize(cam)
    keep = select_component(norm >= threshold, norm, component, lcc_iterations)
    ring = F.max_pool2d(keep, kernel_size=3, stride=1, padding=1)  # component + its (sub-threshold) ring
    cam_up = F.interpolate(norm, size=out_size, mode="bilinear", align_corners=False)
    kept_up = F.interpolate(norm * ring, size=out_size, mode="bilinear", align_corners=False)
    cam_mask = (kept_up >= threshold).to(torch.float32)
    boxes, empty = mask_to_box(cam_mask)
    fallback = central_box(out_size[0], out_size[1], fallback_fraction).to(boxes.device).view(1, 4)
    boxes = torch.where(empty.unsqueeze(1), fallback, boxes)
    return {"cam": cam_up, "cam_mask": cam_mask, "boxes": boxes, "box_fallback": empty}


def gate_logits(
    mask_logits: torch.Tensor, liver_prob: torch.Tensor, threshold: float = 0.5, fill: float = -1.0e4
) -> torch.Tensor:
    """Replace the mask logits of slices the classifier calls liver-free by ``fill``.

    Args:
        mask_logits: (B, C, H, W) logits.
        liver_prob: (B,) classifier probability of the liver class.
        threshold: slices with ``liver_prob < threshold`` are gated.
        fill: logit used for gated slices (sigmoid(fill) == 0).

    Returns:
        (B, C, H, W) gated logits.
    """
    present = (liver_prob >= threshold).view(-1, 1, 1, 1)
    return torch.where(present, mask_logits, torch.full_like(mask_logits, fill))
