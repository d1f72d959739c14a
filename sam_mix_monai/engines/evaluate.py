"""Evaluating a network or a checkpoint on a slice store, in one or both protocols.

A checkpoint written by a training run carries ``config.model`` (``ModelConfig.model_dump()``), so
:func:`evaluate_checkpoint` needs nothing but the checkpoint and the data (loaded by
:func:`sam_mix_monai.networks.run_checkpoint.load_checkpoint`).

Example:
    >>> res = evaluate_checkpoint("runs/demo/best.pt", "data/phantom/phantom_b.h5", ["slice2d"], split=None)  # doctest: +SKIP
    >>> res["metrics"]["slice2d_dice"]  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import torch
from torch import nn

from sam_mix_monai.data import SliceDataset
from sam_mix_monai.data.dataset import SliceTable
from sam_mix_monai.engines.distributed import rank, resolve_device, world_size
from sam_mix_monai.engines.evaluator import build_evaluator
from sam_mix_monai.engines.loaders import evaluation_loader
from sam_mix_monai.networks.run_checkpoint import load_checkpoint
from sam_mix_monai.utils.errors import InputError, PathLike

__all__ = ["ZERO_SHOT", "evaluate_zero_shot", "evaluate_dataset", "evaluate_checkpoint", "format_results",
           "split_summary"]


def evaluate_dataset(
    network: nn.Module,
    path: PathLike,
    split: str | None,
    protocols: Sequence[str],
    device: torch.device | str,
    batch_size: int = 16,
    num_workers: int = 0,
    precision: str = "fp32",
    point_prompt: str = "centre",
) -> dict[str, Any]:
    """Evaluate a network on one split of a slice store (all ranks take part when distributed).

    ``point_prompt``: test point of a point-prompted network (``oracle``: the upper-bound row only).

    ``volume3d`` is refused on a store without whole volumes (:meth:`SliceTable.volume3d_refusal`): left out,
    with the reason under ``"refused"``.

    Returns:
        ``{"data", "split", "slices", "liver_slices", "cases", "metrics": {...}, "volume3d_cases": [...],
        "refused": {protocol: reason}}``.
    """
    summary = split_summary(path, split)
    refused = {}
    if "volume3d" in protocols and (reason := SliceTable(path).volume3d_refusal()) is not None:
        refused["volume3d"] = reason
        protocols = [p for p in protocols if p != "volume3d"]
        logging.getLogger(__name__).warning("%s: volume3d refused: %s", path, reason)
    loader = evaluation_loader(path, split, batch_size, rank(), world_size(), num_workers)
    evaluator = build_evaluator(network, loader, device, protocols, precision=precision, point_prompt=point_prompt)
    evaluator.logger.setLevel(logging.WARNING)
    evaluator.run()
    metrics = {k: float(v) for k, v in evaluator.state.metrics.items() if isinstance(v, (int, float))}
    return {
        "data": summary.pop("data"),
        "split": summary.pop("split"),
        "protocols": list(protocols),
        **summary,  # slices, liver_slices, cases
        "metrics": metrics,
        "volume3d_cases": evaluator.state.metric_details.get("volume3d", []),
        "refused": refused,
    }


def split_summary(path: PathLike, split: str | None) -> dict[str, Any]:
    """``{"data", "split", "slices", "liver_slices", "cases"}`` of one split of a slice store.

    Raises:
        InputError: the split holds no slices (or the store cannot be read).
    """
    ds = SliceDataset(path, split=split)
    if len(ds) == 0:
        raise InputError(path, f"split {split!r} holds no slices")
    return {
        "data": str(path),
        "split": split,
        "slices": int(len(ds)),
        "liver_slices": int((ds.table.labels[ds.rows] > 0).sum()),
        "cases": int(len(set(ds.table.case_ids[ds.rows].tolist()))),
    }


def evaluate_checkpoint(
    checkpoint: PathLike,
    data: PathLike,
    protocols: Sequence[str] = ("slice2d",),
    split: str | None = "test",
    device: str = "auto",
    batch_size: int = 16,
    prompt_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate a training checkpoint on a slice store (one process).

    Args:
        checkpoint: checkpoint file.
        data: HDF5 slice store.
        protocols: ``slice2d`` and/or ``volume3d``.
        split: split (``None``: every slice).
        device: ``auto``, ``cpu`` or ``cuda``.
        batch_size: slices per batch.
        prompt_overrides: prompt switches to change (:data:`~sam_mix_monai.networks.registry.PROMPT_KEYS`).

    Returns:
        The result of :func:`evaluate_dataset`, plus ``checkpoint`` and ``model``.
    """
    dev = resolve_device(device)
    net, cfg, _ = load_checkpoint(checkpoint, dev, prompt_overrides=prompt_overrides)
    res = evaluate_dataset(net, data, split, protocols, dev, batch_size)
    res.update(checkpoint=str(checkpoint), model=cfg.model_dump(mode="json"))
    return res


#: The zero-shot rows ``sam-mix evaluate --zero-shot`` runs: the packaged LiteMedSAM with no training.
ZERO_SHOT = {
    "sam_pp_0": ("SAM-PP-0", "sam_pp"),  # one point per slice, the image centre (no reference read)
    "oracle_box": ("SAM, oracle box", "sam_box"),  # the reference's tight box per slice (upper bound)
}


def evaluate_zero_shot(
    row: str,
    data: PathLike,
    protocols: Sequence[str] = ("slice2d",),
    split: str | None = "test",
    device: str = "auto",
    batch_size: int = 16,
    model: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate a pretrained SAM with no segmentation training (one process): a key of :data:`ZERO_SHOT`.

    Args:
        row: ``sam_pp_0`` (SAM-PP-0: centre point) or ``oracle_box`` ("SAM, oracle box").
        data, protocols, split, device, batch_size: as :func:`evaluate_checkpoint`.
        model: further :class:`~sam_mix_monai.networks.registry.ModelConfig` keys (default: the packaged
            LiteMedSAM, ``size: lite_medsam``; e.g. ``size: vit_b`` with a ``checkpoint``).

    Returns:
        The result of :func:`evaluate_dataset`, plus ``row`` (its title) and ``model``.
    """
    from sam_mix_monai.networks.registry import ModelConfig, build_model

    if row not in ZERO_SHOT:
        raise InputError("--zero-shot", f"unknown row {row!r} (one of {', '.join(ZERO_SHOT)})")
    title, name = ZERO_SHOT[row]
    try:
        cfg = ModelConfig(**{"encoder_mode": "frozen", **(model or {}), "name": name})
    except ValueError as e:
        raise InputError("--set", str(e).splitlines()[0]) from None
    dev = resolve_device(device)
    net = build_model(cfg).to(dev).eval()
    res = evaluate_dataset(net, data, split, protocols, dev, batch_size)
    res.update(row=title, model=cfg.model_dump(mode="json"))
    return res


def _fmt(v: Any, digits: int = 3) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def format_results(results: dict[str, dict[str, Any]]) -> str:
    """A text table: one row per evaluated data set (``boxIoU`` / ``ctr``: box-prompt IoU and centroid share)."""
    head = (f"{'data set':<22} {'slices':>6} {'liver':>6} {'cases':>5}  {'2D Dice':>7} {'2D HD px':>8} {'HD pred':>7} "
            f"{'missed':>6}  {'3D Dice':>7} {'HD95 mm':>7}  {'acc':>5} {'F1':>5} {'AUC':>5}  {'boxIoU':>6} {'ctr':>5}")
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        m = r["metrics"]
        lines.append(
            f"{name:<22} {r['slices']:>6} {r['liver_slices']:>6} {r['cases']:>5}  {_fmt(m.get('slice2d_dice')):>7} "
            f"{_fmt(m.get('slice2d_hd'), 2):>8} {_fmt(m.get('slice2d_hd_predicted'), 2):>7} "
            f"{_fmt(m.get('slice2d_missed'), 0):>6}  {_fmt(m.get('volume3d_dice')):>7} {_fmt(m.get('volume3d_hd95'), 2):>7}  "
            f"{_fmt(m.get('cls_accuracy')):>5} {_fmt(m.get('cls_f1')):>5} {_fmt(m.get('cls_auc')):>5}  "
            f"{_fmt(m.get('box_iou')):>6} {_fmt(m.get('box_centroid')):>5}"
        )
    for name, r in results.items():
        mode = r.get("volume3d_prompt_mode")
        if mode and "volume3d_dice" in r["metrics"]:
            how = "the sam-mix infer volume path" if mode == "volume" else "per-slice predictions stacked"
            lines.append(f"{name}: volume3d scored in {mode} prompt mode ({how})")
        for protocol, reason in (r.get("refused") or {}).items():
            lines.append(f"{name}: {protocol} refused: {reason}")
    return "\n".join(lines)
