"""Slice-level "liver present" labels from a stack of 2D masks.

Example:
    >>> import numpy as np
    >>> masks = np.zeros((3, 4, 4), np.uint8); masks[1, 2, 2] = 1
    >>> SliceLabel()(masks).tolist()
    [0, 1, 0]
"""

from __future__ import annotations

from typing import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends


class SliceLabel(Transform):
    """Return 1 for every slice (first axis) whose mask has at least ``min_pixels`` foreground.

    Args:
        min_pixels: foreground pixels needed for a slice to count as liver-positive.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, min_pixels: int = 1) -> None:
        self.min_pixels = int(min_pixels)

    def __call__(self, masks: NdarrayOrTensor) -> NdarrayOrTensor:
        """Label a stack ``(N, H, W)`` of masks; returns ``(N,)`` uint8."""
        if isinstance(masks, torch.Tensor):
            counts = (masks > 0).flatten(1).sum(1)
            return (counts >= self.min_pixels).to(torch.uint8)
        counts = (np.asarray(masks) > 0).reshape(len(masks), -1).sum(1)
        return (counts >= self.min_pixels).astype(np.uint8)


class SliceLabeld(MapTransform):
    """Dictionary form of :class:`SliceLabel`: writes ``data[output_key]`` from ``data[key]``.

    Args:
        keys: the mask key (exactly one).
        output_key: where to store the per-slice labels.
        min_pixels: foreground pixels needed for a positive slice.
        allow_missing_keys: do not raise when the key is absent.
    """

    backend = SliceLabel.backend

    def __init__(
        self,
        keys: KeysCollection,
        output_key: str = "slice_label",
        min_pixels: int = 1,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError("SliceLabeld takes exactly one mask key")
        self.output_key = output_key
        self.labeler = SliceLabel(min_pixels)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key] = self.labeler(d[key])
        return d
