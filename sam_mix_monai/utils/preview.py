"""Preview images: CT slices with mask contours, for a quick look at data and results."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from sam_mix_monai.utils.atomic import atomic_output
from sam_mix_monai.utils.errors import PathLike


def save_figure(fig, path: PathLike, dpi: int = 100) -> Path:
    """Write a matplotlib figure as PNG atomically (never a half-written file), then close it."""
    import matplotlib.pyplot as plt

    target = Path(path)
    with atomic_output(target, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return target


def save_overlay_grid(
    images: Sequence[np.ndarray],
    path: PathLike,
    masks: Sequence[np.ndarray | None] | None = None,
    preds: Sequence[np.ndarray | None] | None = None,
    titles: Sequence[str] | None = None,
    ncols: int = 4,
    suptitle: str | None = None,
) -> Path:
    """Save a grid of gray slices with contours: ``masks`` in green, ``preds`` in red.

    Args:
        images: 2D arrays in [0, 1] (already windowed).
        path: PNG file to write (atomically).
        masks: optional reference masks, one per image.
        preds: optional predicted masks, one per image.
        titles: optional panel titles.
        ncols: panels per row.
        suptitle: optional figure title.

    Returns:
        The written path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3 * ncols, 3 * nrows + (0.4 if suptitle else 0)), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= n:
            continue
        ax.imshow(np.asarray(images[k], dtype=np.float32), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        for layer, color in ((masks, "lime"), (preds, "red")):
            m = None if layer is None else layer[k]
            if m is not None and np.asarray(m).any():
                ax.contour(np.asarray(m, dtype=np.float32), levels=[0.5], colors=color, linewidths=1.0)
        if titles is not None:
            ax.set_title(titles[k], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)
