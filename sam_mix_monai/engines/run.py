"""A training run built from an :class:`~sam_mix_monai.engines.config.ExperimentConfig`.

:func:`train` is the whole job (what ``sam-mix train`` calls): prepare data and run directory,
launch one or several processes (:mod:`.distributed`), and in each :func:`build_training` then
:meth:`TrainingJob.run` (training with validation, checkpoints and logs, then the test evaluation
of the best checkpoint in-domain and cross-domain).

Example:
    >>> cfg = load_config("configs/phantom_demo.yaml", ["train.epochs=1"])  # doctest: +SKIP
    >>> run_dir = train(cfg, "configs/phantom_demo.yaml")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Events
from ignite.handlers import ProgressBar
from monai.handlers import CheckpointLoader, LrScheduleHandler, StatsHandler, TensorBoardStatsHandler, ValidationHandler
from torch import nn

from sam_mix_monai import __version__
from sam_mix_monai.data import SliceDataset
from sam_mix_monai.data.dataset import SliceTable
from sam_mix_monai.engines.augment import WeakStrongAugment
from sam_mix_monai.engines.config import ExperimentConfig, validate_config
from sam_mix_monai.engines.distributed import barrier, is_main, launch, rank, resolve_device, world_size, wrap_model
from sam_mix_monai.engines.evaluate import evaluate_dataset, format_results
from sam_mix_monai.engines.evaluator import SAMMixEvaluator, build_evaluator
from sam_mix_monai.engines.handlers import BEST, LAST, AtomicSaver, MetricsHistory, RNGState, RunRecord, best_checkpoint, last_checkpoint
from sam_mix_monai.engines.loaders import evaluation_loader, iterations_per_epoch, training_stream
from sam_mix_monai.engines.losses import SAMMixLoss
from sam_mix_monai.engines.phantom_data import ensure_phantom_data
from sam_mix_monai.engines.rundir import check_data, git_commit, prepare_run_dir
from sam_mix_monai.engines.schedule import VAL_KEY, build_scheduler, early_stopping
from sam_mix_monai.engines.trainer import SAMMixTrainer
from sam_mix_monai.engines.run_model import build_run_model, evaluation_sets, labelled_dataset
from sam_mix_monai.utils.errors import InputError, PathLike
from sam_mix_monai.utils.precision import resolve_precision

__all__ = ["TrainingJob", "build_training", "prepare", "train"]

logger = logging.getLogger(__name__)
#: Name of the upper-bound evaluation of a point-prompted network (SAM-PP) with the oracle point.
ORACLE_POINT = "oracle point"


def _sync_buffers(model: nn.Module) -> None:
    """Give every rank rank 0's buffers (batch-norm statistics) before evaluating."""
    if idist.get_world_size() > 1:
        for b in model.buffers():
            b.data.copy_(idist.broadcast(b.data, src=0))


@dataclass
class TrainingJob:
    """Everything a run is made of (each rank builds its own)."""

    cfg: ExperimentConfig
    run_dir: Path
    device: torch.device
    model: nn.Module
    network: nn.Module
    trainer: SAMMixTrainer | None = None
    validator: SAMMixEvaluator | None = None
    history: MetricsHistory | None = None
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any = None
    to_save: dict[str, Any] = field(default_factory=dict)
    record: RunRecord | None = None
    precision: str = "fp32"  # resolved for the device: training, validation and the final evaluation share it

    def run(self) -> dict[str, Any]:
        """Train (unless ``train.epochs`` is 0), then evaluate the best checkpoint on the test sets."""
        t0 = time.perf_counter()
        if self.trainer is not None:
            try:
                self.trainer.run()
            except InputError as e:
                if e.path is not None:
                    raise
                raise InputError(self.run_dir, f"training stopped: {e.problem}; {self._kept()}") from e
        elif self.record is not None:  # nothing to train (e.g. SAM-PP-0): the network as it is is the run's model
            AtomicSaver(self.run_dir, BEST)({"network": self.model.state_dict(), "config": self.record.state_dict()}, BEST)
        train_seconds = time.perf_counter() - t0
        results = self.final_evaluation()
        if self.history is not None:
            self.history.set_result("timing", {"train_seconds": round(train_seconds, 1),
                                               "total_seconds": round(time.perf_counter() - t0, 1)})
        return results

    def _kept(self) -> str:
        last = self.run_dir / LAST
        done = self.trainer.state.epoch - 1 if self.trainer is not None else 0
        if last.is_file() and done > 0:
            return f"the last good checkpoint is kept: {last} (epoch {done})"
        return "no checkpoint was written (it failed in the first epoch)"

    def final_evaluation(self) -> dict[str, Any]:
        """Evaluate the best weights (by validation Dice; the last ones without validation)."""
        barrier()
        best = self.run_dir / BEST
        if best.is_file():
            state = torch.load(best, map_location=self.device, weights_only=True)
            self.model.load_state_dict(state["network"])
        self.model.eval()
        ev = self.cfg.evaluate
        sets = evaluation_sets(self.cfg)
        runs = [("", "centre")]
        if getattr(self.model, "point_prompted", False):  # SAM-PP: the centre point; the oracle point as a named upper bound
            runs.append((f" ({ORACLE_POINT})", "oracle"))
        results = {}
        for suffix, point in runs:
            for name, path, split in sets:
                results[name + suffix] = evaluate_dataset(self.model, path, split, ev.protocols, self.device, ev.batch_size,
                                                          self.cfg.data.num_workers, self.precision, point)
                if self.history is not None:
                    self.history.set_result(name + suffix, results[name + suffix])
        if is_main():
            logger.info("results of %s (%s):\n%s", self.cfg.name, best if best.is_file() else "last weights",
                        format_results(results))
        return results


def _trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def _param_groups(model: nn.Module, sam_lr: float | None) -> list[dict[str, Any]]:
    """One group of every trainable parameter, or (``sam_lr``) the SAM's prompt encoder and mask decoder apart."""
    sam = getattr(model, "sam", None)
    if sam_lr is None or sam is None:
        return [{"params": _trainable(model)}]
    own = {id(p) for m in (sam.prompt_encoder, sam.mask_decoder) for p in m.parameters()}
    rest = [p for p in _trainable(model) if id(p) not in own]
    tuned = [p for p in _trainable(model) if id(p) in own]
    return [{"params": rest}, {"params": tuned, "lr": float(sam_lr)}]


def build_training(cfg: ExperimentConfig, run_dir: PathLike, resume: bool = False) -> TrainingJob:
    """Build data streams, network, optimiser, scheduler, engines and handlers of this rank.

    Args:
        cfg: the experiment.
        run_dir: run directory (prepared by :func:`prepare`).
        resume: continue from ``run_dir/last.pt`` when it exists.

    Returns:
        The job; call :meth:`TrainingJob.run`.
    """
    tc, run_dir = cfg.train, Path(run_dir)
    r, w = rank(), world_size()
    device = resolve_device(tc.device)
    precision = resolve_precision(tc.precision, device)
    model, cache = build_run_model(cfg, device)
    if cache is not None:  # the frozen encoder runs once per distinct slice
        if cfg.augment.labelled and (cfg.loss.seg_dice > 0 or cfg.loss.seg_bce > 0 or cfg.loss.iou > 0):
            logger.warning("encoder_mode frozen with augment.labelled: augmented labelled views miss the embedding cache")
    record = RunRecord(cfg.model.model_dump(mode="json"), cfg.model_dump(mode="json"), __version__, git_commit(),
                       slicing=SliceTable(cfg.data.path).slicing)
    job = TrainingJob(cfg, run_dir, device, model.to(device), model, record=record, precision=precision)
    job.history = MetricsHistory(run_dir, title=cfg.name)
    if tc.epochs == 0:
        return job
    network = wrap_model(model, device, tc.sync_bn)
    job.network = network
    if tc.batch_size % w or cfg.unlabelled.batch_size % w:
        raise InputError(None, f"train.batch_size and unlabelled.batch_size must be divisible by the {w} processes")
    d = cfg.data
    n_empty = d.n_empty
    labelled = labelled_dataset(cfg)  # with data.extra_path, e.g. phantom slices beside one real patient
    unlabelled = None
    lc = cfg.loss
    useful = (hasattr(model, "classifier") and (lc.unlabelled_cls > 0 or lc.pseudo_cls > 0)) or lc.seg_consistency > 0
    if cfg.unlabelled.enabled and useful and d.n_labelled is not None and not getattr(model, "point_prompted", False):
        unlabelled = SliceDataset(d.path, d.train_split, d.n_labelled, "unlabelled", d.label_seed, d.withhold_label_fraction,
                                  n_empty=n_empty)
        unlabelled = unlabelled if len(unlabelled) > 0 else None
    length = tc.iterations_per_epoch or iterations_per_epoch(
        len(unlabelled) if unlabelled else 0, len(labelled), cfg.unlabelled.batch_size, tc.batch_size, unlabelled is not None)
    lab_stream = training_stream(labelled, tc.batch_size // w, length, tc.seed, r, w, d.num_workers)
    unl_stream = None if unlabelled is None else training_stream(
        unlabelled, cfg.unlabelled.batch_size // w, length, tc.seed + 1, r, w, d.num_workers)
    opt_cls = torch.optim.AdamW if tc.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_cls(_param_groups(model, tc.sam_lr), lr=tc.lr, weight_decay=tc.weight_decay)
    scheduler = build_scheduler(optimizer, tc)  # the same function the bundle's train.yaml names
    a = cfg.augment
    augment = WeakStrongAugment(a.flip_prob, a.shift, a.rotate_deg, a.scale, a.shear, a.strong_ops, a.magnitude, a.cutout)
    validator = None
    if d.val_split is not None and len(SliceDataset(d.path, split=d.val_split)) > 0:
        val_loader = evaluation_loader(d.path, d.val_split, cfg.evaluate.batch_size, r, w, d.num_workers)
        validator = build_evaluator(model, val_loader, device, ("slice2d",), precision=precision)
        validator.add_event_handler(Events.STARTED, lambda _: _sync_buffers(model))
    trainer = SAMMixTrainer(
        device=device, max_epochs=tc.epochs, train_data_loader=lab_stream, network=network, optimizer=optimizer,
        loss_function=SAMMixLoss(**cfg.loss.model_dump()), unlabelled_data_loader=unl_stream, augment=augment,
        augment_labelled=a.labelled, labelled_flip=a.labelled_flip, epoch_length=length, precision=precision,
        grad_clip=tc.grad_clip, seed=tc.seed, rank=r, world_size=w, one_classifier_batch=tc.one_classifier_batch,
    )
    for engine in (trainer, validator):  # Ignite's per-run chatter; epochs are logged by _log_epoch / StatsHandler
        if engine is not None:
            engine.logger.setLevel(logging.WARNING)
    job.trainer, job.validator, job.optimizer, job.scheduler = trainer, validator, optimizer, scheduler
    _attach_handlers(job, resume)
    return job


def _attach_handlers(job: TrainingJob, resume: bool) -> None:
    cfg, trainer, validator, run_dir = job.cfg, job.trainer, job.validator, job.run_dir
    tc, main = cfg.train, is_main()
    history = job.history
    history.validator, history.optimizer = validator, job.optimizer
    to_save = {"network": job.model, "optimizer": job.optimizer, "lr_scheduler": job.scheduler, "trainer": trainer,
               "grad_scaler": trainer.grad_scaler, "rng": RNGState(), "history": history, "config": job.record}
    best = None
    if validator is not None:
        ValidationHandler(interval=tc.val_interval, validator=validator, epoch_level=True).attach(trainer)
        best = best_checkpoint({"network": job.model, "config": job.record}, run_dir, lambda e: e.state.metrics[VAL_KEY])
        validator.add_event_handler(Events.EPOCH_COMPLETED, best)
        if tc.early_stopping_patience:
            early = early_stopping(tc.early_stopping_patience, trainer)  # the bundle's train.yaml names it too
            early.attach(validator)
            to_save["early_stopping"] = early._handler  # Ignite's EarlyStopping (its counter and best score)
    LrScheduleHandler(job.scheduler, print_lr=False, epoch_level=True).attach(trainer)
    history.attach(trainer)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, _log_epoch, history)
    if main:
        if validator is not None:
            StatsHandler(iteration_log=False, epoch_log=True, global_epoch_transform=lambda _: trainer.state.epoch,
                         name="sam_mix_monai.validation").attach(validator)
        if cfg.output.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
            TensorBoardStatsHandler(writer, iteration_log=True, epoch_log=False, output_transform=lambda o: o).attach(trainer)
            if validator is not None:
                TensorBoardStatsHandler(writer, iteration_log=False, epoch_log=True,
                                        global_epoch_transform=lambda _: trainer.state.epoch).attach(validator)
        if tc.progress:
            ProgressBar(persist=False).attach(trainer, output_transform=lambda o: {"loss": o["loss"]})
    trainer.add_event_handler(Events.EPOCH_COMPLETED, last_checkpoint(to_save, run_dir))  # last: after all the above
    job.to_save = to_save
    if resume and (run_dir / LAST).is_file():
        CheckpointLoader(str(run_dir / LAST), to_save, map_location=job.device).attach(trainer)
        if best is not None and (run_dir / BEST).is_file():
            best.load_state_dict(torch.load(run_dir / BEST, map_location="cpu", weights_only=True)["checkpointer"])
        trainer.add_event_handler(Events.STARTED, lambda e: e.terminate() if history.stopped else None)
        logger.info("resuming %s from %s", cfg.name, run_dir / LAST)


def _log_epoch(engine: Any, history: MetricsHistory) -> None:
    if engine.should_terminate:
        history.stopped = True
    if not is_main() or not history.train:
        return
    rec = history.train[-1]
    terms = ", ".join(f"{k} {v:.4f}" for k, v in rec.items() if k not in ("epoch", "iteration", "lr", "seconds", "loss"))
    val = history.val[-1] if history.val and history.val[-1]["epoch"] == rec["epoch"] else None
    vtxt = f" | val Dice {val[VAL_KEY]:.4f}" if val and VAL_KEY in val else ""
    logger.info("epoch %d/%d: loss %.4f (%s) lr %.2e, %.1f s%s", rec["epoch"], engine.state.max_epochs, rec["loss"], terms,
                rec.get("lr", float("nan")), rec["seconds"], vtxt)


def _worker(local_rank: int, cfg_dump: dict, run_dir: str, resume: bool) -> None:
    """One process of a run."""
    logging.basicConfig(level=logging.INFO if idist.get_rank() == 0 else logging.WARNING, format="%(message)s")
    if idist.get_rank() != 0:
        logging.getLogger().setLevel(logging.WARNING)
    cfg = validate_config(cfg_dump)
    log_file = None
    if is_main():
        log_file = logging.FileHandler(Path(run_dir) / "train.log")
        log_file.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
        logging.getLogger().addHandler(log_file)
    try:
        build_training(cfg, run_dir, resume).run()
    finally:
        if log_file is not None:
            logging.getLogger().removeHandler(log_file)
            log_file.close()


def prepare(cfg: ExperimentConfig, source: PathLike | None, resume: bool = False, nproc_per_node: int | None = None) -> Path:
    """Checks and preparation before processes start: phantom data, data checks, run directory.

    Under ``torchrun`` only rank 0 (``RANK``) writes; the others only check the config.
    """
    world = nproc_per_node or int(os.environ.get("WORLD_SIZE", "1"))
    if int(os.environ.get("RANK", "0")) != 0:
        return Path(cfg.output.dir)
    if cfg.phantom is not None and not Path(cfg.data.path).is_file():
        ensure_phantom_data(cfg.phantom, progress=cfg.train.progress)
    check_data(cfg, source)
    if cfg.train.batch_size % world or cfg.unlabelled.batch_size % world:
        raise InputError(source, f"train.batch_size ({cfg.train.batch_size}) and unlabelled.batch_size "
                                 f"({cfg.unlabelled.batch_size}) must be divisible by the number of processes ({world})")
    return prepare_run_dir(cfg, resume, world)


def train(cfg: ExperimentConfig, source: PathLike | None = None, resume: bool = False,
          nproc_per_node: int | None = None) -> Path:
    """Run a whole experiment (``sam-mix train``).

    Args:
        cfg: the validated experiment config.
        source: the config file (for error messages).
        resume: continue the run in ``cfg.output.dir``.
        nproc_per_node: spawn this many processes (``None``: one, or those ``torchrun`` started).

    Returns:
        The run directory (``metrics.json`` holds the results).
    """
    target = Path(cfg.output.dir)
    before = set(target.iterdir()) if target.is_dir() else None  # what a refused fresh run must leave
    run_dir = prepare(cfg, source, resume, nproc_per_node)
    try:
        launch(_worker, cfg.model_dump(mode="json"), str(run_dir), resume, nproc_per_node=nproc_per_node,
               device=cfg.train.device)
    except BaseException:
        if not resume and int(os.environ.get("RANK", "0")) == 0:
            remove_refused_run(run_dir, before)
        raise
    return run_dir


def remove_refused_run(run_dir: Path, before: set[Path] | None) -> None:
    """Undo a fresh run that stopped before writing any checkpoint (a refused ``model.checkpoint``, a
    failure in the first epoch): its ``config.yaml``, ``run.json``, ``train.log`` and the folder itself
    when the run created it. A run with a ``last.pt`` or ``best.pt`` is kept (its error names it)."""
    import shutil

    if any((run_dir / n).exists() for n in (LAST, BEST)):
        return
    for entry in list(run_dir.iterdir()) if run_dir.is_dir() else []:
        if before is None or entry not in before:
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
    if before is None:
        with contextlib.suppress(OSError):
            run_dir.rmdir()
