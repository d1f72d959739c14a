"""The cross-patient protocol on real CT: train on one patient, segment the others' whole CT by the infer path.

``python -m sam_mix_monai.experiments.cross_patient --config configs/study_cross_patient.yaml``:

1. every fold's training patient is converted once (``sam-mix convert --format ircadb``, into the
   ignored ``data/real/``; 3D-IRCADb is CC BY-NC-ND: never commit the store);
2. every model x N x seed x fold is trained by ``sam-mix train`` (``experiments.jobs``; a finished run
   is reused);
3. its ``last.pt`` segments each test CT of the fold through :class:`~sam_mix_monai.inference.Segmenter`
   (the code of ``sam-mix infer``, in the model's own prompt mode; SAM-Mix also in ``slice`` mode, or
   without the intensity gate, as ablation rows of the same checkpoints), scored by 3D Dice and HD95 against the manual (or TotalSegmentator) reference;
4. the zero-shot rows: the packaged default model, and the oracle box (the reference's box on every
   slice, LiteMedSAM: an upper bound, never a result);
5. ``<report>.json`` (every figure) and ``<report>.md`` (mean +- sd over seeds per case), with the CPU model.

Settings were chosen on the training patient only (its development slab), never on a test case.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from pydantic import BaseModel, ConfigDict, Field

from sam_mix_monai.engines.config import read_yaml_mapping
from sam_mix_monai.experiments.jobs import TrainJob, run_training_jobs
from sam_mix_monai.utils.machine import cpu_model

__all__ = ["CrossPatientConfig", "main", "run_cross_patient"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Fold(_Strict):
    """One training patient and the CTs it is tested on."""

    train: str
    test: list[str]


class CrossModel(_Strict):
    """A model row: an experiment config (relative to the study file), overrides, labelled-slice counts."""

    label: str
    config: str
    set: dict[str, Any] = Field(default_factory=dict)
    n_labelled: list[int]
    slice_mode_row: bool = False
    gate_ablation_row: bool = False


class CrossPatientConfig(_Strict):
    """The study file (``configs/study_cross_patient.yaml``)."""

    name: str
    folds: list[Fold]
    models: list[CrossModel]
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    zero_shot: bool = True
    real_root: str | None = None
    workers: int = Field(1, ge=1)
    threads: int = Field(1, ge=1)
    output_dir: str = "runs/cross_patient"
    report: str = "docs/study_cross_patient"
    embedding_cache_dir: str = "data/embedding_cache"


def _store(name: str, root: Path, data_dir: Path) -> Path:
    store = data_dir / f"{name}.h5"
    if not store.is_file():
        subprocess.run([sys.executable, "-m", "sam_mix_monai.cli.main", "convert", "--format", "ircadb", "--input",
                        str(root / name), "--output", str(store), "--keep-rate", "all", "--split", "train=1"], check=True)
    return store


def _jobs(cfg: CrossPatientConfig, base: Path, root: Path) -> list[tuple[TrainJob, CrossModel, str, int, int]]:
    out = []
    for fold in cfg.folds:
        store = _store(fold.train, root, Path("data/real"))
        for m in cfg.models:
            for n in m.n_labelled:
                for seed in cfg.seeds:
                    name = f"{m.label}-{n}/{fold.train}/seed{seed}"
                    sets = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in m.set.items()]
                    sets += [f"data.path={store}", f"data.n_labelled={n}", f"train.seed={seed}", f"data.label_seed={seed}",
                             f"name={m.label}-{n}"]
                    job = TrainJob(name, base / m.config, Path(cfg.output_dir) / m.label / str(n) / fold.train / f"seed{seed}",
                                   tuple(sets))
                    out.append((job, m, fold.train, n, seed))
    return out


def _finished(run_dir: Path) -> bool:
    return (run_dir / "last.pt").is_file() and (run_dir / "metrics.json").is_file()


#: Score mode -> row suffix: the model's own inference, the per-slice prompts, the volume mode without the intensity gate and filter.
MODES = {"own": "", "slice": " (slice prompts)", "nogate": " (no intensity gate or filter)"}


def _score(checkpoint: Path | None, cases: dict[str, Any], names: Sequence[str], cache_dir: str,
           mode: str = "own") -> dict[str, Any]:
    from sam_mix_monai.experiments.real_cases import score_segmenter
    from sam_mix_monai.inference.segmenter import Segmenter
    from sam_mix_monai.networks.embedding_cache import attach_embedding_cache

    seg = Segmenter(checkpoint, device="cpu", prompt_mode="slice" if mode == "slice" else None)
    sam_mix = seg.predictor.sam_mix if seg.predictor is not None else None
    if mode == "nogate" and sam_mix is not None:
        sam_mix.intensity_gate = sam_mix.intensity_filter = False
    if sam_mix is not None:  # the frozen encoder's embeddings of the test CTs, shared by every model of the study
        attach_embedding_cache(sam_mix.sam, 4096, cache_dir, backend=f"infer:{seg.encoder_backend}")
    return {name: score_segmenter(seg, cases[name]) for name in names}


def _oracle(case: Any, cache_dir: str) -> dict[str, Any]:
    """The reference's box on every liver slice, the pretrained LiteMedSAM (an upper bound, never a result).

    The boxes are the reference's tight per-slice boxes (:func:`.volume_prompt.volume_prompt` of the reference
    without smoothing or margin), decoded with the slice preparation of the volume mode (shared embedding cache).
    """
    import numpy as np
    import torch

    from sam_mix_monai.experiments.real_ct import score_masks
    from sam_mix_monai.inference.geometry import AxialGeometry
    from sam_mix_monai.inference.volume import VolumeSliceInferer, volume_array
    from sam_mix_monai.inference.volume_mode import segment_given_prompt
    from sam_mix_monai.inference.volume_prompt import VolumePromptSettings, volume_prompt
    from sam_mix_monai.networks import ModelConfig, build_model
    from sam_mix_monai.networks.embedding_cache import attach_embedding_cache

    from sam_mix_monai.networks.encoder_backend import apply_encoder_backend

    model = build_model(ModelConfig(name="sam_mix", size="lite_medsam", classifier="compact", encoder_mode="frozen")).eval()
    backend = apply_encoder_backend(model.sam, torch.device("cpu"), "auto", "none")  # as the Segmenter does
    attach_embedding_cache(model.sam, 4096, cache_dir, backend=f"infer:{backend}")
    arr = volume_array(case.image)
    geo = AxialGeometry(np.asarray(case.image.affine, dtype=np.float64), arr.shape)
    ref = geo.read_slab(case.reference, 0, geo.depth).astype(np.float32)
    sy, sx, dz = geo.ras_spacing[1], geo.ras_spacing[0], geo.ras_spacing[2]
    tight = VolumePromptSettings(threshold=0.5, z_smooth_mm=0.0, edge_smooth_mm=0.0, margin_mm=0.0)
    prompt = volume_prompt(ref, ref.any(axis=(1, 2)), (sy, sx, dz), geo.slice_shape, tight)
    mask = segment_given_prompt(case.image, model, VolumeSliceInferer(image_size=256), prompt)
    dice, hd95 = score_masks(mask, case.reference, case.spacing)
    return {"dice": round(dice, 4), "hd95": None if np.isnan(hd95) else round(hd95, 2)}


def _mean_sd(values: Sequence[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}" + (f" (n={len(values)})" if len(values) != 3 else "")


def _report(cfg: CrossPatientConfig, rows: list[dict[str, Any]], zero: dict[str, Any]) -> str:
    cases = sorted({c for r in rows for c in r["scores"]} | {c for per in zero.values() for c in per})
    lines = [f"# {cfg.name}", "", f"CPU: {cpu_model()}. Regenerate with "
             f"`python -m sam_mix_monai.experiments.cross_patient --config configs/study_cross_patient.yaml`.", "",
             "3D Dice on whole CTs of patients the model never saw (mean ± sd over seeds; infer path, largest 3D "
             "component). The training patient of each fold is named after the model.", "",
             "| model | trained on | " + " | ".join(cases) + " |", "|---|---|" + "---|" * len(cases)]
    groups: dict[tuple[str, str], dict[str, list[float]]] = {}
    for r in rows:
        for case, s in r["scores"].items():
            groups.setdefault((r["row"], r["train"]), {}).setdefault(case, []).append(s["dice"])
    for (row, train), per in groups.items():
        lines.append(f"| {row} | {train} | " + " | ".join(_mean_sd(per.get(c, [])) if c != train else "(train)"
                                                       for c in cases) + " |")
    for label, per in zero.items():
        lines.append(f"| {label} | - | " + " | ".join(f"{per[c]['dice']:.3f}" if c in per else "-" for c in cases) + " |")
    return "\n".join(lines) + "\n"


SCORES = "cross_patient_scores.json"


def _score_job(cfg: CrossPatientConfig, job: TrainJob, model: CrossModel, tests: Sequence[str], cases: dict[str, Any],
               rescore: bool = False) -> Path:
    """Train ``job`` unless it is finished, score its ``last.pt`` on ``tests``, write the scores into its run dir.

    With ``rescore``, a finished job is scored again (after a change of the inference) and keeps its training
    time; an unfinished one is left alone (nothing trains).
    """
    out = job.run_dir / SCORES
    old = json.loads(out.read_text(encoding="utf-8")) if out.is_file() else None
    if (old is not None and not rescore) or (rescore and not _finished(job.run_dir)):
        return out
    t0 = time.perf_counter()
    if not _finished(job.run_dir):
        res = run_training_jobs([job], threads=cfg.threads, progress=False)[0]
        if res.status == "failed":
            raise RuntimeError(f"training {job.name} failed: see {res.log}")
    train_seconds = time.perf_counter() - t0 if old is None else float(old.get("train_seconds") or 0.0)
    modes = ["own"] + ["slice"] * model.slice_mode_row + ["nogate"] * model.gate_ablation_row
    scores = {mode: _score(job.run_dir / "last.pt", cases, tests, cfg.embedding_cache_dir, mode) for mode in modes}
    out.write_text(json.dumps({"train_seconds": round(train_seconds, 1), "scores": scores}, indent=1), encoding="utf-8")
    return out


def _collect(cfg: CrossPatientConfig, jobs: list[tuple[TrainJob, CrossModel, str, int, int]]) -> list[dict[str, Any]]:
    rows = []
    for job, model, train, n, seed in jobs:
        path = job.run_dir / SCORES
        if not path.is_file():
            continue
        rec = json.loads(path.read_text(encoding="utf-8"))
        for mode, scores in rec["scores"].items():
            label = f"{model.label}-{n}" + MODES.get(mode, f" ({mode})")
            rows.append({"row": label, "train": train, "seed": seed, "train_seconds": rec.get("train_seconds"),
                         "scores": scores})
    return rows


def run_cross_patient(cfg: CrossPatientConfig, base: Path, only: Sequence[str] = (), zero_shot: bool = True,
                      train: bool = True, rescore: bool = False) -> dict[str, Any]:
    """Train and score every job (labels matching ``only``, all without), then write the report of what is there.

    Each job's scores live in its run directory, so several processes (``--only``) can share a study;
    the zero-shot rows are stored in ``<output_dir>/zero_shot.json``. ``rescore`` scores the selected
    finished jobs and the default model again (the oracle row does not depend on the inference).
    """
    from sam_mix_monai.experiments.real_cases import load_real_case, real_root

    root = real_root(cfg.real_root)
    names = sorted({c for f in cfg.folds for c in [*f.test, f.train]})
    cases = {n: load_real_case(n, root) for n in names}
    zero_file = Path(cfg.output_dir) / "zero_shot.json"
    zero: dict[str, Any] = json.loads(zero_file.read_text(encoding="utf-8")) if zero_file.is_file() else {}
    if cfg.zero_shot and zero_shot:
        from sam_mix_monai.networks.default_model import DEFAULT_MODEL

        if DEFAULT_MODEL.is_file() and ("default model (phantoms)" not in zero or rescore):
            zero["default model (phantoms)"] = _score(None, cases, names, cfg.embedding_cache_dir)
        if "oracle box (upper bound)" not in zero:
            zero["oracle box (upper bound)"] = {n: _oracle(cases[n], cfg.embedding_cache_dir) for n in names}
        zero_file.parent.mkdir(parents=True, exist_ok=True)
        zero_file.write_text(json.dumps(zero, indent=1), encoding="utf-8")
    jobs = _jobs(cfg, base, root)
    fold_tests = {f.train: f.test for f in cfg.folds}
    if train:
        for job, model, fold, n, seed in jobs:
            if not only or any(job.name.startswith(o) for o in only):
                _score_job(cfg, job, model, fold_tests[fold], cases, rescore)
    rows = _collect(cfg, jobs)
    record = {"name": cfg.name, "cpu": cpu_model(), "rows": rows, "zero_shot": zero}
    report = Path(cfg.report)
    report.parent.mkdir(parents=True, exist_ok=True)
    report.with_suffix(".json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    report.with_suffix(".md").write_text(_report(cfg, rows, zero), encoding="utf-8")
    return record


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sam_mix_monai.experiments.cross_patient --config FILE [--zero-shot-only]``."""
    p = argparse.ArgumentParser(prog="cross_patient", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--only", action="append", default=[], metavar="PREFIX",
                   help="only the jobs whose name starts with PREFIX (e.g. SAM-Mix-50); repeatable")
    p.add_argument("--no-zero-shot", action="store_true", help="skip (keep) the zero-shot rows")
    p.add_argument("--report-only", action="store_true", help="write the report of what is there, train nothing")
    p.add_argument("--rescore", action="store_true",
                   help="score the finished jobs again (after an inference change), keeping their training times; "
                        "trains nothing")
    args = p.parse_args(argv)
    path = Path(args.config)
    cfg = CrossPatientConfig(**read_yaml_mapping(path, "cross-patient study config", "must be a mapping"))
    run_cross_patient(cfg, path.parent, args.only, zero_shot=not args.no_zero_shot, train=not args.report_only,
                      rescore=args.rescore)
    print(Path(cfg.report).with_suffix(".md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
