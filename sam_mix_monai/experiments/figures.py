"""Figures of the demo report: predictions against the truth, CAM prompts, training curves.

Every function takes plain arrays (or run histories) and writes one PNG atomically; none runs a
network. Contour overlays reuse :func:`sam_mix_monai.utils.preview.save_overlay_grid` (truth green,
prediction red); the per-run curves stay :func:`sam_mix_monai.engines.handlers.curves.plot_curves`,
:func:`save_training_comparison` puts several runs on one pair of axes.

Example:
    >>> import numpy as np
    >>> img = np.zeros((32, 32), np.float32); truth = np.zeros((32, 32), np.uint8); truth[8:20, 8:20] = 1
    >>> save_prediction_comparison([img], [truth], {"A": [truth], "B": [truth * 0]}, "cmp.png")  # doctest: +SKIP
    PosixPath('cmp.png')
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from sam_mix_monai.utils.errors import PathLike
from sam_mix_monai.utils.preview import save_figure, save_overlay_grid

__all__ = ["dice_2d", "save_prediction_comparison", "save_cam_grid", "save_training_comparison", "PNG_SIGNATURE"]

#: First bytes of every PNG file.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def dice_2d(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two binary masks; 1 when both are empty.

    Args:
        pred: predicted mask (non-zero = foreground).
        truth: reference mask, same shape.

    Returns:
        ``2 |P ∩ T| / (|P| + |T|)``.
    """
    import torch
    from monai.metrics import compute_dice

    p, t = np.asarray(pred) > 0, np.asarray(truth) > 0
    if p.shape != t.shape:
        raise ValueError(f"shapes differ: {p.shape} vs {t.shape}")
    as_t = lambda a: torch.from_numpy(a)[None, None].float()  # noqa: E731
    return float(compute_dice(as_t(p), as_t(t), include_background=True, ignore_empty=False))


def save_prediction_comparison(
    images: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    predictions: Mapping[str, Sequence[np.ndarray]],
    path: PathLike,
    titles: Sequence[str] | None = None,
    suptitle: str | None = "truth (green) vs prediction (red)",
) -> Path:
    """One row per slice, one column per model: the slice with truth and prediction contours.

    Args:
        images: 2D slices in [0, 1].
        truths: reference masks, one per slice.
        predictions: model name -> predicted masks (one per slice), in column order.
        path: PNG file.
        titles: slice labels (e.g. ``"volume-1 z=20"``), one per slice.
        suptitle: figure title.

    Returns:
        The written path. Each panel is titled ``<model> · <slice label> · Dice <d>``.
    """
    if not predictions:
        raise ValueError("no model predictions to show")
    n = len(images)
    for name, preds in predictions.items():
        if len(preds) != n:
            raise ValueError(f"{name}: {len(preds)} predictions for {n} slices")
    if len(truths) != n or (titles is not None and len(titles) != n):
        raise ValueError("images, truths and titles must have the same length")
    panels, masks, preds, labels = [], [], [], []
    for k in range(n):
        for name, pr in predictions.items():
            panels.append(images[k])
            masks.append(truths[k])
            preds.append(pr[k])
            where = f" · {titles[k]}" if titles is not None else ""
            labels.append(f"{name}{where} · Dice {dice_2d(pr[k], truths[k]):.3f}")
    return save_overlay_grid(panels, path, masks=masks, preds=preds, titles=labels, ncols=len(predictions),
                             suptitle=suptitle)


def save_cam_grid(
    images: Sequence[np.ndarray],
    cams: Sequence[np.ndarray],
    boxes: Sequence[Sequence[float]],
    path: PathLike,
    titles: Sequence[str] | None = None,
    truths: Sequence[np.ndarray | None] | None = None,
    fallback: Sequence[bool] | None = None,
    ncols: int = 4,
    alpha: float = 0.45,
) -> Path:
    """Slices with the GradCAM heat map and the box prompt drawn on top.

    Args:
        images: 2D slices in [0, 1].
        cams: CAM maps in [0, 1], same size as their slice.
        boxes: ``(x1, y1, x2, y2)`` per slice, inclusive pixel indices of the slice (scale SAM-input
            boxes to the slice size first).
        path: PNG file.
        titles: panel titles.
        truths: optional reference masks (green contour).
        fallback: per slice, whether the box is the central fallback box (drawn dashed).
        ncols: panels per row.
        alpha: opacity of the heat map.

    Returns:
        The written path.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    n = len(images)
    if len(cams) != n or len(boxes) != n:
        raise ValueError(f"{n} images but {len(cams)} CAMs and {len(boxes)} boxes")
    if n == 0:
        raise ValueError("no slices to show")
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3 * ncols, 3.35 * nrows + 0.4), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= n:
            continue
        cam = np.asarray(cams[k], dtype=np.float32)
        img = np.asarray(images[k], dtype=np.float32)
        if cam.shape != img.shape:
            raise ValueError(f"slice {k}: CAM {cam.shape} and image {img.shape} differ")
        ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.imshow(cam, cmap="jet", vmin=0, vmax=1, alpha=alpha, interpolation="bilinear")
        truth = None if truths is None else truths[k]
        if truth is not None and np.asarray(truth).any():
            ax.contour(np.asarray(truth, dtype=np.float32), levels=[0.5], colors="lime", linewidths=1.0)
        x1, y1, x2, y2 = (float(v) for v in boxes[k])
        dashed = bool(fallback[k]) if fallback is not None else False
        ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1 + 1, y2 - y1 + 1, fill=False, edgecolor="yellow",
                               linewidth=1.5, linestyle="--" if dashed else "-"))
        if titles is not None:
            ax.set_title(titles[k], fontsize=8)
    fig.suptitle("GradCAM of 'liver present' (heat map) and its box prompt (yellow; dashed: fallback)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def save_training_comparison(
    histories: Mapping[str, Mapping[str, Any]],
    path: PathLike,
    val_key: str = "slice2d_dice",
    title: str = "training of the demo models",
) -> Path:
    """Training loss (left) and validation Dice (right) of several runs on shared axes.

    Args:
        histories: run label -> ``metrics.json`` content (``train``: per-epoch records with
            ``epoch`` and ``loss``; ``val``: per-validation records with ``epoch`` and ``val_key``;
            ``best_val`` optional, marked with a star).
        path: PNG file.
        val_key: validation metric to plot.
        title: figure title.

    Returns:
        The written path.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if not histories:
        raise ValueError("no run histories to plot")
    fig, (ax_l, ax_v) = plt.subplots(1, 2, figsize=(11, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (label, hist) in enumerate(histories.items()):
        color = colors[k % len(colors)]
        train = [r for r in hist.get("train", []) if isinstance(r.get("loss"), (int, float))]
        if train:
            ax_l.plot([r["epoch"] for r in train], [r["loss"] for r in train], color=color, lw=1.8, label=label)
        val = [r for r in hist.get("val", []) if isinstance(r.get(val_key), (int, float))]
        if val:
            ax_v.plot([r["epoch"] for r in val], [r[val_key] for r in val], color=color, marker="o", ms=3, label=label)
        best = hist.get("best_val")
        if isinstance(best, dict) and isinstance(best.get(val_key), (int, float)):
            ax_v.plot([best["epoch"]], [best[val_key]], color=color, marker="*", ms=12, ls="none")
    ax_l.set_xlabel("epoch")
    ax_l.set_ylabel("training loss (epoch mean, all terms)")
    ax_l.set_yscale("log")
    ax_v.set_xlabel("epoch")
    ax_v.set_ylabel(f"validation {val_key} (star: best checkpoint)")
    ax_v.set_ylim(0, 1)
    for ax in (ax_l, ax_v):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=90)
