"""The training schedule shared by ``sam-mix train`` and the bundle's ``train.yaml``: LR and early stopping.

* :func:`build_scheduler`: a per-epoch torch LR scheduler from a :class:`~.config.TrainConfig`:
  ``warmup_epochs`` of linear warm-up (``LinearLR``), then ``cosine`` (``CosineAnnealingLR`` down to
  ``min_lr_ratio * lr``), ``poly`` (``PolynomialLR``, power 0.9, down to 0), ``step``
  (``StepLR``) or ``constant`` (``ConstantLR`` with factor 1), chained by ``SequentialLR``;
* :func:`early_stopping`: MONAI's ``EarlyStopHandler`` on the validation Dice (:func:`val_score`),
  attached to the validator.

Example:
    >>> import torch
    >>> from sam_mix_monai.engines.config import TrainConfig
    >>> opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    >>> sched = build_scheduler(opt, TrainConfig(epochs=4, warmup_epochs=1, min_lr_ratio=0.0))
    >>> lrs = []
    >>> for _ in range(4):
    ...     lrs.append(round(opt.param_groups[0]["lr"], 3)); opt.step(); sched.step()
    >>> lrs
    [0.5, 1.0, 0.75, 0.25]
"""

from __future__ import annotations

from typing import Any

from monai.handlers import EarlyStopHandler
from torch.optim import Optimizer
from torch.optim import lr_scheduler as lrs

from sam_mix_monai.engines.config import TrainConfig

__all__ = ["VAL_KEY", "build_scheduler", "early_stopping", "val_score"]

#: The validation metric that selects the best checkpoint and drives early stopping.
VAL_KEY = "slice2d_dice"


def build_scheduler(optimizer: Optimizer, cfg: TrainConfig) -> lrs.LRScheduler:
    """The per-epoch LR scheduler of a run (call ``step()`` once per epoch).

    Args:
        optimizer: the optimiser (its ``lr`` is the peak LR).
        cfg: ``scheduler``, ``epochs``, ``warmup_epochs``, ``min_lr_ratio``, ``step_epochs``, ``step_gamma``.

    Returns:
        A torch scheduler (``SequentialLR`` when there is a warm-up).
    """
    w = cfg.warmup_epochs
    span = max(1, cfg.epochs - w)
    base = [g["lr"] for g in optimizer.param_groups]
    if cfg.scheduler == "cosine":
        main: lrs.LRScheduler = lrs.CosineAnnealingLR(optimizer, T_max=span, eta_min=cfg.min_lr_ratio * min(base))
    elif cfg.scheduler == "poly":
        main = lrs.PolynomialLR(optimizer, total_iters=span, power=0.9)
    elif cfg.scheduler == "step":
        main = lrs.StepLR(optimizer, step_size=cfg.step_epochs, gamma=cfg.step_gamma)
    else:
        main = lrs.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if w == 0:
        return main
    warm = lrs.LinearLR(optimizer, start_factor=1.0 / (w + 1), end_factor=1.0, total_iters=w)
    return lrs.SequentialLR(optimizer, [warm, main], milestones=[w])


def val_score(engine: Any) -> float:
    """The validator's :data:`VAL_KEY` (higher is better)."""
    return float(engine.state.metrics[VAL_KEY])


def early_stopping(patience: int, trainer: Any = None) -> EarlyStopHandler:
    """Stop training after ``patience`` validations without a better validation Dice.

    Attach to the validator (``handler.attach(validator)``, or list it in its ``val_handlers``);
    without ``trainer``, call ``set_trainer`` before training (the bundle does, in ``initialize``).
    """
    return EarlyStopHandler(patience=int(patience), score_function=val_score, trainer=trainer, epoch_level=True)

