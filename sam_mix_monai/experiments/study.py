"""The comparison study (``sam-mix study``): train every cell of the grid, then tabulate and plot.

A study (:mod:`.study_config`) expands into cells, one ``sam-mix train`` run each (:mod:`.jobs`:
child processes, ``workers`` at a time, resumable). A cell whose run directory already holds
results is skipped, a partial one is continued, so an interrupted study picks up where it stopped.
Afterwards every finished cell is read back from its run directory and summarised into

* ``<out>/study.json``: per cell its state, flat metrics (``in/slice2d_dice``, ...) and timings,
  plus mean / sd / count per table row;
* ``<out>/study.md``: the paper-format tables (slice2d, volume3d, classifier), timings, missing and
  failed cells, and the paper's LiTS table for reference (:mod:`.study_report`);
* ``<out>/dice_vs_n.png``: slice2d Dice against N per model family, in- and cross-domain.

Aggregation needs no complete grid: missing cells are ``-`` in the tables.

Example:
    >>> study = load_study("configs/study_phantom.yaml", ["seeds=[0]"])  # doctest: +SKIP
    >>> report = run_study(study)  # doctest: +SKIP
    >>> report.failed  # doctest: +SKIP
    []
"""

from __future__ import annotations

import datetime
import fnmatch
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from sam_mix_monai import __version__
from sam_mix_monai.engines.config import ExperimentConfig
from sam_mix_monai.experiments.jobs import JobResult, TrainJob, job_state, read_results, run_training_jobs
from sam_mix_monai.experiments.plots import dice_vs_n_plot
from sam_mix_monai.experiments.study_config import Cell, StudyConfig, expand_cells, validate_cells
from sam_mix_monai.experiments.study_report import render_report
from sam_mix_monai.experiments.table import DOMAINS, flatten_results, mean_sd, result_variants
from sam_mix_monai.utils.atomic import atomic_output
from sam_mix_monai.utils.errors import InputError

__all__ = ["CellOutcome", "StudyReport", "aggregate", "cell_states", "config_differences", "run_study", "select_cells"]

logger = logging.getLogger(__name__)

STUDY_JSON, STUDY_MD, STUDY_PNG = "study.json", "study.md", "dice_vs_n.png"
# Keys that may differ between a cell's stored config and the study's without changing the experiment.
_IGNORED = ("output", "train.num_threads", "train.progress", "data.num_workers")


@dataclass
class CellOutcome:
    """What is known about one cell after a study invocation.

    Attributes:
        cell: the cell.
        state: ``done`` (results on disk), ``partial`` (``last.pt`` only), ``new`` or ``failed`` (ran now
            and failed).
        status: what this invocation did (``done``, ``skipped``, ``failed``; ``None``: not run).
        seconds: wall time of this invocation's run (``None``: not run now).
        metrics: flat metrics (:func:`~.table.flatten_results`), empty unless done.
        variants: flat metrics of the run's named evaluation variants (e.g. ``"oracle point"`` of SAM-PP).
        timing: ``results["timing"]`` of the run (``train_seconds``, ``total_seconds``).
        stale: config keys where the stored run differs from the study's (a run from an older study).
        log: the run's log file.
    """

    cell: Cell
    state: str
    status: str | None = None
    seconds: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    variants: dict[str, dict[str, float]] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)
    stale: list[str] = field(default_factory=list)
    log: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        c = self.cell
        return {"cell": c.name, "model": c.model, "row": c.row, "n_labelled": c.n_labelled, "seed": c.seed,
                "run_dir": str(c.run_dir), "state": self.state, "status": self.status,
                "seconds": None if self.seconds is None else round(self.seconds, 1), "timing": self.timing,
                "metrics": self.metrics, "stale": self.stale, "log": None if self.log is None else str(self.log),
                "overrides": list(c.overrides)}


@dataclass
class StudyReport:
    """The outcome of :func:`run_study` / :func:`aggregate`."""

    study: StudyConfig
    outcomes: list[CellOutcome]
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def failed(self) -> list[CellOutcome]:
        """Cells that failed in this invocation."""
        return [o for o in self.outcomes if o.state == "failed"]

    @property
    def missing(self) -> list[CellOutcome]:
        """Cells without results (failed, partial or never started)."""
        return [o for o in self.outcomes if o.state != "done"]

    @property
    def stale(self) -> list[CellOutcome]:
        """Cells whose stored run has another config than the study's."""
        return [o for o in self.outcomes if o.stale]


def _flat_dict(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat_dict(v, f"{prefix}{k}."))
    return out


def config_differences(expected: ExperimentConfig, run_dir: Path) -> list[str]:
    """Dotted keys whose value in ``run_dir/config.yaml`` differs from ``expected`` (empty: same or no run)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return []
    try:
        stored = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return ["config.yaml (unreadable)"]
    try:  # through the current schema: a key added since, at its default, is no difference
        stored = ExperimentConfig.model_validate(stored).model_dump(mode="json")
    except ValueError:  # a key removed or renamed since: compare as stored
        pass
    a, b = _flat_dict(expected.model_dump(mode="json")), _flat_dict(stored)
    keep = lambda k: not any(k == i or k.startswith(i + ".") for i in _IGNORED)  # noqa: E731
    return sorted(k for k in set(a) | set(b) if keep(k) and a.get(k) != b.get(k))


def cell_states(cells: Sequence[Cell]) -> dict[str, str]:
    """``{cell.name: done | partial | new}`` from the run directories."""
    return {c.name: job_state(c.run_dir) for c in cells}


def select_cells(cells: Sequence[Cell], patterns: Sequence[str]) -> list[Cell]:
    """The cells whose name (``SAM-Mix-50/seed0``) or row (``SAM-Mix-50``) matches a glob pattern.

    Raises:
        InputError: a pattern that matches no cell.
    """
    if not patterns:
        return list(cells)
    for pat in patterns:
        if not any(fnmatch.fnmatchcase(c.name, pat) or fnmatch.fnmatchcase(c.row, pat) for c in cells):
            raise InputError("--only", f"{pat!r} matches no cell (cells are named like {cells[0].name!r})")
    return [c for c in cells if any(fnmatch.fnmatchcase(c.name, p) or fnmatch.fnmatchcase(c.row, p) for p in patterns)]


def _prepare_data(configs: dict[str, ExperimentConfig], cells: Sequence[Cell], source: Path | None) -> None:
    """Generate the phantom cohorts once (not in every child at the same time), then check the data."""
    from sam_mix_monai.engines.phantom_data import ensure_phantom_data
    from sam_mix_monai.engines.rundir import check_data

    made: set[Path] = set()
    for cfg in configs.values():
        if cfg.phantom is not None and not Path(cfg.data.path).is_file() and cfg.phantom.domain_a not in made:
            ensure_phantom_data(cfg.phantom, progress=False)
            made.add(cfg.phantom.domain_a)
    for cell in cells:
        if job_state(cell.run_dir) == "done":
            continue
        cfg = configs[cell.name]
        try:
            check_data(cfg, None)
        except InputError as e:
            raise InputError(source, f"cell {cell.name}: {e.problem}") from None
        if cfg.model.checkpoint is not None and cfg.model.name != "unet" and not Path(cfg.model.checkpoint).is_file():
            raise InputError(source, f"cell {cell.name}: model.checkpoint: SAM checkpoint not found: "
                                     f"{cfg.model.checkpoint} (--set model.checkpoint=PATH)")


def run_study(study: StudyConfig, workers: int | None = None, threads: int | None = None,
              aggregate_only: bool = False, only: Sequence[str] = (), stream: bool = True,
              progress: bool = True) -> StudyReport:
    """Run the missing cells of a study, then aggregate (see the module docstring).

    Args:
        study: the validated study.
        workers: cells at a time (``None``: the study's ``workers``).
        threads: torch threads per cell (``None``: the study's ``threads``).
        aggregate_only: train nothing, only summarise what is on disk.
        only: glob patterns of the cells to run (:func:`select_cells`); the report still covers every cell.
        stream: echo the children's output, prefixed with the cell name.
        progress: show a progress bar over cells.

    Returns:
        The report (its ``failed`` cells failed in this invocation).

    Raises:
        InputError: a cell's experiment config is invalid, or its data are missing (before anything runs).
    """
    cells = expand_cells(study)
    configs = validate_cells(study, cells)
    results: dict[str, JobResult] = {}
    chosen = select_cells(cells, only)
    if not aggregate_only:
        _prepare_data(configs, chosen, study.source)
        jobs = [TrainJob(c.name, study.base_path, c.run_dir, c.overrides) for c in chosen]
        todo = sum(job_state(c.run_dir) != "done" for c in chosen)
        logger.info("study %s: %d cells, %d to run, %d worker(s) x %d thread(s)", study.name, len(cells), todo,
                    workers or study.workers, threads or study.threads)
        out = run_training_jobs(jobs, workers=workers or study.workers, threads=threads or study.threads,
                                stream=stream, progress=progress)
        results = {r.job.name: r for r in out}
    return aggregate(study, cells, results, configs)


def _outcome(cell: Cell, result: JobResult | None, cfg: ExperimentConfig | None) -> CellOutcome:
    res = read_results(cell.run_dir)
    state = "done" if res is not None else job_state(cell.run_dir)
    if result is not None and result.status == "failed":
        state = "failed"
    o = CellOutcome(cell, state, log=Path(f"{cell.run_dir}.log"))
    if result is not None:
        o.status, o.seconds = result.status, (result.seconds if result.status != "skipped" else None)
    if res is not None:  # non-finite values (e.g. an AUC with one class) are left out, as missing
        o.metrics = {k: v for k, v in flatten_results(res).items() if math.isfinite(v)}
        o.variants = {name: {k: v for k, v in flatten_results(res, variant=name).items() if math.isfinite(v)}
                      for name in result_variants(res)}
        o.timing = {k: float(v) for k, v in (res.get("timing") or {}).items()
                    if isinstance(v, (int, float)) and math.isfinite(v)}
    if cfg is not None and state != "new":
        o.stale = config_differences(cfg, cell.run_dir)
    return o


def _summary(outcomes: Sequence[CellOutcome]) -> dict[str, dict[str, dict[str, float | int | None]]]:
    rows: dict[str, list[dict[str, float]]] = {}
    for o in outcomes:
        rows.setdefault(o.cell.row, [])
        if o.state == "done":
            rows[o.cell.row].append({**o.metrics, **{f"timing/{k}": v for k, v in o.timing.items()}})
    summary = {}
    for row, runs in rows.items():
        keys = sorted({k for r in runs for k in r})
        stats = {}
        for k in keys:
            m, sd, n = mean_sd([r.get(k, math.nan) for r in runs])
            stats[k] = {"mean": None if n == 0 else m, "sd": None if n == 0 else sd, "n": n}
        summary[row] = stats
    return summary


def _panels(study: StudyConfig, outcomes: Sequence[CellOutcome]) -> dict[str, dict[str, dict[int, list[float]]]]:
    titles = {**DOMAINS, **study.domain_titles}
    panels: dict[str, dict[str, dict[int, list[float]]]] = {titles["in"]: {}, titles["cross"]: {}}
    for o in outcomes:
        for domain in ("in", "cross"):
            series = panels[titles[domain]].setdefault(o.cell.model, {}).setdefault(o.cell.n_labelled, [])
            value = o.metrics.get(f"{domain}/slice2d_dice")
            if value is not None:
                series.append(value)
    return {k: v for k, v in panels.items() if any(vals for s in v.values() for vals in s.values())} or panels


def aggregate(study: StudyConfig, cells: Sequence[Cell] | None = None, results: dict[str, JobResult] | None = None,
              configs: dict[str, ExperimentConfig] | None = None) -> StudyReport:
    """Summarise the run directories of a study into ``study.json``, ``study.md`` and ``dice_vs_n.png``.

    Args:
        study: the study.
        cells: its cells (default: :func:`~.study_config.expand_cells`).
        results: this invocation's job results by cell name (marks failures and wall times).
        configs: the cells' expected configs (default: validated now), to flag stale runs.

    Returns:
        The report, with ``files`` naming what was written.
    """
    cells = list(cells) if cells is not None else expand_cells(study)
    configs = configs if configs is not None else validate_cells(study, cells)
    results = results or {}
    outcomes = [_outcome(c, results.get(c.name), configs.get(c.name)) for c in cells]
    report = StudyReport(study, outcomes)
    out = study.out_dir
    doc = {
        "name": study.name,
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "version": __version__,
        "source": None if study.source is None else str(study.source),
        "base": str(study.base_path),
        "config": study.model_dump(mode="json"),
        "cells": [o.as_dict() for o in outcomes],
        "summary": _summary(outcomes),
    }
    files = {"json": out / STUDY_JSON, "md": out / STUDY_MD, "png": out / STUDY_PNG}
    with atomic_output(files["json"]) as tmp:
        tmp.write_text(json.dumps(doc, indent=1, allow_nan=False, default=str), encoding="utf-8")
    first = configs[cells[0].name] if cells else None
    with atomic_output(files["md"]) as tmp:
        tmp.write_text(render_report(study, outcomes, configs, first), encoding="utf-8")
    dice_vs_n_plot(_panels(study, outcomes), files["png"], title=f"{study.name}: Dice vs labelled slices")
    report.files = files
    return report
