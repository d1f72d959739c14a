"""Box-prompt quality: how well SAM-Mix's automatic box finds the liver.

On every liver-positive slice (reference mask not empty), the box fed to SAM is compared with the
tight box of the reference liver mask:

* ``box_iou``: mean IoU of the two boxes (MONAI ``monai.data.box_utils.box_iou``);
* ``box_iou50``: share of slices whose box IoU is at least 0.5;
* ``box_centroid``: share of boxes that contain the liver's centroid (the mean of its pixel centres).

Slices without liver have no reference box and are left out. Every liver-positive slice counts,
also those the classifier gate empties: the metric measures the prompt, not the gate.

Boxes use SAM's inclusive pixel indices ``(x1, y1, x2, y2)`` at the network input size; the
evaluator maps them onto the label grid first (:func:`scale_boxes`), where a network pixel ``i``
covers label pixels ``[i * s, (i + 1) * s)``.

Example:
    >>> import torch
    >>> mask = torch.zeros(1, 1, 8, 8); mask[0, 0, 2:6, 2:6] = 1
    >>> q = box_quality(torch.tensor([[2.0, 2.0, 5.0, 5.0]]), mask)
    >>> float(q["iou"][0]), bool(q["centroid"][0])
    (1.0, True)
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce
from monai.data.box_utils import box_iou

from sam_mix_monai.networks.cam import mask_to_box

__all__ = ["scale_boxes", "box_quality", "BoxQuality", "BOX_METRICS"]

#: Names :class:`BoxQuality` writes into ``engine.state.metrics``.
BOX_METRICS = ("box_iou", "box_iou50", "box_centroid")


def scale_boxes(boxes: torch.Tensor, scale: float) -> torch.Tensor:
    """Map inclusive pixel boxes from a grid to one ``scale`` times finer, still inclusive.

    Args:
        boxes: (B, 4) inclusive ``(x1, y1, x2, y2)``.
        scale: target size / source size.

    Returns:
        (B, 4) inclusive boxes on the target grid.
    """
    if scale == 1.0:
        return boxes.float()
    b = boxes.float()
    return torch.stack([b[:, 0] * scale, b[:, 1] * scale, (b[:, 2] + 1) * scale - 1, (b[:, 3] + 1) * scale - 1], 1)


def box_quality(boxes: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-slice box IoU and centroid containment against the reference mask.

    Args:
        boxes: (B, 4) inclusive pixel boxes ``(x1, y1, x2, y2)`` on the mask's grid.
        mask: (B, 1, H, W) reference liver mask.

    Returns:
        dict of (B,) tensors: ``positive`` (bool, reference not empty), ``iou`` (float, NaN where
        not positive) and ``centroid`` (bool, the box contains the liver centroid; False where not positive).
    """
    ref, empty = mask_to_box(mask)
    positive = ~empty
    # inclusive pixel indices -> continuous corners [x1, x2 + 1) for MONAI's corner-mode IoU
    to_corners = torch.tensor([0.0, 0.0, 1.0, 1.0], device=boxes.device)
    pred_c = boxes.float() + to_corners
    ref_c = ref.float().to(boxes.device) + to_corners
    iou = torch.diagonal(box_iou(pred_c, ref_c)).float() if len(boxes) else boxes.new_zeros(0)
    m = (mask > 0.5).float().flatten(0, 1)  # (B, H, W)
    h, w = m.shape[-2:]
    area = m.sum((1, 2)).clamp_min(1.0)
    cy = (m.sum(2) * torch.arange(h, device=m.device)).sum(1) / area + 0.5  # pixel centres
    cx = (m.sum(1) * torch.arange(w, device=m.device)).sum(1) / area + 0.5
    cx, cy = cx.to(boxes.device), cy.to(boxes.device)
    inside = (pred_c[:, 0] <= cx) & (cx <= pred_c[:, 2]) & (pred_c[:, 1] <= cy) & (cy <= pred_c[:, 3])
    positive = positive.to(boxes.device)
    return {
        "positive": positive,
        "iou": torch.where(positive, iou, torch.full_like(iou, float("nan"))),
        "centroid": inside & positive,
    }


class BoxQuality(Metric):
    """Ignite metric: ``box_iou``, ``box_iou50`` and ``box_centroid`` over liver-positive slices.

    ``compute`` returns a dict; Ignite writes each entry into ``engine.state.metrics`` (NaN when no
    slice has liver or the network gives no box). Sums are reduced over ranks.

    Args:
        output_transform: maps the evaluator output to ``(boxes or None, mask)``, boxes on the mask grid.
    """

    def __init__(self, output_transform: Callable = lambda o: (o.get("boxes"), o["label"]), device: Any = "cpu") -> None:
        super().__init__(output_transform=output_transform, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        """Zero the sums."""
        self._n = torch.tensor(0.0, device=self._device)
        self._iou = torch.tensor(0.0, device=self._device)
        self._iou50 = torch.tensor(0.0, device=self._device)
        self._centroid = torch.tensor(0.0, device=self._device)

    @reinit__is_reduced
    def update(self, output: tuple[torch.Tensor | None, torch.Tensor]) -> None:
        """Add one batch."""
        boxes, mask = output
        if boxes is None:
            return
        q = box_quality(boxes.detach(), mask.detach())
        pos = q["positive"]
        self._n += float(pos.sum())
        self._iou += float(q["iou"][pos].sum())
        self._iou50 += float((q["iou"][pos] >= 0.5).sum())
        self._centroid += float(q["centroid"].sum())

    @sync_all_reduce("_n", "_iou", "_iou50", "_centroid")
    def compute(self) -> dict[str, float]:
        """Means over the liver-positive slices seen."""
        n = float(self._n)
        if n == 0:
            return {k: float("nan") for k in BOX_METRICS}
        return {"box_iou": float(self._iou) / n, "box_iou50": float(self._iou50) / n, "box_centroid": float(self._centroid) / n}
