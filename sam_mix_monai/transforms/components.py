"""3D clean-up of a predicted liver mask: keep the largest connected component (26-connectivity).

MONAI's :class:`~monai.transforms.KeepLargestConnectedComponent` runs on the bounding box of the
foreground. Its labelling needs an ``int64`` label image, 8 bytes per voxel: fine for a liver's box,
2 GB for a whole 512x512x1000 volume (a badly failing model can fill it). Boxes larger than
:data:`MAX_BOX_VOXELS` therefore go through :func:`largest_component_by_slabs`, which labels one slab
at a time (``scipy.ndimage.label``, ``int32``), joins labels across slab faces with a graph of
equivalences, and keeps the largest joined component: the same result in bounded memory.

Connected components do not depend on axis order or direction, so the mask stays on the original grid.

Example:
    >>> import numpy as np
    >>> m = np.zeros((6, 6, 6), np.uint8); m[0:2, 0:2, 0:2] = 1; m[3:6, 3:6, 3:6] = 1
    >>> int(keep_largest_component(m).sum())
    27
"""

from __future__ import annotations

import numpy as np
import torch
from monai.transforms import KeepLargestConnectedComponent
from monai.transforms.utils import generate_spatial_bounding_box
from monai.utils import optional_import

__all__ = ["keep_largest_component", "largest_component_by_slabs", "foreground_box", "MAX_BOX_VOXELS"]

_, _HAS_SKIMAGE = optional_import("skimage.measure")

#: Foreground boxes above this many voxels are labelled slab by slab (about 256 MB of int64 labels).
MAX_BOX_VOXELS = 32 * 1024 * 1024
_FULL = np.ones((3, 3, 3), dtype=bool)


def foreground_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Tight bounding box of the non-zero voxels as slices (MONAI ``generate_spatial_bounding_box``),
    or ``None`` for an empty mask."""
    if not mask.any():
        return None
    start, end = generate_spatial_bounding_box(mask[None], select_fn=lambda x: x > 0)
    return tuple(slice(int(a), int(b)) for a, b in zip(start, end))


def _label(slab: np.ndarray) -> tuple[np.ndarray, int]:
    from scipy import ndimage

    return ndimage.label(slab, structure=_FULL, output=np.int32)


def largest_component_by_slabs(mask: np.ndarray, slab: int = 32) -> np.ndarray:
    """Largest 26-connected component of a 3D binary mask, labelling ``slab`` planes of the last axis at a time.

    Args:
        mask: binary array, modified in place.
        slab: planes per slab.

    Returns:
        ``mask``.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    depth = mask.shape[-1]
    starts = list(range(0, depth, slab))
    offsets, sizes, pairs = [], [np.zeros(1, np.int64)], []
    total, prev = 0, None
    for z0 in starts:
        labels, n = _label(mask[..., z0 : z0 + slab])
        offsets.append(total)
        sizes.append(np.bincount(labels.ravel(), minlength=n + 1)[1:].astype(np.int64))
        glob = np.where(labels > 0, labels + total, 0)
        if prev is not None:  # 26-neighbours across the slab face
            a, b = prev, glob[..., 0]
            h, w = a.shape
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    pa = a[max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)]
                    pb = b[max(0, -dy) : h + min(0, -dy), max(0, -dx) : w + min(0, -dx)]
                    hit = (pa > 0) & (pb > 0)
                    if hit.any():
                        pairs.append(np.unique(np.stack([pa[hit], pb[hit]], 1), axis=0))
        prev = glob[..., -1].copy()
        total += n
        del labels, glob
    if total == 0:
        return mask
    size = np.concatenate(sizes)  # index = global label (0 = background)
    edges = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(total + 1, total + 1))
    _, comp = connected_components(graph, directed=False)
    comp_size = np.bincount(comp[1:], weights=size[1:])
    keep_comp = int(np.argmax(comp_size))
    keep_label = comp == keep_comp
    keep_label[0] = False
    for z0, off in zip(starts, offsets):  # second pass: the same labelling, keep the winning component
        part = mask[..., z0 : z0 + slab]
        labels, _ = _label(part)
        part[~keep_label[np.where(labels > 0, labels + off, 0)]] = 0
    return mask


def keep_largest_component(mask: np.ndarray, max_box_voxels: int = MAX_BOX_VOXELS) -> np.ndarray:
    """Keep the largest 26-connected component of a binary 3D mask, in place.

    Args:
        mask: ``uint8`` (or bool) array ``(X, Y, Z)``.
        max_box_voxels: foreground boxes larger than this are labelled slab by slab.

    Returns:
        ``mask`` itself, with every other component zeroed.
    """
    box = foreground_box(mask)
    if box is None:
        return mask
    crop = mask[box]  # a view: edits land in ``mask``
    if crop.size > max_box_voxels or not _HAS_SKIMAGE:  # (MONAI's labelling needs scikit-image)
        largest_component_by_slabs(crop)
        return mask
    kept = KeepLargestConnectedComponent(applied_labels=[1], is_onehot=False, connectivity=None)(
        torch.from_numpy(np.ascontiguousarray(crop, dtype=np.uint8))[None]
    )
    crop[~np.asarray(kept[0]).astype(bool)] = 0
    return mask
