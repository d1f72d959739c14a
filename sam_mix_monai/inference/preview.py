"""Preview PNG of a prediction: axial, coronal and sagittal planes through the mask, with contours.

Planes are taken from the RAS view of the original arrays (flips and transposes, no copy of the
volume), windowed, shown in the radiological convention (patient right on the image left; superior
at the top) and resampled to square pixels so anisotropic volumes keep their proportions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sam_mix_monai.inference.geometry import AxialGeometry
from sam_mix_monai.transforms import DEFAULT_WINDOW, HUWindow
from sam_mix_monai.utils.errors import PathLike
from sam_mix_monai.utils.preview import save_overlay_grid

__all__ = ["save_triplanar_preview", "triplanar_planes"]


def _square_pixels(img: np.ndarray, msk: np.ndarray, row_mm: float, col_mm: float, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    h, w = img.shape
    scale = min(max_side / max(h * row_mm, w * col_mm), 4.0 / min(row_mm, col_mm))
    size = (max(1, int(round(h * row_mm * scale))), max(1, int(round(w * col_mm * scale))))
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None, None]
    m = torch.from_numpy(np.ascontiguousarray(msk, dtype=np.float32))[None, None]
    return (
        F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy(),
        F.interpolate(m, size=size, mode="nearest")[0, 0].numpy(),
    )


def triplanar_planes(
    image: np.ndarray, mask: np.ndarray, geometry: AxialGeometry, window=DEFAULT_WINDOW, max_side: int = 384
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Axial, coronal and sagittal planes through the mask's centre (the volume's centre if empty).

    Args:
        image: ``(X, Y, Z)`` HU array on the original grid.
        mask: ``(X, Y, Z)`` mask on the same grid.
        geometry: that grid.
        window: HU window (centre, width).
        max_side: longest side of a plane after resampling to square pixels.

    Returns:
        ``[(title, windowed image in [0, 1], mask), ...]`` for the three planes.
    """
    img, msk = geometry.to_ras(image), geometry.to_ras(mask)
    fg = np.argwhere(msk) if msk.any() else None
    c = [int(v) for v in (np.median(fg, axis=0) if fg is not None else np.array(msk.shape) // 2)]
    sx, sy, sz = geometry.ras_spacing
    win = HUWindow(*window)
    planes = [
        # display rows / cols: axial A->P / R->L; coronal S->I / R->L; sagittal S->I / A->P
        (f"axial z={c[2]}", img[::-1, ::-1, c[2]].T, msk[::-1, ::-1, c[2]].T, sy, sx),
        (f"coronal y={c[1]}", img[::-1, c[1], ::-1].T, msk[::-1, c[1], ::-1].T, sz, sx),
        (f"sagittal x={c[0]}", img[c[0], ::-1, ::-1].T, msk[c[0], ::-1, ::-1].T, sz, sy),
    ]
    out = []
    for title, p_img, p_msk, row_mm, col_mm in planes:
        windowed = np.asarray(win(np.asarray(p_img, dtype=np.float32)))
        out.append((title, *_square_pixels(windowed, p_msk, row_mm, col_mm, max_side)))
    return out


def save_triplanar_preview(
    image: np.ndarray, mask: np.ndarray, geometry: AxialGeometry, path: PathLike, title: str | None = None, window=DEFAULT_WINDOW
) -> Path:
    """Write the three-plane preview PNG (atomically).

    Args:
        image: ``(X, Y, Z)`` HU array on the original grid.
        mask: the predicted mask on the same grid.
        geometry: that grid.
        path: PNG file.
        title: figure title.
        window: HU window (centre, width).

    Returns:
        The written path.
    """
    planes = triplanar_planes(image, mask, geometry, window)
    return save_overlay_grid(
        [p[1] for p in planes], path, preds=[p[2] for p in planes], titles=[p[0] for p in planes], ncols=3, suptitle=title
    )
