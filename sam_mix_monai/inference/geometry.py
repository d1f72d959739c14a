"""How a volume's array axes map to canonical RAS, for reading axial slabs and writing predictions back.

Inference streams a volume slab by slab along canonical (RAS) z. :class:`AxialGeometry` holds the
nibabel orientation of the input grid (``io_orientation`` of its affine, the transform MONAI's
:class:`~monai.transforms.Orientation` applies as well) and provides an exact inverse pair:

* :meth:`AxialGeometry.read_slab` crops canonical slices ``[z0, z1)`` from the *original* array (the
  crop is taken on the array axis that runs along canonical z, so a memory-mapped NIfTI is only read
  there), reorients the slab to RAS and returns display-convention slices ``(k, H, W)`` exactly like
  :class:`~sam_mix_monai.transforms.AxialSlice` (``keep_rate="all"``), the slicing used in training;
* :meth:`AxialGeometry.write_slab` takes display-convention masks of the same slices, undoes
  :func:`~sam_mix_monai.transforms.display_to_ras` and the RAS reorientation, and writes them into an
  array on the original grid (original shape, axis order and directions).

The output therefore needs no resampling: it has the input's shape and is saved with the input's
affine.

Example:
    >>> import numpy as np
    >>> aff = np.diag([-0.8, -0.8, 2.5, 1.0])  # LPS header
    >>> geo = AxialGeometry(aff, (4, 3, 5))
    >>> geo.ras_shape, geo.depth
    ((4, 3, 5), 5)
    >>> vol = np.arange(60).reshape(4, 3, 5)
    >>> out = np.zeros_like(vol)
    >>> geo.write_slab(out, geo.read_slab(vol, 1, 4), 1, 4)
    >>> bool((out[..., 1:4] == vol[..., 1:4]).all())
    True
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

from sam_mix_monai.transforms import display_to_ras, ras_to_display

__all__ = ["AxialGeometry"]

_RAS = axcodes2ornt(("R", "A", "S"))


class AxialGeometry:
    """Orientation of a ``(X, Y, Z)`` grid relative to RAS, and slab I/O along canonical z.

    Args:
        affine: 4x4 voxel-to-RAS-world matrix of the grid.
        shape: spatial shape of the grid (array order).
    """

    def __init__(self, affine: np.ndarray, shape: Sequence[int]) -> None:
        self.affine = np.asarray(affine, dtype=np.float64)
        self.shape = tuple(int(s) for s in shape)
        if len(self.shape) != 3:
            raise ValueError(f"expected a 3D spatial shape, got {self.shape}")
        self.ornt = io_orientation(self.affine)  # row i: RAS axis of array axis i, and its direction
        self.inverse_ornt = ornt_transform(_RAS, self.ornt)  # RAS array -> original array
        self.axis = int(np.flatnonzero(self.ornt[:, 0] == 2)[0])  # array axis along canonical z
        self.flipped = bool(self.ornt[self.axis, 1] < 0)  # that axis runs inferior-wards
        self.depth = self.shape[self.axis]
        self.ras_shape = tuple(self.shape[int(i)] for i in np.argsort(self.ornt[:, 0]))

    @property
    def slice_shape(self) -> tuple[int, int]:
        """(H, W) of a display-convention axial slice: (RAS Y, RAS X)."""
        return self.ras_shape[1], self.ras_shape[0]

    def array_range(self, z0: int, z1: int) -> tuple[int, int]:
        """Indices ``[lo, hi)`` on :attr:`axis` of the canonical slices ``[z0, z1)``."""
        if not 0 <= z0 < z1 <= self.depth:
            raise ValueError(f"slice range [{z0}, {z1}) outside [0, {self.depth})")
        return (self.depth - z1, self.depth - z0) if self.flipped else (z0, z1)

    def _index(self, lo: int, hi: int) -> tuple[slice, ...]:
        idx = [slice(None)] * 3
        idx[self.axis] = slice(lo, hi)
        return tuple(idx)

    def read_slab(self, volume: np.ndarray, z0: int, z1: int) -> np.ndarray:
        """Display-convention slices ``(z1 - z0, H, W)`` of canonical slices ``[z0, z1)``.

        Args:
            volume: the original ``(X, Y, Z)`` array (may be memory-mapped; only the slab is read).
            z0, z1: canonical (RAS, inferior to superior) slice range.

        Returns:
            A new C-contiguous array (the slab only), same dtype as ``volume``.
        """
        slab = np.asarray(volume[self._index(*self.array_range(z0, z1))])
        return np.ascontiguousarray(ras_to_display(apply_orientation(slab, self.ornt)))

    def write_slab(self, out: np.ndarray, slices: np.ndarray, z0: int, z1: int) -> None:
        """Write display-convention ``slices`` of canonical ``[z0, z1)`` into ``out`` on the original grid.

        Args:
            out: array of the original shape, written in place.
            slices: ``(z1 - z0, H, W)`` display-convention values (e.g. a mask).
            z0, z1: canonical slice range of ``slices``.
        """
        ras = display_to_ras(np.asarray(slices))
        out[self._index(*self.array_range(z0, z1))] = apply_orientation(ras, self.inverse_ornt)

    def to_ras(self, volume: np.ndarray) -> np.ndarray:
        """View of an original-grid array in RAS axis order (flips and transposes, no copy)."""
        return apply_orientation(np.asarray(volume), self.ornt)

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres."""
        return float(abs(np.linalg.det(self.affine[:3, :3]))) / 1000.0

    @property
    def ras_spacing(self) -> tuple[float, float, float]:
        """Voxel spacing (mm) along RAS x, y, z."""
        sp = np.sqrt((self.affine[:3, :3] ** 2).sum(0))
        return tuple(float(sp[int(i)]) for i in np.argsort(self.ornt[:, 0]))
