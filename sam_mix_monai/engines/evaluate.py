"""Evaluating a network or a checkpoint on a slice store, in one or both protocols.

A checkpoint written by a training run carries ``config.model`` (``ModelConfig.model_dump()``), so
:func:`evaluate_checkpoint` needs nothing but the checkpoint and the data.

Example:
    >>> res = evaluate_checkpoint("runs/demo/best.pt", "data/phantom/phantom_b.h5", ["slice2d"], split=None)  # doctest: +SKIP
    >>> res["metrics"]["slice2d_dice"]  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Sequence

import torch
from pydantic import ValidationError
from torch import nn

from sam_mix_monai.data import SliceDataset
from sam_mix_monai.engines.distributed import rank, resolve_device, world_size
from sam_mix_monai.engines.evaluator import build_evaluator
from sam_mix_monai.engines.loaders import evaluation_loader
from sam_mix_monai.networks.checkpoint import safe_torch_load
from sam_mix_monai.networks.registry import ModelConfig, build_model
from sam_mix_monai.utils.errors import InputError, PathLike

__all__ = ["load_network", "evaluate_dataset", "evaluate_checkpoint", "format_results"]


def read_checkpoint(path: PathLike) -> dict[str, Any]:
    """Load a training checkpoint safely (``weights_only=True``), with one-line errors."""
    p = Path(path)
    ckpt = safe_torch_load(p)
    if not isinstance(ckpt, dict) or "network" not in ckpt:
        raise InputError(p, "not a training checkpoint of this project (no 'network' entry)")
    if not isinstance(ckpt.get("config"), dict) or "model" not in ckpt["config"]:
        raise InputError(p, "checkpoint carries no model configuration ('config.model')")
    return ckpt


def load_network(path: PathLike, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network of a checkpoint from its stored model config and load its weights.

    Args:
        path: ``best.pt`` / ``last.pt`` of a run.
        device: device to put it on.

    Returns:
        ``(network in eval mode, run record)``.
    """
    ckpt = read_checkpoint(path)
    record = ckpt["config"]
    try:
        model_cfg = ModelConfig(**record["model"])
    except ValidationError as e:
        raise InputError(path, f"bad model configuration in checkpoint: {e.errors()[0]['msg']}") from None
    net = build_model(model_cfg, load_pretrained=False)
    try:
        net.load_state_dict(ckpt["network"])
    except RuntimeError as e:
        raise InputError(path, f"weights do not match the stored model configuration ({str(e).splitlines()[0]})") from None
    return net.to(device).eval(), record


def evaluate_dataset(
    network: nn.Module,
    path: PathLike,
    split: str | None,
    protocols: Sequence[str],
    device: torch.device | str,
    batch_size: int = 16,
    num_workers: int = 0,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Evaluate a network on one split of a slice store (all ranks take part when distributed).

    Returns:
        ``{"data", "split", "slices", "liver_slices", "cases", "metrics": {...}, "volume3d_cases": [...]}``.
    """
    ds = SliceDataset(path, split=split)
    if len(ds) == 0:
        raise InputError(path, f"split {split!r} holds no slices")
    loader = evaluation_loader(path, split, batch_size, rank(), world_size(), num_workers)
    evaluator = build_evaluator(network, loader, device, protocols, precision=precision)
    evaluator.logger.setLevel(logging.WARNING)
    evaluator.run()
    metrics = {k: float(v) for k, v in evaluator.state.metrics.items() if isinstance(v, (int, float))}
    labels = ds.table.labels[ds.rows]
    return {
        "data": str(path),
        "split": split,
        "protocols": list(protocols),
        "slices": int(len(ds)),
        "liver_slices": int((labels > 0).sum()),
        "cases": int(len(set(ds.table.case_ids[ds.rows].tolist()))),
        "metrics": metrics,
        "volume3d_cases": evaluator.state.metric_details.get("volume3d", []),
    }


def evaluate_checkpoint(
    checkpoint: PathLike,
    data: PathLike,
    protocols: Sequence[str] = ("slice2d",),
    split: str | None = "test",
    device: str = "auto",
    batch_size: int = 16,
) -> dict[str, Any]:
    """Evaluate a training checkpoint on a slice store (one process).

    Args:
        checkpoint: checkpoint file.
        data: HDF5 slice store.
        protocols: ``slice2d`` and/or ``volume3d``.
        split: split (``None``: every slice).
        device: ``auto``, ``cpu`` or ``cuda``.
        batch_size: slices per batch.

    Returns:
        The result of :func:`evaluate_dataset`, plus ``checkpoint`` and ``model``.
    """
    dev = resolve_device(device)
    net, record = load_network(checkpoint, dev)
    res = evaluate_dataset(net, data, split, protocols, dev, batch_size)
    res.update(checkpoint=str(checkpoint), model=record["model"])
    return res


def _fmt(v: Any, digits: int = 3) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def format_results(results: dict[str, dict[str, Any]]) -> str:
    """A text table: one row per evaluated data set."""
    head = f"{'data set':<22} {'slices':>6} {'liver':>6} {'cases':>5}  {'2D Dice':>7} {'2D HD px':>8}  {'3D Dice':>7} {'HD95 mm':>7}  {'acc':>5} {'F1':>5} {'AUC':>5}"
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        m = r["metrics"]
        lines.append(
            f"{name:<22} {r['slices']:>6} {r['liver_slices']:>6} {r['cases']:>5}  {_fmt(m.get('slice2d_dice')):>7} "
            f"{_fmt(m.get('slice2d_hd'), 2):>8}  {_fmt(m.get('volume3d_dice')):>7} {_fmt(m.get('volume3d_hd95'), 2):>7}  "
            f"{_fmt(m.get('cls_accuracy')):>5} {_fmt(m.get('cls_f1')):>5} {_fmt(m.get('cls_auc')):>5}"
        )
    return "\n".join(lines)
