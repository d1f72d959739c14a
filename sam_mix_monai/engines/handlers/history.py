"""Run history: per-epoch losses and validation metrics, written to ``metrics.json`` and a PNG.

The handler is checkpointable (``state_dict``), so a resumed run continues the same history. Only
rank 0 writes; the loss terms are epoch means averaged over ranks, the validation metrics are
the evaluator's (already reduced over ranks).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events

from sam_mix_monai.engines.handlers.curves import plot_curves
from sam_mix_monai.utils.atomic import atomic_output
from sam_mix_monai.utils.errors import PathLike

__all__ = ["MetricsHistory", "METRICS_FILE", "CURVES_FILE", "json_safe"]

METRICS_FILE = "metrics.json"
CURVES_FILE = "curves.png"


def json_safe(v: Any) -> Any:
    """JSON-safe value (``nan`` / ``inf`` become ``None``)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    return v


class MetricsHistory:
    """Records the run and writes ``<run_dir>/metrics.json`` and ``<run_dir>/curves.png``.

    Args:
        run_dir: run directory.
        validator: the validation evaluator (its metrics are recorded after each validation).
        optimizer: to record the learning rate.
        title: title of the curves figure.
    """

    def __init__(self, run_dir: PathLike, validator: Engine | None = None, optimizer: Any = None, title: str = "") -> None:
        self.run_dir = Path(run_dir)
        self.validator = validator
        self.optimizer = optimizer
        self.title = title
        self.train: list[dict[str, Any]] = []
        self.val: list[dict[str, Any]] = []
        self.results: dict[str, Any] = {}
        self.stopped = False  # early stopping ended the training
        self._sums: dict[str, float] = {}
        self._count = 0
        self._t0 = 0.0
        self._trainer: Engine | None = None

    def attach(self, trainer: Engine) -> None:
        """Attach to the trainer (and to the validator given at construction)."""
        self._trainer = trainer
        trainer.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        trainer.add_event_handler(Events.COMPLETED, lambda _: self.write())
        if self.validator is not None:
            self.validator.add_event_handler(Events.EPOCH_COMPLETED, self._validated)

    def _epoch_started(self, engine: Engine) -> None:
        self._sums, self._count, self._t0 = {}, 0, time.perf_counter()

    def _iteration_completed(self, engine: Engine) -> None:
        out = engine.state.output
        if isinstance(out, dict):
            for k, v in out.items():
                if isinstance(v, (int, float)):
                    self._sums[k] = self._sums.get(k, 0.0) + float(v)
            self._count += 1

    def _epoch_means(self) -> dict[str, float]:
        """Epoch means of the output values, averaged over ranks (each rank's mean counts equally)."""
        means = {k: v / max(self._count, 1) for k, v in self._sums.items()}
        if idist.get_world_size() <= 1:
            return means
        gathered = idist.all_gather("|".join(sorted(means)))  # a term may be absent on one rank
        keys = sorted({k for joined in gathered for k in joined.split("|") if k})
        vals = torch.tensor([[means.get(k, 0.0), float(k in means)] for k in keys], dtype=torch.float64)
        vals = idist.all_reduce(vals)
        return {k: float(v / n) for k, (v, n) in zip(keys, vals.tolist()) if n > 0}

    def _epoch_completed(self, engine: Engine) -> None:
        rec: dict[str, Any] = {"epoch": engine.state.epoch, "iteration": engine.state.iteration}
        if self.optimizer is not None:
            rec["lr"] = float(self.optimizer.param_groups[0]["lr"])
        rec.update(self._epoch_means())
        rec["seconds"] = round(time.perf_counter() - self._t0, 3)
        self.train.append(rec)
        self.write()

    def _validated(self, validator: Engine) -> None:
        epoch = self._trainer.state.epoch if self._trainer is not None else len(self.val) + 1
        rec = {"epoch": epoch}
        rec.update({k: float(v) for k, v in validator.state.metrics.items() if isinstance(v, (int, float))})
        self.val.append(rec)

    def set_result(self, name: str, metrics: dict[str, Any]) -> None:
        """Add a final result (e.g. test metrics of one data set) and rewrite the files."""
        self.results[name] = metrics
        self.write()

    def summary(self) -> dict[str, Any]:
        """Everything recorded, JSON-safe."""
        best = max(self.val, key=lambda r: r.get("slice2d_dice", -1.0), default=None)
        return json_safe({"train": self.train, "val": self.val, "best_val": best, "stopped_early": self.stopped,
                       "results": self.results})

    def write(self) -> None:
        """Write ``metrics.json`` and ``curves.png`` (rank 0 only)."""
        if idist.get_rank() != 0:
            return
        with atomic_output(self.run_dir / METRICS_FILE) as tmp:
            tmp.write_text(json.dumps(self.summary(), indent=1), encoding="utf-8")
        if self.train or self.val:
            plot_curves(self.train, self.val, self.run_dir / CURVES_FILE, self.title)

    def state_dict(self) -> dict[str, Any]:
        """History so far (for resumable checkpoints)."""
        return {"train": json.dumps(self.train), "val": json.dumps(self.val), "stopped": bool(self.stopped)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue a saved history."""
        self.train = json.loads(state["train"])
        self.val = json.loads(state["val"])
        self.stopped = bool(state.get("stopped", False))
