"""The run directory: checks before a run starts, the resolved config and the provenance record.

A run directory holds ``config.yaml`` (the resolved, validated config), ``run.json`` (package
version, git commit, library versions, command line), the checkpoints ``last.pt`` / ``best.pt``,
``metrics.json``, ``curves.png``, ``train.log`` and ``tensorboard/``.
"""

from __future__ import annotations

import datetime
import logging
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import monai
import torch

from sam_mix_monai import __version__
from sam_mix_monai.data import SliceDataset
from sam_mix_monai.data.dataset import SliceTable
from sam_mix_monai.engines.config import ExperimentConfig, dump_config, load_config
from sam_mix_monai.engines.handlers.checkpoint import LAST
from sam_mix_monai.engines.handlers.history import METRICS_FILE
from sam_mix_monai.networks.checkpoint import check_finite, safe_torch_load
from sam_mix_monai.utils.atomic import atomic_output, check_writable_dir, clean_stale_parts
from sam_mix_monai.utils.errors import InputError, PathLike

__all__ = ["CONFIG_FILE", "RUN_FILE", "git_commit", "check_data", "prepare_run_dir", "check_resumable", "resume_config",
           "provenance"]

CONFIG_FILE = "config.yaml"
RUN_FILE = "run.json"


def git_commit() -> str | None:
    """The commit of the code (with ``+dirty`` when the work tree has changes), or ``None``."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(world_size: int = 1) -> dict[str, Any]:
    """Version, commit and environment of this run."""
    return {
        "package": "sam_mix_monai",
        "version": __version__,
        "git_commit": git_commit(),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "world_size": world_size,
        "host_cpus": os.cpu_count(),
    }


def check_data(cfg: ExperimentConfig, source: PathLike | None) -> None:
    """Fail early, with one line, on missing data files and an impossible labelled-slice count.

    Raises:
        InputError: naming the config file and key.
    """
    if not Path(cfg.data.path).is_file():
        raise InputError(source, f"data.path: HDF5 file not found: {cfg.data.path}")
    if cfg.data.extra_path is not None and not Path(cfg.data.extra_path).is_file():
        raise InputError(source, f"data.extra_path: HDF5 file not found: {cfg.data.extra_path}")
    for i, cd in enumerate(cfg.evaluate.cross_domain):
        if not Path(cd.path).is_file():
            raise InputError(source, f"evaluate.cross_domain.{i}.path: HDF5 file not found: {cd.path}")
    # The stores themselves (layout, lengths, sizes, NaN): their errors name the store and dataset,
    # so that a broken store is not blamed on data.train_split or data.n_labelled below.
    extra = [("data.extra_path", cfg.data.extra_path)] if cfg.data.extra_path is not None else []
    for key, path in [("data.path", cfg.data.path), *extra] + [(f"evaluate.cross_domain.{i}.path", cd.path)
                                                              for i, cd in enumerate(cfg.evaluate.cross_domain)]:
        try:
            SliceTable(path)
        except InputError as e:
            raise InputError(e.path, f"{e.problem} ({key} of {source})" if source else e.problem) from None
    d = cfg.data
    for key, split in (("train_split", d.train_split), ("val_split", d.val_split), ("test_split", d.test_split)):
        if split is not None:
            try:
                SliceTable(d.path).rows(split)
            except InputError as e:
                raise InputError(source, f"data.{key}: {e.problem}") from None
    if "volume3d" in cfg.evaluate.protocols:  # said before training, not only in the results
        for path in [d.path] + [cd.path for cd in cfg.evaluate.cross_domain]:
            reason = SliceTable(path).volume3d_refusal()
            if reason is not None:
                logging.getLogger(__name__).warning("%s: volume3d will be refused: %s", path, reason)
    if cfg.train.epochs > 0 and cfg.data.n_labelled:
        try:
            SliceDataset(cfg.data.path, split=cfg.data.train_split, n_labelled=cfg.data.n_labelled,
                         subset="labelled", seed=cfg.data.label_seed)
        except InputError as e:
            raise InputError(source, f"data.n_labelled: {e.problem} in the {cfg.data.train_split} split of {cfg.data.path}") from None


def prepare_run_dir(cfg: ExperimentConfig, resume: bool, world_size: int = 1) -> Path:
    """Create (or check, when resuming) the run directory and write the config and provenance.

    Raises:
        InputError: a fresh run in a directory that already holds one (without ``output.overwrite``),
            or a resumed run without a loadable ``last.pt`` (:func:`check_resumable`; nothing is written then).
    """
    run_dir = Path(cfg.output.dir)
    if resume:
        check_resumable(run_dir)
    if not resume and ((run_dir / LAST).exists() or (run_dir / METRICS_FILE).exists()):
        if not cfg.output.overwrite:
            raise InputError(run_dir, "run directory already holds a run; resume it with --resume, "
                                      "or choose another output.dir, or --set output.overwrite=true")
        for name in ("last.pt", "best.pt", METRICS_FILE, "curves.png"):
            (run_dir / name).unlink(missing_ok=True)
    check_writable_dir(run_dir)
    clean_stale_parts(run_dir, before=time.time())  # half-written checkpoints of a killed earlier run
    with atomic_output(run_dir / CONFIG_FILE) as tmp:
        tmp.write_text(dump_config(cfg), encoding="utf-8")
    runs = []
    if resume and (run_dir / RUN_FILE).is_file():
        try:
            old = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))
            runs = old if isinstance(old, list) else [old]
        except ValueError:
            runs = []
    with atomic_output(run_dir / RUN_FILE) as tmp:
        tmp.write_text(json.dumps(runs + [provenance(world_size)], indent=1), encoding="utf-8")
    return run_dir


#: Entries of a resumable checkpoint (:func:`~sam_mix_monai.engines.handlers.last_checkpoint`).
RESUME_KEYS = ("network", "optimizer", "trainer")


def check_resumable(run_dir: PathLike) -> None:
    """Require a complete, safe and finite ``last.pt`` in a run directory to resume.

    Resuming without one would start the run again and overwrite its ``best.pt``.

    Raises:
        InputError: ``last.pt`` missing, truncated or corrupt, refused (its pickle would run code),
            lacking the training state, or holding NaN / infinite weights.
    """
    last = Path(run_dir) / LAST
    if not last.is_file():
        raise InputError(last, "no checkpoint to resume from (the run ended before its first epoch did?); nothing "
                               "was changed: start it again with --config and --set output.overwrite=true")
    ckpt = safe_torch_load(last)
    lacking = [k for k in RESUME_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if lacking:
        raise InputError(last, f"not a resumable checkpoint (lacks {', '.join(lacking)}): written by another tool?")
    if not isinstance(ckpt["network"], dict):
        raise InputError(last, "checkpoint entry 'network' is not a state dict")
    check_finite(ckpt["network"], last)


def resume_config(run_dir: PathLike, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """The stored config of a run to resume (with ``--set`` overrides; the output dir stays the run's).

    Raises:
        InputError: not a run directory.
    """
    d = Path(run_dir)
    if not (d / CONFIG_FILE).is_file():
        raise InputError(d, f"not a run directory (no {CONFIG_FILE})")
    cfg = load_config(d / CONFIG_FILE, list(overrides))
    if Path(cfg.output.dir).resolve() != d.resolve():
        cfg.output.dir = d
    return cfg
