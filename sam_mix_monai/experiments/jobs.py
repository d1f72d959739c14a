"""Run ``sam-mix train`` jobs in child processes, several at a time, resumably.

The demo and the study run several trainings on one machine. Each job is one ``sam-mix train``
child process (``python -m sam_mix_monai.cli.main``), so that jobs get their own thread pool, memory
and crash domain, and so that a killed study leaves ordinary, resumable run directories behind:

* a job whose run directory holds ``metrics.json`` with ``results`` is **done** and skipped;
* one with ``last.pt`` but no results is **partial** and continued with ``sam-mix train --resume``;
* any other starts afresh (``output.overwrite=true``).

Children run with ``train.num_threads`` set and their progress bar off; their output goes to
``<run_dir>.log`` and, with ``stream=True``, to our stdout line by line, prefixed ``[name]``: that is
the progress of a long job. A failed job does not stop the others.

Example:
    >>> job = TrainJob("sam_mix-50", Path("configs/phantom_demo.yaml"), Path("runs/x/sam_mix-50"))
    >>> results = run_training_jobs([job], workers=1)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from tqdm import tqdm

__all__ = ["TrainJob", "JobResult", "job_state", "read_results", "train_command", "run_training_jobs"]

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"  # engines.handlers.METRICS_FILE; not imported: this module must stay torch-free
LAST_CHECKPOINT = "last.pt"


@dataclass(frozen=True)
class TrainJob:
    """One training run.

    Attributes:
        name: unique label; prefixes streamed log lines.
        config: experiment YAML.
        run_dir: run directory (``output.dir``).
        overrides: extra ``--set KEY=VALUE`` overrides.
        prelude: a command run in the same worker before the training (its output goes to the same log,
            prefixed ``[name]``), e.g. warming another run's embedding cache while that run trains on another
            core; its failure is logged, the training runs all the same.
    """

    name: str
    config: Path
    run_dir: Path
    overrides: tuple[str, ...] = ()
    prelude: tuple[str, ...] = ()


@dataclass
class JobResult:
    """Outcome of a :class:`TrainJob`.

    Attributes:
        job: the job.
        status: ``done`` (ran now), ``skipped`` (already complete) or ``failed``.
        seconds: wall time of the child (0 when skipped).
        returncode: the child's exit code (0 when skipped).
        results: ``metrics.json["results"]`` of the run, ``None`` when it failed.
        log: ``<run_dir>.log``, the child's stdout and stderr.
    """

    job: TrainJob
    status: str
    seconds: float
    returncode: int
    results: dict[str, Any] | None
    log: Path


def read_results(run_dir: Path) -> dict[str, Any] | None:
    """``metrics.json["results"]`` of a finished run, ``None`` when absent or unreadable."""
    path = Path(run_dir) / METRICS_FILE
    try:
        results = json.loads(path.read_text(encoding="utf-8")).get("results")
    except (OSError, ValueError):
        return None
    return results or None


def job_state(run_dir: Path) -> str:
    """``done`` (results written), ``partial`` (``last.pt`` but no results) or ``new``."""
    if read_results(run_dir) is not None:
        return "done"
    return "partial" if (Path(run_dir) / LAST_CHECKPOINT).is_file() else "new"


def train_command(job: TrainJob, threads: int = 1) -> list[str]:
    """The ``sam-mix train`` command line that runs (or continues) ``job``."""
    cmd = [sys.executable, "-m", "sam_mix_monai.cli.main", "train"]
    if job_state(job.run_dir) == "partial":
        cmd += ["--resume", str(job.run_dir)]
    else:
        cmd += ["--config", str(job.config), "--set", f"output.dir={job.run_dir}", "--set", "output.overwrite=true"]
        for ov in job.overrides:
            cmd += ["--set", ov]
    return cmd + ["--set", f"train.num_threads={int(threads)}", "--set", "train.progress=false"]


def _stream(cmd: Sequence[str], name: str, fh: Any, stream: bool, lock: threading.Lock) -> int:
    """Run ``cmd``, its stdout and stderr into ``fh`` (and, with ``stream``, our stdout prefixed ``[name]``)."""
    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    assert proc.stdout is not None
    for line in proc.stdout:
        fh.write(line)
        if stream and line.strip():
            with lock:
                tqdm.write(f"[{name}] {line.rstrip()}")
    return proc.wait()


def _run_one(job: TrainJob, threads: int, stream: bool, lock: threading.Lock) -> JobResult:
    log = Path(f"{job.run_dir}.log")
    if job.prelude:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", buffering=1) as fh:
            rc = _stream(job.prelude, job.name, fh, stream, lock)
        if rc != 0:
            logger.warning("%s: the prelude command failed (exit code %d), see %s", job.name, rc, log)
    if job_state(job.run_dir) == "done":
        return JobResult(job, "skipped", 0.0, 0, read_results(job.run_dir), log)
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "a", buffering=1) as fh:  # line-buffered: a killed job keeps its log
        rc = _stream(train_command(job, threads), job.name, fh, stream, lock)
    results = read_results(job.run_dir) if rc == 0 else None
    status = "done" if rc == 0 and results is not None else "failed"
    return JobResult(job, status, time.perf_counter() - t0, rc, results, log)


def run_training_jobs(
    jobs: Sequence[TrainJob],
    workers: int = 1,
    threads: int = 1,
    stream: bool = True,
    progress: bool = True,
) -> list[JobResult]:
    """Run ``jobs``, ``workers`` at a time, each child with ``threads`` torch threads.

    Args:
        jobs: the jobs (names must be unique).
        workers: concurrent child processes.
        threads: ``train.num_threads`` of each child.
        stream: echo the children's output, prefixed ``[name]``.
        progress: a progress bar over jobs.

    Returns:
        One result per job, in the order of ``jobs``.
    """
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"job names must be unique: {names}")
    lock = threading.Lock()
    bar = tqdm(total=len(jobs), desc="training jobs", unit="job", disable=not progress)
    results: dict[str, JobResult] = {}

    def work(job: TrainJob) -> JobResult:
        res = _run_one(job, threads, stream, lock)
        with lock:
            results[job.name] = res
            bar.update(1)
            bar.set_postfix_str(f"{job.name}: {res.status}")
        return res

    try:
        with ThreadPoolExecutor(max_workers=max(1, int(workers))) as pool:
            list(pool.map(work, jobs))
    finally:
        bar.close()
    return [results[n] for n in names]
