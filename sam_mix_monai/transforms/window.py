"""HU windowing of CT to [0, 1].

A thin, CT-named layer over MONAI's :class:`~monai.transforms.ScaleIntensityRange`
(centre/width instead of a_min/a_max, always clipped).

Example:
    >>> import torch
    >>> w = HUWindow(center=40, width=400)
    >>> w(torch.tensor([[-1000.0, -160.0, 40.0, 240.0, 2000.0]])).tolist()
    [[0.0, 0.0, 0.5, 1.0, 1.0]]
"""

from __future__ import annotations

import math

from typing import Hashable, Mapping, Sequence

from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, ScaleIntensityRange, Transform

#: The paper's abdominal window: centre 40 HU, width 400 HU, i.e. [-160, 240].
DEFAULT_WINDOW: tuple[float, float] = (40.0, 400.0)


def window_bounds(center: float, width: float) -> tuple[float, float]:
    """Return the HU interval ``(low, high)`` of a window.

    Args:
        center: window centre in HU.
        width: window width in HU (must be positive).
    """
    if not (math.isfinite(center) and math.isfinite(width)):
        raise ValueError(f"window centre and width must be finite numbers, got {center:g}, {width:g}")
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    return center - width / 2.0, center + width / 2.0


def check_window(window: tuple[float, float] | None, flag: str = "--window") -> None:
    """Require a finite centre and a finite width > 0 (``None`` passes).

    Raises:
        InputError: naming ``flag`` and the bad value.
    """
    from sam_mix_monai.utils.errors import InputError

    if window is None:
        return
    try:
        c, w = (float(v) for v in window)
    except (TypeError, ValueError):
        raise InputError(None, f"{flag}: expected two numbers CENTER WIDTH, got {window!r}") from None
    if not (math.isfinite(c) and math.isfinite(w)):
        raise InputError(None, f"{flag} {c:g} {w:g}: centre and width must be finite numbers")
    if w <= 0:
        raise InputError(None, f"{flag}: width must be positive (got {w:g})")


class HUWindow(Transform):
    """Clip CT to a HU window and scale it linearly to [0, 1].

    Args:
        center: window centre in HU (default 40).
        width: window width in HU (default 400).
    """

    backend = ScaleIntensityRange.backend

    def __init__(self, center: float = DEFAULT_WINDOW[0], width: float = DEFAULT_WINDOW[1]) -> None:
        self.center, self.width = float(center), float(width)
        low, high = window_bounds(self.center, self.width)
        self._scale = ScaleIntensityRange(a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Window ``img`` (any shape, values in HU)."""
        return self._scale(img)


class HUWindowd(MapTransform):
    """Dictionary form of :class:`HUWindow`.

    Args:
        keys: keys of the CT images to window.
        center: window centre in HU.
        width: window width in HU.
        allow_missing_keys: do not raise when a key is absent.
    """

    backend = HUWindow.backend

    def __init__(
        self,
        keys: KeysCollection,
        center: float = DEFAULT_WINDOW[0],
        width: float = DEFAULT_WINDOW[1],
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.window = HUWindow(center, width)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.window(d[key])
        return d


__all__: Sequence[str] = ["DEFAULT_WINDOW", "HUWindow", "HUWindowd", "window_bounds"]
