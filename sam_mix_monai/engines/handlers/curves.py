"""Training curves as a PNG: losses per epoch and validation metrics per validation."""

from __future__ import annotations

from typing import Any, Sequence

from sam_mix_monai.utils.atomic import atomic_output
from sam_mix_monai.utils.errors import PathLike

__all__ = ["plot_curves"]


def plot_curves(train: Sequence[dict[str, Any]], val: Sequence[dict[str, Any]], path: PathLike, title: str = "") -> None:
    """Draw the loss terms (left) and the validation metrics in [0, 1] (right) into ``path``.

    Args:
        train: per-epoch records (``epoch`` and loss terms).
        val: per-validation records (``epoch`` and metrics).
        path: PNG file (written atomically).
        title: figure title.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, (ax_l, ax_v) = plt.subplots(1, 2, figsize=(11, 4))
    skip = {"epoch", "iteration", "lr", "seconds", "pseudo_mask_rate"}
    keys = sorted({k for r in train for k in r if k not in skip}, key=lambda k: (k != "loss", k))
    for k in keys:
        pts = [(r["epoch"], r[k]) for r in train if k in r]
        if pts:
            ax_l.plot(*zip(*pts), label=k, lw=2.0 if k == "loss" else 1.0)
    ax_l.set_xlabel("epoch")
    ax_l.set_ylabel("training loss (epoch mean)")
    ax_l.set_yscale("log")
    if keys:
        ax_l.legend(fontsize=7)
    vkeys = sorted({k for r in val for k, v in r.items() if k != "epoch" and isinstance(v, (int, float)) and 0 <= v <= 1})
    for k in vkeys:
        pts = [(r["epoch"], r[k]) for r in val if isinstance(r.get(k), (int, float))]
        ax_v.plot(*zip(*pts), marker="o", ms=3, label=k)
    ax_v.set_xlabel("epoch")
    ax_v.set_ylabel("validation")
    ax_v.set_ylim(0, 1)
    if vkeys:
        ax_v.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
