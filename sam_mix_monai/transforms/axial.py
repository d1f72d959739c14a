"""Axial slicing of a CT volume, canonicalised to RAS, into a stack of 2D slices.

Slices are returned in the radiological display convention, so that a stored slice
looks like it does in any DICOM viewer:

* rows run anterior (row 0) to posterior,
* columns run from the patient's right (column 0) to the patient's left.

For a channel-first RAS volume ``v`` of shape ``(1, X, Y, Z)`` this is
``slice_z = v[0, ::-1, ::-1, z].T`` (see :func:`ras_to_display` and its inverse
:func:`display_to_ras`, used to put predictions back onto the volume grid).

Example:
    >>> central_slice_range(100, 0.3)
    range(35, 65)
    >>> central_slice_range(100, "all")
    range(0, 100)
"""

from __future__ import annotations

from typing import Hashable, Mapping, Union

import numpy as np
import torch
from nibabel.orientations import io_orientation
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, Orientation, SpatialCrop, Transform
from monai.utils import TransformBackends

KeepRate = Union[float, str]

#: The paper's default: keep the central 30% of each volume's axial slices.
DEFAULT_KEEP_RATE = 0.3


def parse_keep_rate(value: KeepRate) -> float:
    """Turn ``"all"`` or a number in (0, 1] into a fraction.

    Args:
        value: ``"all"`` or a fraction of slices to keep.

    Raises:
        ValueError: for anything else.
    """
    if isinstance(value, str):
        if value.strip().lower() == "all":
            return 1.0
        value = float(value)
    rate = float(value)
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"keep rate must be in (0, 1] or 'all', got {value!r}")
    return rate


def central_slice_range(depth: int, keep_rate: KeepRate = DEFAULT_KEEP_RATE) -> range:
    """Indices of the central ``keep_rate`` share of ``depth`` slices.

    Args:
        depth: number of axial slices in the volume.
        keep_rate: fraction of slices to keep (``"all"`` keeps every slice).

    Returns:
        A contiguous range of ``max(1, round(depth * keep_rate))`` slice indices,
        centred in the volume.
    """
    rate = parse_keep_rate(keep_rate)
    n_keep = depth if rate >= 1.0 else max(1, min(depth, int(round(depth * rate))))
    start = (depth - n_keep) // 2
    return range(start, start + n_keep)


def ras_to_display(volume: NdarrayOrTensor) -> NdarrayOrTensor:
    """Turn a RAS array ``(..., X, Y, Z)`` into display slices ``(..., Z, H=Y, W=X)``.

    Args:
        volume: array whose last three axes are RAS (x, y, z).
    """
    if isinstance(volume, torch.Tensor):
        return volume.flip(-3, -2).permute(*range(volume.ndim - 3), -1, -2, -3)
    arr = np.asarray(volume)[..., ::-1, ::-1, :]
    return np.moveaxis(arr, (-1, -2, -3), (-3, -2, -1))


def display_to_ras(slices: NdarrayOrTensor) -> NdarrayOrTensor:
    """Inverse of :func:`ras_to_display`: ``(..., Z, H, W)`` back to ``(..., X, Y, Z)``."""
    if isinstance(slices, torch.Tensor):
        return slices.permute(*range(slices.ndim - 3), -1, -2, -3).flip(-3, -2)
    arr = np.moveaxis(np.asarray(slices), (-3, -2, -1), (-1, -2, -3))
    return arr[..., ::-1, ::-1, :]


def axial_axis(volume: NdarrayOrTensor) -> tuple[int, bool]:
    """The spatial array axis of a ``(1, X, Y, Z)`` volume that runs along canonical z, and
    whether it runs inferior-wards (flipped). Plain arrays are taken as RAS already."""
    if isinstance(volume, MetaTensor):
        ornt = io_orientation(np.asarray(volume.affine, dtype=np.float64))
        axis = int(np.flatnonzero(ornt[:, 0] == 2)[0])
        return axis, bool(ornt[axis, 1] < 0)
    return 2, False


class AxialSlice(Transform):
    """Select central axial slices of a channel-first volume, canonicalise them to RAS, and stack them.

    Input ``(1, X, Y, Z)``, a MetaTensor in any header orientation (or a plain RAS
    array); output ``(N, H, W)`` display-convention slices, where ``N`` follows
    ``keep_rate`` counted along canonical (RAS) z.

    The kept slab is cropped on the array axis that maps to canonical z *before*
    MONAI's :class:`~monai.transforms.Orientation` reorients it to RAS. The result
    equals orienting the whole volume first, but only the kept slices are copied.

    Args:
        keep_rate: fraction of central slices to keep, or ``"all"``.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, keep_rate: KeepRate = DEFAULT_KEEP_RATE) -> None:
        self.keep_rate = parse_keep_rate(keep_rate)
        self._orient = Orientation(axcodes="RAS", labels=None)

    def indices(self, depth: int) -> range:
        """Canonical (RAS z) indices this transform keeps for a volume of ``depth`` slices."""
        return central_slice_range(depth, self.keep_rate)

    def depth(self, volume: NdarrayOrTensor) -> int:
        """Number of axial slices of ``volume`` (along canonical z)."""
        return int(volume.shape[1 + axial_axis(volume)[0]])

    def __call__(self, volume: NdarrayOrTensor) -> NdarrayOrTensor:
        """Slice ``volume`` of shape ``(1, X, Y, Z)``."""
        if volume.ndim != 4 or volume.shape[0] != 1:
            raise ValueError(f"expected a channel-first volume (1, X, Y, Z), got shape {tuple(volume.shape)}")
        axis, flipped = axial_axis(volume)
        depth = volume.shape[1 + axis]
        idx = self.indices(depth)
        lo, hi = (depth - idx.stop, depth - idx.start) if flipped else (idx.start, idx.stop)
        roi = [slice(None)] * 3
        roi[axis] = slice(lo, hi)
        if isinstance(volume, MetaTensor):
            sub = self._orient(SpatialCrop(roi_slices=roi)(volume))  # crop keeps the affine right
            return ras_to_display(sub.as_tensor()[0]).contiguous()
        sub = volume[(0, *roi)]
        if isinstance(sub, torch.Tensor):
            return ras_to_display(sub).contiguous()
        return np.ascontiguousarray(ras_to_display(sub))


class AxialSliced(MapTransform):
    """Dictionary form of :class:`AxialSlice`; also stores the kept indices.

    Args:
        keys: keys of the volumes (image and label) to slice identically.
        keep_rate: fraction of central slices to keep, or ``"all"``.
        index_key: where to store the kept RAS z indices as an int64 array.
        allow_missing_keys: do not raise when a key is absent.
    """

    backend = AxialSlice.backend

    def __init__(
        self,
        keys: KeysCollection,
        keep_rate: KeepRate = DEFAULT_KEEP_RATE,
        index_key: str = "slice_index",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.slicer = AxialSlice(keep_rate)
        self.index_key = index_key

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        depth = None
        for key in self.key_iterator(d):
            n = self.slicer.depth(d[key])
            if depth is not None and n != depth:
                raise ValueError(f"'{key}' has {n} axial slices, expected {depth}")
            depth = n
            d[key] = self.slicer(d[key])
        if depth is not None:
            d[self.index_key] = np.asarray(self.slicer.indices(depth), dtype=np.int64)
        return d
