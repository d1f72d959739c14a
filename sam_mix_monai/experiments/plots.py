"""Study figures: Dice against the number of labelled slices, one line per model family.

Example:
    >>> series = {"SAM-Mix": {5: [0.80, 0.82], 50: [0.90]}, "SAM-PP": {0: [0.3], 50: [0.7, 0.72]}}
    >>> dice_vs_n_plot({"in-domain": series, "cross-domain": series}, "dice_vs_n.png")  # doctest: +SKIP
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Mapping, Sequence

from sam_mix_monai.experiments.table import mean_sd
from sam_mix_monai.utils.atomic import atomic_output
from sam_mix_monai.utils.errors import PathLike

__all__ = ["dice_vs_n_plot"]

Series = Mapping[str, Mapping[int, Sequence[float]]]  # family -> N -> values (one per seed)


def dice_vs_n_plot(panels: Mapping[str, Series], path: PathLike, ylabel: str = "Dice (slice2d)",
                   title: str | None = None) -> Path:
    """Mean ± sd of a metric against N, one panel per domain, one line per family.

    The x axis is symmetric-logarithmic (linear below 1), so that N = 0 (no segmentation training) sits
    at the origin and 5, 50, 100 spread out as on a log axis. Families are dodged slightly sideways so
    that equal values stay visible. A family with one N is drawn as a marker; points without any value
    are left out.

    Args:
        panels: panel title -> family -> N -> values.
        path: PNG to write (atomically).
        ylabel: y-axis label.
        title: figure title.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    families = list(dict.fromkeys(f for series in panels.values() for f in series))
    colours = {f: plt.get_cmap("tab10")(i % 10) for i, f in enumerate(families)}
    markers = "osD^vP*Xh<>"
    all_n = sorted({n for series in panels.values() for pts in series.values() for n in pts})
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5.2 * max(1, len(panels)), 4.2), squeeze=False,
                             sharey=True)
    for ax, (panel, series) in zip(axes[0], panels.items()):
        for i, family in enumerate(families):
            pts = [(n, *mean_sd(series.get(family, {}).get(n, []))) for n in sorted(series.get(family, {}))]
            pts = [(n, m, sd) for n, m, sd, k in pts if k > 0]
            if not pts:
                continue
            xs, ms, sds = zip(*pts)
            shift = i - (len(families) - 1) / 2  # dodge: families at the same N side by side
            xs = [n * 1.05 ** shift if n > 0 else 0.06 * shift for n in xs]
            ax.errorbar(xs, ms, yerr=sds, color=colours[family], marker=markers[i % len(markers)], capsize=3,
                        linestyle="-" if len(pts) > 1 else "none", label=family)
        ax.set_xscale("symlog", linthresh=1.0)
        if all_n:
            ax.set_xticks(all_n)
            ax.set_xticklabels([str(n) for n in all_n])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.set_xlim(-0.3 if all_n[0] == 0 else all_n[0] * 0.7, all_n[-1] * 1.4)
        ax.set_ylim(0.0, 1.0)
        ax.set_xlabel("labelled slices N")
        ax.set_title(panel)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), frameon=False)
    lines = 0
    if title:  # wrapped to the figure's width (about 9 characters per inch at the default font size)
        wrapped = textwrap.fill(title, width=max(20, int(9 * fig.get_figwidth())))
        fig.suptitle(wrapped)
        lines = wrapped.count("\n")
    rows = (len(labels) + 4) // 5 if handles else 0
    fig.tight_layout(rect=(0, 0.06 * rows, 1, 1 - 0.05 * lines))
    path = Path(path)
    with atomic_output(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path
