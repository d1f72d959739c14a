"""Results tables in the paper's format: one row per model, Dice and HD per domain, mean ± sd over seeds.

A training run's ``metrics.json`` holds ``results`` keyed by evaluated data set (``test`` and
``cross_domain:<name>``, see :mod:`sam_mix_monai.engines.run`). :func:`flatten_results` turns that
into flat keys ``"<domain>/<metric>"`` with domain ``in`` (the test split) or ``cross`` (the first
cross-domain set); :func:`paper_table` renders a Markdown table from one or more such dicts per model
(several = several seeds); :func:`parse_markdown_table` reads a table back (tests, tooling).

Example:
    >>> rows = {"SAM-Mix-50": [{"in/slice2d_dice": 0.9, "in/slice2d_hd": 10.0, "cross/slice2d_dice": 0.7,
    ...                          "cross/slice2d_hd": 20.0}, {"in/slice2d_dice": 0.8, "in/slice2d_hd": 12.0,
    ...                          "cross/slice2d_dice": 0.6, "cross/slice2d_hd": 30.0}]}
    >>> print(paper_table(rows, "slice2d"))
    | model | in-domain Dice | in-domain HD (px) | cross-domain Dice | cross-domain HD (px) |
    |---|---|---|---|---|
    | SAM-Mix-50 | 0.850 ± 0.071 | 11.00 ± 1.41 | 0.650 ± 0.071 | 25.00 ± 7.07 |
    >>> parse_markdown_table(paper_table(rows, "slice2d"))[0]["in-domain Dice"]
    '0.850 ± 0.071'
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = [
    "DOMAINS",
    "PROTOCOL_COLUMNS",
    "flatten_results",
    "result_variants",
    "mean_sd",
    "format_mean_sd",
    "paper_table",
    "parse_markdown_table",
    "parse_mean_sd",
    "PAPER_RESULTS",
    "paper_reference_table",
]

DOMAINS = {"in": "in-domain", "cross": "cross-domain"}

#: Ward & Imran, ISBI 2025 (arXiv 2412.08575): per-slice Dice / HD (px), LiTS and 20 TotalSegmentator scans.
PAPER_RESULTS: dict[str, tuple[float, float, float, float]] = {
    "U-Net": (0.897, 13.50, 0.669, 29.59),
    "SAM-PP-50": (0.726, 30.99, 0.579, 46.51),
    "SAM-Mix-5": (0.919, 15.14, 0.807, 17.57),
    "SAM-Mix-50": (0.948, 9.84, 0.923, 11.16),
    "SAM-Mix-100": (0.941, 14.67, 0.921, 12.93),
}

# protocol -> ((metric key, column title, decimals), ...)
PROTOCOL_COLUMNS: dict[str, tuple[tuple[str, str, int], ...]] = {
    "slice2d": (("slice2d_dice", "Dice", 3), ("slice2d_hd", "HD (px)", 2), ("slice2d_hd_predicted", "HD pred. (px)", 2),
                ("slice2d_missed", "missed", 0)),
    "volume3d": (("volume3d_dice", "3D Dice", 3), ("volume3d_hd95", "HD95 (mm)", 2)),
    "classifier": (("cls_accuracy", "acc", 3), ("cls_f1", "F1", 3), ("cls_auc", "AUC", 3)),
    "box": (("box_iou", "box IoU", 3), ("box_iou50", "IoU>=0.5", 3), ("box_centroid", "centroid in box", 3)),
}


def result_variants(results: Mapping[str, Any]) -> list[str]:
    """Evaluation variants of a run besides the main one, e.g. ``["oracle point"]`` for SAM-PP
    (result sets named ``"<set> (<variant>)"`` by :meth:`sam_mix_monai.engines.run.TrainingJob.final_evaluation`)."""
    found = [k[k.index(" (") + 2 : -1] for k in results if " (" in k and k.endswith(")")]
    return list(dict.fromkeys(found))


def flatten_results(results: Mapping[str, Any], in_domain: str = "test", variant: str | None = None) -> dict[str, float]:
    """Flat ``"<domain>/<metric>"`` values from a run's ``metrics.json["results"]``.

    Args:
        results: evaluated data sets, each with a ``metrics`` dict (as written by ``sam-mix train``).
        in_domain: key of the in-domain set.
        variant: an evaluation variant (:func:`result_variants`; ``None``: the main evaluation).

    Returns:
        ``in/...`` from ``results[in_domain]``, ``cross/...`` from the first ``cross_domain:*`` set
        (of that variant).
    """
    flat: dict[str, float] = {}
    suffix = f" ({variant})" if variant else ""
    cross = next((k for k in results if k.startswith("cross_domain")
                  and (k.endswith(suffix) if variant else not k.endswith(")"))), None)
    for domain, key in (("in", in_domain + suffix), ("cross", cross)):
        if key is None or key not in results:
            continue
        for metric, value in results[key].get("metrics", {}).items():
            if value is not None:
                flat[f"{domain}/{metric}"] = float(value)
    return flat


def mean_sd(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (0 for one value) and count of the finite values."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size)


def format_mean_sd(values: Sequence[float], decimals: int = 3) -> str:
    """``"m ± sd"`` over several values, ``"m"`` for one, ``"-"`` for none."""
    m, sd, n = mean_sd(values)
    if n == 0:
        return "-"
    return f"{m:.{decimals}f}" if n == 1 else f"{m:.{decimals}f} ± {sd:.{decimals}f}"


def paper_table(
    rows: Mapping[str, Sequence[Mapping[str, float]]],
    protocol: str = "slice2d",
    domains: Sequence[str] = ("in", "cross"),
    domain_titles: Mapping[str, str] | None = None,
) -> str:
    """A Markdown table: one row per model, ``Dice | HD`` per domain, mean ± sd over the runs.

    Args:
        rows: model name -> flat metric dicts (one per seed), in row order.
        protocol: ``slice2d`` (the paper's: per-slice Dice and HD in pixels), ``volume3d``, ``classifier``
            or ``box`` (box-prompt quality, :mod:`sam_mix_monai.engines.box_quality`).
        domains: domain prefixes to show, in column order.
        domain_titles: column-title prefix per domain (default :data:`DOMAINS`).

    Returns:
        The table, without a trailing newline.
    """
    if protocol not in PROTOCOL_COLUMNS:
        raise ValueError(f"protocol must be one of {sorted(PROTOCOL_COLUMNS)}, got {protocol!r}")
    titles = {**DOMAINS, **(domain_titles or {})}
    cols = [(f"{d}/{key}", f"{titles[d]} {title}", dec) for d in domains for key, title, dec in PROTOCOL_COLUMNS[protocol]]
    head = ["model"] + [c[1] for c in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model, runs in rows.items():
        cells = [model] + [format_mean_sd([r.get(key, math.nan) for r in runs], dec) for key, _, dec in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_markdown_table(text: str) -> list[dict[str, str]]:
    """Rows of the first Markdown table in ``text``, as dicts keyed by the header cells.

    Raises:
        ValueError: no table, or a row whose cell count differs from the header's.
    """
    lines = [ln.strip() for ln in text.splitlines()]
    start = next((i for i, ln in enumerate(lines[:-1]) if ln.startswith("|") and set(lines[i + 1]) <= set("|-: ")
                  and lines[i + 1].startswith("|")), None)
    if start is None:
        raise ValueError("no Markdown table found")
    head = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for ln in lines[start + 2:]:
        if not ln.startswith("|"):
            break
        cells = [c.strip() for c in ln.strip("|").split("|")]
        if len(cells) != len(head):
            raise ValueError(f"row has {len(cells)} cells, header has {len(head)}: {ln}")
        rows.append(dict(zip(head, cells)))
    return rows


def parse_mean_sd(cell: str) -> tuple[float, float | None]:
    """``"0.850 ± 0.071"`` -> ``(0.85, 0.071)``; ``"0.85"`` -> ``(0.85, None)``; ``"-"`` -> ``(nan, None)``."""
    cell = cell.strip()
    if cell == "-":
        return math.nan, None
    parts = [p.strip() for p in cell.split("±")]
    return float(parts[0]), float(parts[1]) if len(parts) > 1 else None


def paper_reference_table() -> str:
    """The paper's table (:data:`PAPER_RESULTS`, means only) in the same format as ours."""
    rows = {m: [{"in/slice2d_dice": v[0], "in/slice2d_hd": v[1], "cross/slice2d_dice": v[2], "cross/slice2d_hd": v[3]}]
            for m, v in PAPER_RESULTS.items()}
    return paper_table(rows, "slice2d", domain_titles={"in": "LiTS", "cross": "TotalSeg"})
