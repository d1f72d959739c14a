"""``sam-mix demo``: phantom data, two trainings in parallel, volume inference, figures, ``report.md``.

The demo is described by a small YAML file (``configs/demo.yaml``, :mod:`.demo_config`):
the experiment configs to train (SAM-Mix-50 and a U-Net-50 baseline), the model that segments the
held-out volume, and how many slices the figures show. Steps:

1. **phantom data**: the cohorts of the runs' ``phantom:`` section, generated and converted once
   (:func:`~sam_mix_monai.engines.phantom_data.ensure_phantom_data`) before any child starts; every
   run trains on its domain a and is tested on domain b as the cross-domain set;
2. **training**: one ``sam-mix train`` child per model, in parallel, one thread each
   (:func:`.jobs.run_training_jobs`); each evaluates its best checkpoint under ``slice2d`` and
   ``volume3d``, in-domain and cross-domain. A complete run of the same settings is reused. With
   ``warm_cache`` the U-Net's worker first encodes SAM-Mix's validation and test slices into
   SAM-Mix's on-disk embedding cache (:func:`_with_warm_cache`);
3. **volume inference**: the first test case's NIfTI volume (regenerated from its seed when the
   NIfTI files are gone) through ``sam-mix infer``'s :func:`~sam_mix_monai.inference.runner.segment_cases`,
   with preview and JSON summary, and its 3D Dice / HD95 against the label NIfTI;
4. **real CT** (:mod:`.real_ct`): the committed TotalSegmentator example segmented by every model,
   by the zero-shot SAM-PP-0 and with the oracle box, scored on the CT's own grid;
5. **figures** (:mod:`.figures`) and 6. **report** (:mod:`.report`).

Example:
    >>> report = run_demo("runs/demo")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from sam_mix_monai.experiments.demo_config import (DemoConfig, DemoRunConfig, default_demo_config,
                                                   load_demo_config)
from sam_mix_monai.experiments.jobs import TrainJob, job_state, run_training_jobs
from sam_mix_monai.experiments.report import (DemoSummary, InferenceOutcome, ModelRun, data_table, network_text,
                                              phantom_data_lines, write_report)
from sam_mix_monai.utils.atomic import check_writable_dir
from sam_mix_monai.utils.errors import InputError, PathLike
from sam_mix_monai.utils.machine import cpu_model

__all__ = ["DemoResult", "run_demo"]

logger = logging.getLogger(__name__)
STEPS = 6
CROSS_NAME = "phantom_b"


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_") or "run"


def _settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """A resolved config without what the jobs set per run (output folder, threads, progress bar)."""
    out = {k: v for k, v in cfg.items() if k != "output"}
    out["train"] = {k: v for k, v in (cfg.get("train") or {}).items() if k not in ("num_threads", "progress")}
    return out


def _plan(demo: DemoConfig, source: Path, out: Path, overrides: Sequence[str]) -> list[tuple[DemoRunConfig, Any, TrainJob]]:
    """Validate every run config (with the demo's data) and build its job; reset stale run folders.

    With ``warm_cache``, a SAM-Mix whose encoder is frozen keeps its embeddings on disk beside the phantom data
    (``<phantom root>/embedding_cache``, unless its config names a folder).
    """
    from sam_mix_monai.engines.config import load_config

    labels = [r.label for r in demo.runs]
    if len({_slug(x) for x in labels}) != len(labels):
        raise InputError(source, f"runs: labels must be distinct: {labels}")
    plans, phantom = [], None
    for run in demo.runs:
        path = run.config if run.config.is_absolute() else source.parent / run.config
        cfg = load_config(path, [*run.overrides, *overrides])
        if cfg.phantom is None:
            raise InputError(path, "the demo trains on phantom data: the config needs a phantom: section")
        if phantom is not None and cfg.phantom != phantom:
            raise InputError(path, f"phantom: differs from {demo.runs[0].config}'s; the demo's models share one data set")
        phantom = cfg.phantom
        data = [f"data.path={cfg.phantom.domain_a.resolve()}",
                f'evaluate.cross_domain=[{{"name": "{CROSS_NAME}", "path": "{cfg.phantom.domain_b.resolve()}"}}]']
        if (demo.warm_cache and cfg.model.name == "sam_mix" and cfg.model.embedding_cache_dir is None
                and cfg.model.resolved_encoder_mode() == "frozen"):
            data.append(f"model.embedding_cache_dir={(Path(cfg.phantom.root) / 'embedding_cache').resolve()}")
        all_overrides = (*run.overrides, *overrides, *data)
        run_dir = (out / "runs" / _slug(run.label)).resolve()
        cfg = load_config(path, [*all_overrides, f"output.dir={run_dir}"])
        if job_state(run_dir) != "new" and _stale(run_dir, cfg):
            logger.info("%s: settings changed since the run in %s: training afresh", run.label, run_dir)
            shutil.rmtree(run_dir)
        plans.append((run, cfg, TrainJob(_slug(run.label), path.resolve(), run_dir, all_overrides)))
    return plans


def _with_warm_cache(plans: list[tuple[DemoRunConfig, Any, TrainJob]], infer_model: str | None,
                     threads: int) -> list[tuple[DemoRunConfig, Any, TrainJob]]:
    """Every other run first fills the inference model's on-disk embedding cache with the slices it evaluates.

    SAM-Mix's encoder is most of the demo's time, and SAM-Mix trains on one core: the other core encodes
    its validation, test and cross-domain slices (:mod:`sam_mix_monai.engines.warm_cache`, the same backend
    and thread count, so the same embeddings) before the U-Net trains there, and SAM-Mix reads them from
    disk. Nothing when that model has no ``model.embedding_cache_dir``.
    """
    target = next((p for p in plans if p[0].label == infer_model or (infer_model is None and p[1].model.name == "sam_mix")),
                  None)
    if target is None or target[1].model.embedding_cache_dir is None or target[1].model.name != "sam_mix":
        return plans
    _, cfg, job = target
    cmd = [sys.executable, "-m", "sam_mix_monai.engines.warm_cache", "--config", str(job.config)]
    for ov in (*job.overrides, f"train.num_threads={int(threads)}"):
        cmd += ["--set", ov]
    cmd += ["--unless-done", str(job.run_dir)]
    return [(r, c, j if j is job else replace(j, prelude=tuple(cmd))) for r, c, j in plans]


def _stale(run_dir: Path, cfg: Any) -> bool:
    """Whether ``run_dir`` holds a run of other settings than ``cfg``."""
    try:
        stored = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return True
    return _settings(stored or {}) != _settings(cfg.model_dump(mode="json"))


def _data_counts(phantom: Any) -> list[tuple[str, int, int, int]]:
    """``(set, cases, slices, liver-positive slices)`` of domain a's splits and of domain b."""
    from sam_mix_monai.data.dataset import SliceTable

    counts = []
    for name, store, splits in (("domain a", phantom.domain_a, ("train", "val", "test")), ("domain b", phantom.domain_b, (None,))):
        table = SliceTable(store)
        for split in splits:
            idx = table.rows(split)
            counts.append((f"{name} {split or 'all'}", len(set(table.case_ids[idx].tolist())), len(idx),
                           int((table.labels[idx] > 0).sum())))
    return counts


def _held_out_case(phantom: Any, work: Path) -> tuple[str, Path, Path]:
    """The first test case of domain a and its image / label NIfTI (regenerated when deleted)."""
    from sam_mix_monai.data.dataset import SliceTable
    from sam_mix_monai.data.phantom import generate_cohort
    from sam_mix_monai.data.phantom.writer import case_paths

    table = SliceTable(phantom.domain_a)
    cases = sorted(set(table.case_ids[table.rows("test")].tolist()), key=lambda c: [int(t) if t.isdigit() else t
                                                                                     for t in re.split(r"(\d+)", c)])
    if not cases:
        raise InputError(phantom.domain_a, "the test split holds no case")
    case = cases[0]
    number = int(re.findall(r"\d+", case)[-1])
    for root in (phantom.root / "nifti_a", work):
        image, label = case_paths(root, "lits", number)
        if image.is_file() and label.is_file():
            return case, image, label
    # ensure_phantom_data keeps only the HDF5 stores: case i depends on (seed, i, domain) alone
    generate_cohort(work, 1, layout="lits", domain="a", seed=phantom.seed, matrix=phantom.matrix,
                    slices=phantom.slices, start_id=number, workers=1, progress=False)
    return (case, *case_paths(work, "lits", number))


def _infer(run: ModelRun, phantom: Any, out: Path, progress: bool, precision: str = "fp32") -> InferenceOutcome:
    """Segment the held-out case as ``sam-mix infer --preview`` does; score it against its label NIfTI."""
    import nibabel as nib

    from sam_mix_monai.experiments.real_ct import score_masks, segment_with_checkpoint

    case, image, label = _held_out_case(phantom, out / "infer" / "input")
    t0 = time.perf_counter()
    res, backend = segment_with_checkpoint(run.run_dir / "best.pt", image, out / "infer", progress, precision)
    seconds = time.perf_counter() - t0
    ref_img = nib.load(str(label))
    dice, hd95 = score_masks(np.asarray(nib.load(str(res.outputs[0])).dataobj), np.asarray(ref_img.dataobj),
                             ref_img.header.get_zooms()[:3])
    per_case = (run.metrics or {}).get("results", {}).get("test", {}).get("volume3d_cases", [])
    eval_dice = next((c.get("dice") for c in per_case if c.get("case_id") == case), None)
    preview = next((p for p in res.outputs if p.suffix == ".png"), None)
    return InferenceOutcome(run.label, case, image, label, res.outputs[0], res.summary, dice, hd95, eval_dice, seconds, preview,
                            precision, backend)


def _pick_rows(table: Any, n: int) -> list[int]:
    """``n`` test rows with liver (at least 30% of the largest liver area) spread over the cases, plus one without."""
    rows = table.rows("test")
    pos, neg = rows[table.labels[rows] > 0], rows[table.labels[rows] == 0]
    if pos.size == 0:
        return []
    area = table.read_many(pos.tolist())[1].flatten(1).sum(1).numpy()
    pos = pos[area >= 0.3 * area.max()]
    picked = sorted({int(pos[int(round(k))]) for k in np.linspace(0, pos.size - 1, min(n, pos.size))})
    return picked + ([int(neg[neg.size // 2])] if neg.size else [])  # a liver-free slice shows the classifier gate


def _figures(runs: Sequence[ModelRun], sam_mix: ModelRun | None, phantom: Any, demo: DemoConfig,
             inference: InferenceOutcome | None, fig_dir: Path) -> list[tuple[str, str]]:
    """Write the report's PNGs into ``fig_dir``; return ``(caption, path relative to the report)`` of each."""
    import torch

    from sam_mix_monai.data.dataset import SliceTable
    from sam_mix_monai.engines.batch import network_size, predict_masks, run_network
    from sam_mix_monai.networks.classifier import liver_probability
    from sam_mix_monai.networks.run_checkpoint import load_checkpoint
    from sam_mix_monai.experiments.figures import save_cam_grid, save_prediction_comparison, save_training_comparison

    figures: list[tuple[str, str]] = []
    table = SliceTable(phantom.domain_a)
    rows = _pick_rows(table, demo.figure_slices)
    ok = [r for r in runs if r.ok]
    if rows and ok:
        imgs, masks = table.read_many(rows)
        titles = [f"{table.case_ids[r]} z={table.slice_index[r]}" for r in rows]
        x = imgs[:, None]
        preds, outs, sizes, sam_mix_net = {}, {}, {}, None
        for r in ok:
            net, _, _ = load_checkpoint(r.run_dir / "best.pt", "cpu")
            sizes[r.label] = network_size(net)
            if sam_mix is not None and r.label == sam_mix.label:
                sam_mix_net = net
            with torch.no_grad():
                outs[r.label] = out = run_network(net, x)
            preds[r.label] = list(predict_masks(out, getattr(net, "cls_threshold", 0.5))[:, 0].numpy())
        save_prediction_comparison(list(imgs.numpy()), list(masks.numpy()), preds, fig_dir / "predictions.png", titles)
        figures.append(("Test slices: truth (green) and prediction (red), models side by side; the last has no liver",
                        "figures/predictions.png"))
        if sam_mix is not None and sam_mix.label in outs and "cam" in outs[sam_mix.label]:
            out = outs[sam_mix.label]
            scale = imgs.shape[-1] / float(sizes[sam_mix.label] or imgs.shape[-1])
            boxes = (out["boxes"] * scale).tolist()  # SAM input pixels -> slice pixels
            prob = liver_probability(out["class_logits"]).tolist()
            gate = getattr(sam_mix_net, "cls_threshold", 0.5)
            save_cam_grid(list(imgs.numpy()), list(out["cam"][:, 0].numpy()), boxes, fig_dir / "cam_prompts.png",
                          [f"{t} · p(liver) {p:.2f}{' (gated)' if p < gate else ''}" for t, p in zip(titles, prob)],
                          list(masks.numpy()), out["box_fallback"].tolist(), ncols=min(len(rows), 5))
            figures.append((f"{sam_mix.label}: GradCAM heat map and box prompt on the same slices", "figures/cam_prompts.png"))
    if inference is not None and inference.preview is not None:
        shutil.copyfile(inference.preview, fig_dir / "infer_preview.png")
        figures.append((f"`sam-mix infer` preview of {inference.case} (axial, coronal, sagittal)", "figures/infer_preview.png"))
    if ok:
        save_training_comparison({r.label: r.metrics or {} for r in ok}, fig_dir / "training_curves.png")
        figures.append(("Training loss and validation Dice of both runs", "figures/training_curves.png"))
        for r in ok:
            if (r.run_dir / "curves.png").is_file():
                shutil.copyfile(r.run_dir / "curves.png", fig_dir / f"curves_{_slug(r.label)}.png")
                figures.append((f"{r.label}: every loss term and validation metric", f"figures/curves_{_slug(r.label)}.png"))
    return figures


@dataclass
class DemoResult:
    """What :func:`run_demo` did.

    Attributes:
        report: the written ``report.md``.
        runs: the models (``status`` ``failed`` for a training that failed).
        inference: the held-out volume's segmentation, if it ran.
        seconds: wall time of the whole demo.
    """

    report: Path
    runs: list[ModelRun]
    inference: InferenceOutcome | None
    seconds: float

    @property
    def failed(self) -> list[ModelRun]:
        """Runs without results."""
        return [r for r in self.runs if not r.ok]


def _step(k: int, text: str) -> None:
    """Log a progress step ``[k/5] text``."""
    logger.info("[%d/%d] %s", k, STEPS, text)


def _read_metrics(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "metrics.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def run_demo(out: PathLike, config: PathLike | None = None, overrides: Sequence[str] = (), stream: bool = True,
             progress: bool = True) -> DemoResult:
    """Run the whole demo into ``out`` and write ``out/report.md``.

    Args:
        out: output folder (created; must be writable): ``report.md``, ``figures/``, ``runs/``, ``infer/``.
        config: demo YAML (``None``: :func:`default_demo_config`).
        overrides: ``KEY=VALUE`` overrides applied to every run's experiment config (after the
            demo config's own), e.g. ``train.epochs=2`` or ``phantom.root=/tmp/phantom``.
        stream: echo the training children's log lines, prefixed with the run name.
        progress: progress bars.

    Returns:
        The report path, the runs, the inference and the wall time.

    Raises:
        InputError: a bad demo or experiment config, an unwritable output folder, bad phantom data.
    """
    import torch

    from sam_mix_monai import __version__
    from sam_mix_monai.engines.phantom_data import ensure_phantom_data
    from sam_mix_monai.engines.rundir import git_commit

    t_start = time.perf_counter()
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    source = Path(config) if config is not None else default_demo_config()
    demo = load_demo_config(source)
    labels = [r.label for r in demo.runs]
    if demo.infer_model is not None and demo.infer_model not in labels:
        raise InputError(source, f"infer_model: {demo.infer_model!r} is not one of the runs {labels}")
    out = check_writable_dir(out)
    fig_dir = check_writable_dir(out / "figures")
    plans = _plan(demo, source, out, overrides)
    if demo.warm_cache:
        plans = _with_warm_cache(plans, demo.infer_model, demo.threads)
    phantom = plans[0][1].phantom
    timings: dict[str, float] = {}

    _step(1, f"phantom data in {phantom.root}: {phantom.cases_a} + {phantom.cases_b} cases "
             f"({'reused' if phantom.domain_a.is_file() and phantom.domain_b.is_file() else 'generating and converting'})")
    t = time.perf_counter()
    ensure_phantom_data(phantom, progress=progress)
    timings["phantom data (generate + convert, or reuse)"] = time.perf_counter() - t
    counts = _data_counts(phantom)

    workers = min(demo.workers, len(plans))
    _step(2, f"training {', '.join(labels)}: {workers} at a time, {demo.threads} thread(s) each; "
             f"log lines are prefixed with the run name")
    t = time.perf_counter()
    results = run_training_jobs([p[2] for p in plans], workers=workers, threads=demo.threads, stream=stream,
                                progress=progress)
    timings[f"training ({len(plans)} runs, {workers} in parallel, incl. their test evaluations)"] = time.perf_counter() - t
    runs, notes, sam_mix = [], [], None
    for (spec, cfg, job), res in zip(plans, results):
        run = ModelRun(spec.label, network_text(cfg.model), cfg.data.n_labelled, res.status, res.seconds, job.run_dir,
                       res.log, _read_metrics(job.run_dir), cfg.train.epochs, cfg.train.iterations_per_epoch)
        runs.append(run)
        if res.status == "skipped":
            logger.info("%s: reused the complete run in %s", spec.label, job.run_dir)
        if not run.ok:
            logger.error("%s: training failed (exit code %d), see %s", spec.label, res.returncode, res.log)
            notes.append(f"{spec.label}: training failed (exit code {res.returncode}); see `{res.log}`.")
        if sam_mix is None and (spec.label == demo.infer_model or (demo.infer_model is None and cfg.model.name == "sam_mix")):
            sam_mix = run

    inference = None
    all_cores = max(demo.threads, min(os.cpu_count() or 1, 4))  # the trainings are over: every core
    if sam_mix is not None and sam_mix.ok:
        _step(3, f"volume inference (sam-mix infer code path) with {sam_mix.label} on the first held-out test case")
        torch.set_num_threads(all_cores)
        inference = _infer(sam_mix, phantom, out, progress, demo.infer_precision)
        torch.set_num_threads(demo.threads)
        timings["volume inference (held-out case)"] = inference.seconds
        logger.info("%s: 3D Dice %.3f, HD95 %.2f mm against %s", inference.case, inference.dice, inference.hd95_mm,
                    inference.label.name)
    else:
        _step(3, "volume inference skipped: no SAM-Mix model finished training")

    real = None
    if demo.real_ct:
        from sam_mix_monai.experiments.real_ct import run_real_ct

        _step(4, "real CT (examples/totalseg_example_dicom): every model"
                 + (", SAM-PP-0 and the oracle box" if demo.real_ct_zero_shot else ""))
        t = time.perf_counter()
        torch.set_num_threads(all_cores)
        real = run_real_ct([(r.label, r.run_dir) for r in runs if r.ok], out, progress, demo.real_ct_zero_shot,
                           demo.real_ct_precision)
        timings["real CT (all rows)"] = time.perf_counter() - t
        torch.set_num_threads(demo.threads)
        for row in real.rows:
            logger.info("real CT, %s: %s", row.model, row.error or f"3D Dice {row.dice:.3f}")
    else:
        _step(4, "real CT skipped (real_ct: false)")

    _step(5, f"figures in {fig_dir}")
    t = time.perf_counter()
    figures = _figures(runs, sam_mix, phantom, demo, inference, fig_dir)
    if real is not None and real.figure is not None:
        figures.insert(0, ("Real CT (TotalSegmentator example): reference and every model on 3 slices",
                           f"figures/{real.figure.name}"))
    timings["figures"] = time.perf_counter() - t

    _step(6, "report")
    timings["total (demo command)"] = time.perf_counter() - t_start
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    env = {"CPU": cpu_model(), "sam_mix_monai": __version__, "commit": git_commit() or "-", "torch": torch.__version__,
           "CPUs": os.cpu_count(), "threads per training": demo.threads,
           "load average (1 min) at start / end": f"{load_start:.2f} / {load_end:.2f}"}
    summary = DemoSummary(out, phantom_data_lines(phantom), runs, data_table(counts), inference, figures, timings, env, notes,
                          real_ct=real)
    report = write_report(summary)
    return DemoResult(report, runs, inference, time.perf_counter() - t_start)
