"""The torch LR schedule equals the closed forms it replaced; early stopping reads the validation Dice."""

from __future__ import annotations

import math

import pytest
import torch
from ignite.engine import Engine, Events

from sam_mix_monai.engines.config import TrainConfig
from sam_mix_monai.engines.schedule import build_scheduler, early_stopping


def _closed_form(cfg: TrainConfig, epoch: int) -> float:
    """The former hand-written per-epoch factor (warm-up, then cosine / step / constant)."""
    if epoch < cfg.warmup_epochs:
        return (epoch + 1) / (cfg.warmup_epochs + 1)
    t = min(1.0, (epoch - cfg.warmup_epochs) / max(1, cfg.epochs - cfg.warmup_epochs))
    lo = cfg.min_lr_ratio
    if cfg.scheduler == "cosine":
        return lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * t))
    if cfg.scheduler == "step":
        return cfg.step_gamma ** ((epoch - cfg.warmup_epochs) // cfg.step_epochs)
    return 1.0


def _lrs(cfg: TrainConfig) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    sched, out = build_scheduler(opt, cfg), []
    for _ in range(cfg.epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("kind, warmup", [("cosine", 0), ("cosine", 3), ("step", 2), ("constant", 1)])
def test_torch_schedule_matches_the_closed_form(kind, warmup):
    cfg = TrainConfig(epochs=12, scheduler=kind, warmup_epochs=warmup, step_epochs=4, step_gamma=0.5, min_lr_ratio=0.05)
    assert _lrs(cfg) == pytest.approx([0.01 * _closed_form(cfg, e) for e in range(cfg.epochs)], rel=1e-6)


def test_poly_decays_monotonically_to_zero():
    lrs = _lrs(TrainConfig(epochs=10, scheduler="poly"))
    assert lrs[0] == pytest.approx(0.01) and all(a > b for a, b in zip(lrs, lrs[1:])) and lrs[-1] < 0.002


def test_early_stopping_stops_after_patience_validations_without_gain():
    trainer, validator = Engine(lambda e, b: None), Engine(lambda e, b: None)
    scores = iter([0.5, 0.6, 0.6, 0.55])
    validator.add_event_handler(Events.EPOCH_STARTED, lambda e: setattr(e.state, "metrics", {"slice2d_dice": next(scores)}))
    early = early_stopping(2, trainer)
    early.attach(validator)
    for k in range(4):
        validator.run([0], max_epochs=1)
        assert trainer.should_terminate == (k == 3)
