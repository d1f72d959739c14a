"""CT transforms (first stage of the data flow), in MONAI's array and dictionary forms.

One transform per module:

* :mod:`.window` -- HU window to [0, 1] (:class:`HUWindow`, :class:`HUWindowd`)
* :mod:`.binarize` -- LiTS labels {0,1,2} to liver {0,1}
* :mod:`.slice_label` -- per-slice "liver present" label
* :mod:`.axial` -- canonical axial slicing with ``keep_rate``
* :mod:`.pipeline` -- the composed volume-to-slices pipeline
* :mod:`.components` -- 3D largest connected component of a predicted mask (inference and ``volume3d``)
"""

from sam_mix_monai.transforms.axial import (
    DEFAULT_KEEP_RATE,
    AxialSlice,
    AxialSliced,
    central_slice_range,
    display_to_ras,
    parse_keep_rate,
    ras_to_display,
)
from sam_mix_monai.transforms.binarize import BinarizeLabel, BinarizeLabeld
from sam_mix_monai.transforms.pipeline import SlicingConfig, volume_to_slices_transform
from sam_mix_monai.transforms.slice_label import SliceLabel, SliceLabeld
from sam_mix_monai.transforms.window import DEFAULT_WINDOW, HUWindow, HUWindowd, window_bounds

__all__ = [
    "DEFAULT_KEEP_RATE",
    "DEFAULT_WINDOW",
    "AxialSlice",
    "AxialSliced",
    "BinarizeLabel",
    "BinarizeLabeld",
    "HUWindow",
    "HUWindowd",
    "SliceLabel",
    "SliceLabeld",
    "SlicingConfig",
    "central_slice_range",
    "display_to_ras",
    "parse_keep_rate",
    "ras_to_display",
    "volume_to_slices_transform",
    "window_bounds",
]
