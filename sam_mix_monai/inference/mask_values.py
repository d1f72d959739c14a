"""What a predicted mask may hold before it is scored: 0 and one foreground value, finite.

``sam-mix evaluate --pred`` used to binarise anything as ``!= 0``: a label map {0, 3, 7} became one
mask, a probability map (every voxel > 0) a mask of the whole volume (Dice 0.07 with no warning), and
a NaN voxel foreground. :func:`binary_prediction` refuses those, naming the file and the values, and
binarises at a user's ``threshold`` instead when one is given.
"""

from __future__ import annotations

import math

import torch

from sam_mix_monai.utils.errors import InputError, PathLike

__all__ = ["binary_prediction"]


def binary_prediction(arr: torch.Tensor, path: PathLike, threshold: float | None = None) -> torch.Tensor:
    """The foreground of a predicted mask (``bool``), after checking its values.

    Args:
        arr: the mask's voxels.
        path: the file, named in errors.
        threshold: foreground is ``arr >= threshold`` (probability or score maps); ``None``: ``arr``
            must be binary (0 and at most one other value) and foreground is ``arr != 0``.

    Raises:
        InputError: NaN or infinite voxels; without ``threshold``, non-integer values (a probability
            map) or more than one non-zero value (a label map).
    """
    t = arr if arr.is_floating_point() else arr.to(torch.int64)
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        n = int((~torch.isfinite(t)).sum())
        raise InputError(path, f"prediction holds {n} NaN or infinite voxel(s): not a mask")
    if threshold is not None:
        if not math.isfinite(threshold):
            raise InputError(None, f"--threshold: expected a finite number, got {threshold}")
        return t >= threshold
    if t.is_floating_point() and not bool((t == t.round()).all()):
        lo, hi = float(t.min()), float(t.max())
        raise InputError(path, f"prediction has non-integer values in [{lo:.3g}, {hi:.3g}]: a probability map, "
                               "not a mask (pass --threshold 0.5 to binarise it)")
    values = torch.unique(t)
    nonzero = values[values != 0]
    if len(nonzero) > 1:
        shown = ", ".join(f"{v:g}" for v in values[:6].tolist()) + (", ..." if len(values) > 6 else "")
        raise InputError(path, f"prediction is not binary: values {{{shown}}} (a label map?); pass --threshold T "
                               "to count values >= T as liver")
    return t != 0
