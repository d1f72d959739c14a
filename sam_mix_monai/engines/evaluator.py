"""The SAM-Mix evaluator: MONAI's ``SupervisedEvaluator`` with the project's protocols.

Prediction: ``sigmoid(mask_logits) > 0.5`` at the stored slice resolution, with the slices the
classifier calls liver-free emptied (class logits, ``cls_threshold``; the classification metrics use
the same threshold). Nothing reads the reference mask to form a prediction, except the explicitly
named upper-bound rows: SAM-PP is prompted with the image centre on every slice
(``point_prompt="centre"``); ``point_prompt="oracle"`` (the interior-most reference pixel) and the
oracle-box SAM (``sam_box``: the reference's tight box per slice) exist only as upper-bound rows.
Networks that prompt SAM with a box (SAM-Mix) also get the box metrics of
:mod:`~sam_mix_monai.engines.box_quality` (``box_iou``, ``box_iou50``, ``box_centroid``).

Example:
    >>> ev = build_evaluator(net, loader, "cpu", protocols=("slice2d", "volume3d"))  # doctest: +SKIP
    >>> ev.run(); ev.state.metrics["slice2d_dice"]  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch
from monai.engines import SupervisedEvaluator
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys as Keys
from torch.utils.data import DataLoader

from sam_mix_monai.engines.batch import (
    POINT_RULES, network_size, predict_masks, prepare_slices, run_network, unwrap,
)
from sam_mix_monai.engines.box_quality import BoxQuality, scale_boxes
from sam_mix_monai.engines.protocols import PROTOCOLS, VolumeMetrics, classification_metrics, slice2d_metrics
from sam_mix_monai.networks.classifier import liver_probability
from sam_mix_monai.utils.precision import autocast, normalize_precision

__all__ = ["SAMMixEvaluator", "build_evaluator"]


class SAMMixEvaluator(SupervisedEvaluator):
    """Evaluator whose output carries what the protocols need.

    ``engine.state.output``: ``image``, ``label`` (ground-truth mask), ``pred`` (binary mask),
    ``liver_prob`` (``None`` without classifier), ``boxes`` (the box prompt on the label grid,
    inclusive pixels; ``None`` for networks without one), ``class_label``, ``case_id``, ``slice_index``, ``spacing``.

    Args:
        device: evaluation device.
        val_data_loader: :class:`~sam_mix_monai.data.SliceDataset` batches.
        network: the network (possibly DDP-wrapped).
        cls_threshold: liver probability below which a slice is emptied (``None``: the network's, else 0.5).
        point_prompt: test point of a point-prompted network, ``centre`` or ``oracle`` (upper bound).
        precision: ``fp32``, ``fp16`` or ``bf16`` autocast (:mod:`sam_mix_monai.utils.precision`).
        kwargs: further :class:`monai.engines.SupervisedEvaluator` arguments (``key_val_metric``,
            ``additional_metrics``, ``val_handlers``, ...).
    """

    def __init__(
        self,
        device: torch.device | str,
        val_data_loader: Iterable | DataLoader,
        network: torch.nn.Module,
        cls_threshold: float | None = None,
        precision: str = "fp32",
        point_prompt: str = "centre",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("decollate", False)
        super().__init__(device=device, val_data_loader=val_data_loader, network=network,
                         prepare_batch=prepare_slices, amp=False, **kwargs)
        thr = getattr(unwrap(network), "cls_threshold", 0.5) if cls_threshold is None else cls_threshold
        self.cls_threshold = float(thr)
        if point_prompt not in POINT_RULES:
            raise ValueError(f"point_prompt must be one of {POINT_RULES}, got {point_prompt!r}")
        self.point_prompt = point_prompt
        self.precision = normalize_precision(precision)

    def _iteration(self, engine: SupervisedEvaluator, batchdata: dict[str, Any]) -> dict[str, Any]:  # type: ignore[override]
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        image, target = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        mask = target["mask"]
        engine.network.eval()
        with torch.no_grad(), autocast(self.precision, engine.state.device):
            oracle = self.point_prompt == "oracle" or getattr(unwrap(engine.network), "box_prompted", False)
            reference = mask if oracle else None  # the oracle rows alone read it
            out = run_network(engine.network, image, reference, training=False, point=self.point_prompt)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        pred = predict_masks(out, self.cls_threshold)
        liver_prob = liver_probability(out["class_logits"]) if "class_logits" in out else None
        boxes = None
        if "boxes" in out:  # network-input pixels -> label grid
            boxes = scale_boxes(out["boxes"], mask.shape[-1] / float(network_size(engine.network) or mask.shape[-1]))
        engine.state.output = {
            Keys.IMAGE: image,
            Keys.LABEL: mask,
            Keys.PRED: pred,
            "liver_prob": liver_prob,
            "boxes": boxes,
            "class_label": target["label"],
            "case_id": list(batchdata["case_id"]),
            "slice_index": batchdata["slice_index"],
            "spacing": batchdata["spacing"],
        }
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


def build_evaluator(
    network: torch.nn.Module,
    loader: Iterable | DataLoader,
    device: torch.device | str,
    protocols: Sequence[str] = ("slice2d",),
    classification: bool | None = None,
    val_handlers: Sequence | None = None,
    precision: str = "fp32",
    cls_threshold: float | None = None,
    point_prompt: str = "centre",
) -> SAMMixEvaluator:
    """An evaluator with the metrics of the chosen protocols.

    The key metric (best-checkpoint selection, early stopping) is ``slice2d_dice`` when ``slice2d``
    is evaluated; ``volume3d_*`` come from a handler and are in ``state.metrics`` after a run.

    Args:
        network: the network.
        loader: evaluation batches (whole cases per rank for ``volume3d``).
        device: device.
        protocols: ``slice2d`` and/or ``volume3d``.
        classification: add accuracy / F1 / AUC and the box metrics (default: when the network has a classifier).
        val_handlers: further handlers (e.g. a best-checkpoint saver).
        precision: autocast mode.
        cls_threshold: liver-free gate threshold (``None``: the network's, else 0.5); the
            classification metrics use the same one.
        point_prompt: test point of a point-prompted network (``centre``; ``oracle``: upper bound).

    Returns:
        The evaluator; run it with ``.run()``, read ``.state.metrics``.
    """
    unknown = set(protocols) - set(PROTOCOLS)
    if unknown:
        raise ValueError(f"unknown protocol(s) {sorted(unknown)}; choose from {PROTOCOLS}")
    if classification is None:
        classification = hasattr(unwrap(network), "classifier")
    if cls_threshold is None:  # one threshold for the gate and the classification metrics
        cls_threshold = float(getattr(unwrap(network), "cls_threshold", 0.5))
    metrics: dict[str, Any] = {}
    if "slice2d" in protocols:
        metrics.update(slice2d_metrics())
    if classification:
        metrics.update(classification_metrics(cls_threshold))
        metrics["box"] = BoxQuality()
    handlers = list(val_handlers or [])
    if "volume3d" in protocols:
        handlers.insert(0, VolumeMetrics())
    key = {k: metrics.pop(k) for k in list(metrics)[:1]} or None  # slice2d_dice when evaluated
    return SAMMixEvaluator(
        device=device, val_data_loader=loader, network=network, cls_threshold=cls_threshold, precision=precision,
        point_prompt=point_prompt,
        key_val_metric=key, additional_metrics=metrics or None, val_handlers=handlers or None,
    )
