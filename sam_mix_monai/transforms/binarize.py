"""Label binarisation: LiTS tumour (2) and liver (1) both become liver (1).

Example:
    >>> import numpy as np
    >>> BinarizeLabel()(np.array([0, 1, 2, 0])).tolist()
    [0, 1, 1, 0]
"""

from __future__ import annotations

from typing import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends


class BinarizeLabel(Transform):
    """Map every label value greater than zero to 1 (uint8).

    Args:
        values: the label values that count as foreground; ``None`` means any value > 0.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, values: tuple[int, ...] | None = None) -> None:
        self.values = values

    def __call__(self, label: NdarrayOrTensor) -> NdarrayOrTensor:
        """Binarise ``label`` (any shape); returns uint8 of the same type."""
        if isinstance(label, torch.Tensor):
            fg = label > 0 if self.values is None else torch.isin(label, torch.as_tensor(self.values))
            return fg.to(torch.uint8)
        arr = np.asarray(label)
        fg = arr > 0 if self.values is None else np.isin(arr, self.values)
        return fg.astype(np.uint8)


class BinarizeLabeld(MapTransform):
    """Dictionary form of :class:`BinarizeLabel`.

    Args:
        keys: keys of the label maps.
        values: foreground values; ``None`` means any value > 0.
        allow_missing_keys: do not raise when a key is absent.
    """

    backend = BinarizeLabel.backend

    def __init__(
        self, keys: KeysCollection, values: tuple[int, ...] | None = None, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.binarize = BinarizeLabel(values)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.binarize(d[key])
        return d
