"""The composed volume-to-slices pipeline used by the converter (and by inference).

``{"image": (1,X,Y,Z) HU MetaTensor, "label": (1,X,Y,Z)}`` becomes
``{"image": (N,S,S) float32 in [0,1], "label": (N,S,S) uint8 {0,1},
"slice_label": (N,) uint8, "slice_index": (N,) int64}``:

1. :class:`~.axial.AxialSliced` keeps the central ``keep_rate`` share of axial slices
   and reorients them to RAS with :class:`monai.transforms.Orientation` (the kept slab
   is cropped first, so only it is copied; equal to orienting the volume first);
3. :class:`~.binarize.BinarizeLabeld` merges tumour (2) into liver (1);
4. :class:`~.window.HUWindowd` windows the CT to [0, 1];
5. :class:`monai.transforms.Resized` to ``image_size`` (bilinear image, nearest mask);
6. :class:`~.slice_label.SliceLabeld` derives the per-slice label from the resized mask.

Slicing comes before windowing and resizing so that only kept slices are processed.
"""

from __future__ import annotations

from typing import Union

from monai.transforms import CastToTyped, Compose, Resized
from pydantic import BaseModel, ConfigDict, Field, field_validator

from sam_mix_monai.transforms.axial import DEFAULT_KEEP_RATE, AxialSliced, parse_keep_rate
from sam_mix_monai.transforms.binarize import BinarizeLabeld
from sam_mix_monai.transforms.slice_label import SliceLabeld
from sam_mix_monai.transforms.window import DEFAULT_WINDOW, HUWindowd


class SlicingConfig(BaseModel):
    """Preprocessing parameters; stored with every converted file.

    Attributes:
        window_center: HU window centre (paper: 40).
        window_width: HU window width (paper: 400).
        keep_rate: share of central axial slices kept, 1.0 meaning all (paper: 0.3).
        image_size: side of the square output slices (paper: 256).
    """

    model_config = ConfigDict(extra="forbid")

    window_center: float = Field(DEFAULT_WINDOW[0], allow_inf_nan=False)
    window_width: float = Field(DEFAULT_WINDOW[1], gt=0, allow_inf_nan=False)
    keep_rate: float = DEFAULT_KEEP_RATE
    image_size: int = Field(256, ge=16, le=2048)

    @field_validator("keep_rate", mode="before")
    @classmethod
    def _keep_rate(cls, v: Union[float, str]) -> float:
        return parse_keep_rate(v)


def volume_to_slices_transform(cfg: SlicingConfig | None = None, with_label: bool = True) -> Compose:
    """Build the volume-to-slices pipeline.

    Args:
        cfg: preprocessing parameters (paper defaults when ``None``).
        with_label: also process a ``"label"`` key.

    Returns:
        A MONAI :class:`~monai.transforms.Compose`.
    """
    cfg = cfg or SlicingConfig()
    keys = ["image", "label"] if with_label else ["image"]
    size = (cfg.image_size, cfg.image_size)
    xforms = [
        AxialSliced(keys=keys, keep_rate=cfg.keep_rate),
        HUWindowd(keys="image", center=cfg.window_center, width=cfg.window_width),
        Resized(keys=keys, spatial_size=size, mode=("bilinear", "nearest")[: len(keys)]),
        CastToTyped(keys=keys, dtype=("float32", "uint8")[: len(keys)]),
    ]
    if with_label:
        xforms.insert(1, BinarizeLabeld(keys="label"))
        xforms.append(SliceLabeld(keys="label", output_key="slice_label"))
    return Compose(xforms)
