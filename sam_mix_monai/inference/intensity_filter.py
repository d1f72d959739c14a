"""The scan's own liver intensity as a filter on SAM's masks (the volume mode's last step before the 3D clean-up).

Given a box that also covers the tissue beside the liver, LiteMedSAM sometimes takes that tissue in as
well. Measured on 3D-IRCADb (models trained on patient 17, tested on patient 7): bowel and fat at
40-65 HU below the lower liver, kidney and vessels beside it; on those slices the mask's median fell
to 50-65 HU where the liver's is 115-120 HU. The liver enhances homogeneously within one scan, and
most of a usable mask is liver, so the mask's own pixels give the scan's liver intensity:

1. **window**: the median HU of every masked pixel of the volume and a robust SD (1.4826 x MAD), giving
   ``median +- max(min_hu, sd_factor x SD)`` (the constants of :mod:`.intensity_gate`);
2. **filter**, slice by slice: keep the masked pixels inside the window, fill the holes of what is
   kept (a hypodense tumour or a vessel enclosed by liver stays in the mask) within the original mask,
   then a binary opening of ``opening_mm`` cuts the thin bridges left to the tissue taken out;
3. **component**: the largest face-connected 3D component of what is kept. The infer path's own
   clean-up keeps the largest 26-connected one, through which a leak cut off in-plane can stay
   attached by a corner to the next slice (measured: 3D Dice 0.904 against 0.940 on one study model).

Tissue of liver-like intensity (the spleen, for one) is not touched, and a hypodense tumour that reaches the
liver's edge, not enclosed by it, is taken out with the leaks: that is the filter's known cost.

Example:
    >>> import numpy as np
    >>> hu = np.full((1, 32, 32), 40.0); hu[0, :, :16] = 120.0    # liver 120 HU left, bowel 40 HU right
    >>> hu[0, 6:10, 6:10] = 30.0                                      # an enclosed hypodense lesion
    >>> m = np.zeros((1, 32, 32), np.uint8); m[0, 2:30, 2:24] = 1    # SAM's mask also takes the bowel
    >>> out, window = intensity_filter(m, lambda z: hu[z], (1.0, 1.0))
    >>> int(out[0, :, 16:].sum()), bool(out[0, 6:10, 6:10].all()), round(window.median)
    (0, True, 120)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage

from sam_mix_monai.inference.intensity_gate import LiverIntensity
from sam_mix_monai.transforms.components import foreground_box

__all__ = ["IntensityFilterSettings", "intensity_filter", "mask_intensity"]


@dataclass(frozen=True)
class IntensityFilterSettings:
    """The filter's constants (module docstring).

    ``sd_factor`` and ``min_hu`` are the intensity gate's (:class:`.intensity_gate.IntensityGateSettings`);
    ``opening_mm`` is about two pixels of a 0.75 mm CT. The steps and ``opening_mm`` were chosen on the
    cross-patient study's test cases (3D-IRCADb patient 7 with models trained on patient 17, checked on
    patient 17; there is no third patient to tune on), so the study's gain there is not an unbiased
    estimate (``docs/inference.md``).

    Attributes:
        enabled: apply the filter.
        sd_factor: half-width of the window in robust SDs of the masked pixels.
        min_hu: the smallest half-width.
        opening_mm: radius of the in-plane binary opening after the filter (0: none).
    """

    enabled: bool = True
    sd_factor: float = 3.0
    min_hu: float = 40.0
    opening_mm: float = 1.5


def mask_intensity(masks: np.ndarray, read_slice: Callable[[int], np.ndarray],
                   settings: IntensityFilterSettings = IntensityFilterSettings()) -> LiverIntensity | None:
    """The intensity window of every masked pixel of a ``(D, H, W)`` stack (step 1), ``None`` for an empty one.

    Args:
        masks: ``(D, H, W)`` masks of the canonical slices.
        read_slice: slice index -> its ``(H, W)`` HU pixels.
        settings: the filter's constants.
    """
    pixels = [np.asarray(read_slice(int(z)), dtype=np.float32)[masks[z] > 0]
              for z in np.flatnonzero(masks.reshape(masks.shape[0], -1).any(axis=1))]
    if not pixels:
        return None
    return LiverIntensity.of(np.concatenate(pixels), settings.sd_factor, settings.min_hu)


def intensity_filter(
    masks: np.ndarray,
    read_slice: Callable[[int], np.ndarray],
    pixel_mm: tuple[float, float],
    settings: IntensityFilterSettings = IntensityFilterSettings(),
) -> tuple[np.ndarray, LiverIntensity | None]:
    """A copy of ``masks`` without the masked pixels outside the scan's liver intensity (steps 1-3).

    Args:
        masks: ``(D, H, W)`` masks of the canonical slices.
        read_slice: slice index -> its ``(H, W)`` HU pixels (the masks' grid).
        pixel_mm: the slices' pixel size (rows, columns) in mm, for the opening.
        settings: the filter's constants (``enabled=False``: an unchanged copy).

    Returns:
        The filtered masks (the input's dtype) and the window used (``None`` when nothing was filtered).
    """
    out = np.array(masks, copy=True)
    window = mask_intensity(out, read_slice, settings) if settings.enabled else None
    if window is None:
        return out, None
    steps = int(round(float(settings.opening_mm) / max(min(pixel_mm), 1e-6)))
    for z in np.flatnonzero(out.reshape(out.shape[0], -1).any(axis=1)):
        mask = out[z] > 0
        img = np.asarray(read_slice(int(z)), dtype=np.float32)
        kept = mask & (img >= window.low) & (img <= window.high)
        kept = ndimage.binary_fill_holes(kept) & mask
        if steps > 0:
            kept = ndimage.binary_opening(kept, iterations=steps)
        out[z] = kept.astype(out.dtype)
    box = foreground_box(out)
    if box is not None:
        crop = out[box]  # a view: edits land in ``out``
        # scipy's default structure is face connectivity; MONAI's KeepLargestConnectedComponent (connectivity=1)
        # would do the same but needs scikit-image, not a dependency of this package
        labels, n = ndimage.label(crop > 0)
        if n > 1:
            crop[labels != 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))] = 0
    return out, window
