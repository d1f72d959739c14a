"""Evaluation protocols: ``slice2d`` (the paper's) and ``volume3d`` (the clinical one).

* ``slice2d``: Dice and symmetric Hausdorff distance (pixels) of every liver-positive slice,
  averaged over those slices (MONAI ``MeanDice`` and a ``HausdorffDistance`` handler);
* ``volume3d``: the slices of each case stacked back (by ``case_id``, ordered by ``slice_index``)
  into a volume, cleaned up as ``sam-mix infer`` does (largest 3D connected component,
  :func:`~sam_mix_monai.transforms.components.keep_largest_component`), then 3D Dice and
  95th-percentile Hausdorff distance in mm with the stored pixel spacing (MONAI ``DiceMetric``,
  ``HausdorffDistanceMetric(percentile=95)``), averaged over the cases that contain liver. Only
  meaningful on a store of whole volumes: :func:`~sam_mix_monai.engines.evaluate.evaluate_dataset`
  refuses it (with the reason) on a store that keeps a central slab. This stacks the per-slice
  prompts' predictions; ``sam-mix evaluate`` scores a SAM-Mix in volume prompt mode through the
  ``sam-mix infer`` volume path instead (:mod:`sam_mix_monai.inference.store_volumes`, with
  :func:`volume_case_scores` and :func:`volume_means`);
* classification: accuracy, F1 and ROC AUC of "liver present" over slices with a known label.

A Hausdorff distance is undefined when the prediction is empty and the ground truth is not
(MONAI returns ``inf``): it is counted as the image (or volume) diagonal, the largest distance
possible, so that one missed slice cannot turn a mean into ``inf`` but still costs the most.
That figure (``slice2d_hd``) is kept; next to it ``slice2d_hd_predicted`` averages HD over the liver
slices with a non-empty prediction only (the paper's HD column is comparable with this one), and
``slice2d_missed`` counts the liver slices with an empty prediction.
Slices (or cases) without liver have no Dice or HD (``nan``, left out of the means): a false positive
on a liver-free slice is not scored by ``slice2d`` (it is by ``volume3d`` and the classifier metrics).

Under ``torch.distributed`` the MONAI and Ignite metrics gather across ranks; the volume handler
needs whole cases on each rank (the loaders partition by case) and gathers per-case results.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from typing import Any, Callable, Sequence

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.metrics import Accuracy, Fbeta
from monai.handlers import IgniteMetricHandler, MeanDice, ROCAUC, from_engine
from monai.metrics import CumulativeIterationMetric, DiceMetric, HausdorffDistanceMetric
from monai.utils import CommonKeys as Keys

from sam_mix_monai.transforms.components import keep_largest_component

__all__ = [
    "PROTOCOLS",
    "BoundedHausdorffDistanceMetric",
    "MissedSlicesMetric",
    "VolumeMetrics",
    "classification_metrics",
    "slice2d_metrics",
    "volume_case_scores",
    "volume_means",
]

PROTOCOLS = ("slice2d", "volume3d")


class BoundedHausdorffDistanceMetric(HausdorffDistanceMetric):
    """MONAI's Hausdorff distance with a defined value for empty predictions.

    ``nan`` where the ground truth is empty (left out of the mean); where only the prediction is
    empty, the diagonal of the image (in spacing units), or ``nan`` with ``missed="exclude"``.
    Binary one-channel masks.

    Args:
        percentile: ``None`` for the maximum (classic HD), e.g. 95 for HD95.
        reduction: MONAI metric reduction.
        missed: ``"diagonal"`` or ``"exclude"``: the value of an empty prediction on a liver slice.
    """

    def __init__(self, percentile: float | None = None, reduction: str = "mean", missed: str = "diagonal") -> None:
        super().__init__(include_background=True, percentile=percentile, reduction=reduction)
        if missed not in ("diagonal", "exclude"):
            raise ValueError(f"missed must be diagonal or exclude, got {missed!r}")
        self.missed = missed

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        spacing = kwargs.get("spacing")
        dims = y_pred.shape[2:]
        sp = [1.0] * len(dims) if spacing is None else [float(s) for s in torch.as_tensor(spacing).flatten()[: len(dims)]]
        diagonal = math.sqrt(sum((n * s) ** 2 for n, s in zip(dims, sp)))
        gt_empty = y.flatten(2).sum(-1) == 0
        pred_empty = y_pred.flatten(2).sum(-1) == 0
        hd = torch.full(gt_empty.shape, float("nan"), device=y_pred.device)
        ok = ~gt_empty & ~pred_empty
        if bool(ok.any()):
            idx = ok.any(dim=1).nonzero().flatten()
            kw = dict(kwargs)
            if spacing is not None and torch.as_tensor(spacing).ndim > 1:
                kw["spacing"] = [torch.as_tensor(spacing)[i].tolist() for i in idx.tolist()]
            with warnings.catch_warnings():  # MONAI's own deprecation notice from inside its HD code
                warnings.filterwarnings("ignore", category=FutureWarning, message=".*always_return_as_numpy.*")
                hd[idx] = super()._compute_tensor(y_pred[idx], y[idx], **kw).to(hd.dtype)
        hd[~gt_empty & pred_empty] = diagonal if self.missed == "diagonal" else float("nan")
        return hd


class MissedSlicesMetric(CumulativeIterationMetric):
    """Per slice: 1 where the reference has liver and the prediction is empty, 0 where both have
    some, ``nan`` where the reference is empty. ``reduction="sum"`` counts the missed slices."""

    def __init__(self, reduction: str = "sum") -> None:
        super().__init__()
        self.reduction = reduction

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        gt = y.flatten(2).sum(-1) > 0
        missed = (y_pred.flatten(2).sum(-1) == 0).float()
        return torch.where(gt, missed, torch.full_like(missed, float("nan")))

    def aggregate(self, reduction: str | None = None) -> torch.Tensor:
        """The reduced values (MONAI leaves ``nan`` out of the sum)."""
        from monai.metrics.utils import do_metric_reduction

        f, _ = do_metric_reduction(self.get_buffer(), reduction or self.reduction)
        return f


def _valid_labels(o: dict[str, Any]) -> torch.Tensor:
    return o["class_label"] >= 0


def classification_metrics(threshold: float) -> dict[str, Any]:
    """Accuracy, F1 (Ignite) and ROC AUC (MONAI) of "liver present" on slices with a known label.

    Needs ``liver_prob`` (B,) and ``class_label`` (B,) in the evaluator output. ``threshold`` must
    be the gate's threshold (:func:`~sam_mix_monai.engines.evaluator.build_evaluator` passes it), so
    accuracy and F1 describe the gate that empties the masks.
    """

    def decision(o: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        v = _valid_labels(o)
        return (o["liver_prob"][v] >= threshold).long(), o["class_label"][v].long()

    def score(o: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        v = _valid_labels(o)
        return o["liver_prob"][v].float(), o["class_label"][v].long()

    return {
        "cls_accuracy": Accuracy(output_transform=decision),
        "cls_f1": Fbeta(beta=1.0, output_transform=decision),
        "cls_auc": ROCAUC(output_transform=score),
    }


def slice2d_metrics() -> dict[str, Any]:
    """Per-slice metrics, each the mean over liver-positive slices (not a pooled Dice).

    ``slice2d_dice`` (MONAI ``MeanDice``), ``slice2d_hd`` (pixels; a missed slice counts the diagonal),
    ``slice2d_hd_predicted`` (pixels; slices with an empty prediction left out), ``slice2d_missed``
    (the number of liver slices with an empty prediction).
    """
    pred_label = from_engine([Keys.PRED, Keys.LABEL])
    return {
        "slice2d_dice": MeanDice(include_background=True, reduction="mean", output_transform=pred_label),
        "slice2d_hd": IgniteMetricHandler(metric_fn=BoundedHausdorffDistanceMetric(), output_transform=pred_label),
        "slice2d_hd_predicted": IgniteMetricHandler(metric_fn=BoundedHausdorffDistanceMetric(missed="exclude"),
                                                    output_transform=pred_label),
        "slice2d_missed": IgniteMetricHandler(metric_fn=MissedSlicesMetric(), output_transform=pred_label),
    }


class VolumeMetrics:
    """``volume3d`` handler: per-case 3D Dice and HD95 (mm) from the evaluator's slice predictions.

    Writes ``volume3d_dice`` and ``volume3d_hd95`` (means over cases with liver) into
    ``engine.state.metrics`` and the per-case values into ``engine.state.metric_details["volume3d"]``.

    Args:
        percentile: Hausdorff percentile (95).
        output_transform: maps the evaluator output to ``(pred, label, case_id, slice_index, spacing)``.
        largest_component: keep the largest 3D component of each case's prediction (as ``sam-mix infer``).
    """

    def __init__(self, percentile: float = 95.0, output_transform: Callable | None = None,
                 largest_component: bool = True) -> None:
        self.percentile = percentile
        self.largest_component = largest_component
        self.output_transform = output_transform or from_engine([Keys.PRED, Keys.LABEL, "case_id", "slice_index", "spacing"])
        self._slices: dict[str, list[tuple[int, torch.Tensor, torch.Tensor]]] = defaultdict(list)
        self._spacing: dict[str, list[float]] = {}

    def attach(self, engine: Engine) -> None:
        """Collect at every iteration, compute at the end of each evaluation run."""
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.completed)

    def reset(self, engine: Engine | None = None) -> None:
        """Forget collected slices."""
        self._slices.clear()
        self._spacing.clear()

    def update(self, engine: Engine) -> None:
        """Keep the batch's binary predictions and ground truth (CPU, uint8) per case."""
        pred, label, case_ids, slice_index, spacing = self.output_transform(engine.state.output)
        pred = pred.detach().to("cpu", torch.uint8)
        label = label.detach().to("cpu", torch.uint8)
        for i, case in enumerate(case_ids):
            self._slices[case].append((int(slice_index[i]), pred[i, 0], label[i, 0]))
            self._spacing.setdefault(case, [float(s) for s in torch.as_tensor(spacing[i]).tolist()])

    def case_metrics(self) -> list[dict[str, Any]]:
        """3D metrics of the cases collected on this rank."""
        rows = []
        for case, items in sorted(self._slices.items()):
            items.sort(key=lambda t: t[0])
            p = torch.stack([t[1] for t in items], dim=-1)  # (H, W, D) uint8
            y = torch.stack([t[2] for t in items], dim=-1)
            rows.append(volume_case_scores(case, p, y, self._spacing[case], self.percentile, self.largest_component))
        return rows

    def completed(self, engine: Engine) -> None:
        """Gather per-case results over ranks and write the means into ``engine.state.metrics``."""
        rows = self.case_metrics()
        if idist.get_world_size() > 1:
            gathered = idist.all_gather(rows)
            rows = list({r["case_id"]: r for part in gathered for r in (part if isinstance(part, list) else [part])}.values())
            rows.sort(key=lambda r: r["case_id"])
        engine.state.metrics.update(volume_means(rows))
        engine.state.metric_details["volume3d"] = rows


def volume_case_scores(case: str, pred: torch.Tensor, label: torch.Tensor, spacing: Sequence[float],
                       percentile: float = 95.0, largest_component: bool = True) -> dict[str, Any]:
    """3D Dice and HD (mm) of one case: the ``volume3d`` row.

    Args:
        case: its case id.
        pred, label: ``(H, W, D)`` binary stacks of display slices (uint8).
        spacing: mm per pixel row, column and slice (the store's ``spacing``).
        percentile: Hausdorff percentile (95).
        largest_component: keep the largest 3D component of ``pred`` first (as ``sam-mix infer``).

    Returns:
        ``{"case_id", "slices", "dice", "hd95_mm", "liver_voxels", "pred_voxels"}`` (``dice`` ``nan`` without liver).
    """
    p = pred.to(torch.uint8)
    if largest_component:
        p = torch.from_numpy(keep_largest_component(p.numpy().copy()))
    p = p[None, None].float()  # (1, 1, H, W, D)
    y = label[None, None].float()
    d = float(DiceMetric(include_background=True, reduction="none")(p, y)[0, 0]) if y.any() else float("nan")
    hd = BoundedHausdorffDistanceMetric(percentile=percentile, reduction="none")
    h = float(hd(p, y, spacing=[float(s) for s in spacing])[0, 0])
    return {"case_id": case, "slices": int(label.shape[-1]), "dice": d, "hd95_mm": h,
            "liver_voxels": int(y.sum()), "pred_voxels": int(p.sum())}


def volume_means(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """``volume3d_dice`` and ``volume3d_hd95``: means over the cases with liver (``nan`` without any)."""
    scored = [r for r in rows if not math.isnan(r["dice"])]
    nan = float("nan")
    return {"volume3d_dice": sum(r["dice"] for r in scored) / len(scored) if scored else nan,
            "volume3d_hd95": sum(r["hd95_mm"] for r in scored) / len(scored) if scored else nan}
