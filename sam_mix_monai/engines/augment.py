"""Weak and strong views of a batch of slices (FixMatch), on tensors, batched.

* **weak**: horizontal flip (probability ``flip_prob``) and an integer translation of up to
  ``shift`` of the side (zero padding), applied exactly to the image and, when given, its mask;
* **strong** (applied on top of the weak view): one random affine (rotation, anisotropic scaling,
  shear) through MONAI's batched :class:`~monai.networks.layers.AffineTransform`, then
  ``strong_ops`` intensity operations drawn at random (:class:`~monai.transforms.SomeOf`) from a
  pool of MONAI transforms (RandAugment-like: gamma/contrast, Gaussian noise, intensity scaling,
  intensity shift, Gaussian blur, histogram shift) at strength ``magnitude``, then Cutout (one
  blanked square, FixMatch) with :class:`~monai.transforms.RandCoarseDropout`.

The strong geometry moves any extra maps (e.g. the weak view's mask probabilities) with the same
matrix, and a ``valid`` map marks the pixels that stay inside the frame, so a weak-view target
lands where the strong view sees it ("geometry-aware" consistency).

Randomness is explicit: every call takes a ``seed`` (the trainer derives it from the run seed and
the iteration), so a run resumed at an epoch boundary draws the very same views; and with
``part=(rank, world_size)`` a rank draws its share of the global batch's views, so K processes
augment exactly as one process would.
The geometry is batched (MONAI's per-sample ``RandAffined`` costs about 25 ms per 128-pixel slice on
CPU, more than the network step); the cheap intensity operations run per sample.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from monai.networks.layers import AffineTransform
from monai.transforms import (
    Compose,
    RandAdjustContrast,
    RandCoarseDropout,
    RandGaussianNoise,
    RandGaussianSmooth,
    RandHistogramShift,
    RandScaleIntensity,
    RandShiftIntensity,
    SomeOf,
)

__all__ = ["WeakStrongAugment"]

_MAX_SEED = 2**32 - 1


def _uniform(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _as_tensor(x: torch.Tensor) -> torch.Tensor:
    return x.as_tensor() if hasattr(x, "as_tensor") else x


class WeakStrongAugment:
    """Weak and strong views for the labelled and unlabelled steps.

    Args:
        flip_prob: horizontal flip probability of the weak view.
        shift: maximum translation of the weak view (fraction of the side).
        rotate_deg: maximum rotation of the strong view (degrees).
        scale: maximum relative scaling of the strong view (per axis).
        shear: maximum shear of the strong view.
        strong_ops: intensity operations drawn per strong view.
        magnitude: strength of the intensity operations in [0, 1].
        cutout: blank one random square of the strong view.

    Example:
        >>> aug = WeakStrongAugment()
        >>> weak = aug.weak(torch.rand(4, 1, 64, 64), seed=0)["image"]
        >>> strong = aug.strong({"image": weak}, seed=1)["image"]
    """

    def __init__(
        self,
        flip_prob: float = 0.5,
        shift: float = 0.0625,
        rotate_deg: float = 15.0,
        scale: float = 0.15,
        shear: float = 0.1,
        strong_ops: int = 2,
        magnitude: float = 0.5,
        cutout: bool = True,
    ) -> None:
        self.flip_prob = float(flip_prob)
        self.shift = float(shift)
        self.rotate = math.radians(float(rotate_deg))
        self.scale = float(scale)
        self.shear = float(shear)
        self.strong_ops = int(strong_ops)
        self.magnitude = float(magnitude)
        self.cutout = bool(cutout)
        self._warp = AffineTransform(normalized=False, zero_centered=True, mode="bilinear", padding_mode="zeros")
        self._intensity: dict[tuple[int, int], Compose] = {}

    def weak(
        self, image: torch.Tensor, mask: torch.Tensor | None = None, seed: int = 0, flip: bool = True,
        part: tuple[int, int] = (0, 1),
    ) -> dict[str, torch.Tensor]:
        """Weak view of a batch: flip and integer translation (exact for masks).

        Args:
            image: (B, 1, H, W) slices.
            mask: optional (B, 1, H, W) masks, moved with the image.
            seed: random seed of this call.
            flip: allow the horizontal flip.
            part: ``(rank, world_size)``: the batch is this rank's share (samples ``rank::world_size``)
                of a global batch; the draws are those of the global batch, so K processes together
                produce the views one process would.

        Returns:
            ``{"image": ..., "mask": ...}`` (``mask`` only when given).
        """
        g = torch.Generator().manual_seed(int(seed) % _MAX_SEED)
        b, _, h, w = image.shape
        rank, world = part
        n = b * world
        flips = (torch.rand(n, generator=g) < self.flip_prob)[rank::world]
        flips = flips if flip else torch.zeros(b, dtype=torch.bool)
        my, mx = int(round(self.shift * h)), int(round(self.shift * w))
        dy = torch.randint(-my, my + 1, (n,), generator=g)[rank::world]
        dx = torch.randint(-mx, mx + 1, (n,), generator=g)[rank::world]
        out = {}
        for key, x in (("image", image), ("mask", mask)):
            if x is None:
                continue
            x = torch.where(flips.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)
            if my or mx:
                padded = F.pad(x, (mx, mx, my, my))
                x = torch.stack([padded[i, :, my - int(dy[i]) : my - int(dy[i]) + h, mx - int(dx[i]) : mx - int(dx[i]) + w]
                                 for i in range(b)])
            out[key] = x
        return out

    def _matrices(self, g: torch.Generator, n: int) -> torch.Tensor:
        """(n, 3, 3) random rotation @ shear @ scale matrices, in (row, column) pixel coordinates."""
        a = _uniform(g, n, -self.rotate, self.rotate)
        sy, sx = 1.0 + _uniform(g, n, -self.scale, self.scale), 1.0 + _uniform(g, n, -self.scale, self.scale)
        sh = _uniform(g, n, -self.shear, self.shear)
        m = torch.zeros(n, 3, 3)
        c, s = torch.cos(a), torch.sin(a)
        # R @ [[1, sh], [0, 1]] @ diag(sy, sx)
        m[:, 0, 0], m[:, 0, 1] = c * sy, (c * sh - s) * sx
        m[:, 1, 0], m[:, 1, 1] = s * sy, (s * sh + c) * sx
        m[:, 2, 2] = 1.0
        return m

    def _intensity_ops(self, h: int, w: int) -> Compose:
        if (h, w) not in self._intensity:
            m = self.magnitude
            pool = [
                RandAdjustContrast(prob=1.0, gamma=(max(0.1, 1.0 - 0.6 * m), 1.0 + m)),
                RandGaussianNoise(prob=1.0, std=0.08 * m),
                RandScaleIntensity(prob=1.0, factors=0.4 * m),
                RandShiftIntensity(prob=1.0, offsets=0.2 * m),
                RandGaussianSmooth(prob=1.0, sigma_x=(0.25, 0.25 + 1.5 * m), sigma_y=(0.25, 0.25 + 1.5 * m)),
                RandHistogramShift(prob=1.0, num_control_points=(5, 10)),
            ]
            ops = []
            if self.strong_ops > 0:
                ops.append(SomeOf(pool, num_transforms=min(self.strong_ops, len(pool))))
            if self.cutout:
                ops.append(RandCoarseDropout(holes=1, spatial_size=(max(2, h // 4), max(2, w // 4)),
                                             max_spatial_size=(max(2, h // 2), max(2, w // 2)), fill_value=0.0, prob=1.0))
            self._intensity[(h, w)] = Compose(ops)
        return self._intensity[(h, w)]

    def strong(self, batch: dict[str, torch.Tensor], seed: int = 0, part: tuple[int, int] = (0, 1)) -> dict[str, torch.Tensor]:
        """Strong view of a (weakly augmented) batch.

        Args:
            batch: ``image`` (B, 1, H, W) plus optional maps (e.g. ``target`` probabilities) that follow
                the geometry only (bilinear).
            seed: random seed of this call.
            part: ``(rank, world_size)``, as in :meth:`weak`.

        Returns:
            The same keys, plus ``valid`` (B, 1, H, W): pixels of the strong view inside the weak frame.
        """
        # Augmentation runs in float32 even inside a training step's bf16 autocast: MONAI's array
        # transforms (e.g. RandCoarseDropout) cannot take bf16.
        with torch.autocast(batch["image"].device.type, enabled=False):
            return self._strong(batch, seed, part)

    def _strong(self, batch: dict[str, torch.Tensor], seed: int, part: tuple[int, int]) -> dict[str, torch.Tensor]:
        image = batch["image"]
        b, _, h, w = image.shape
        g = torch.Generator().manual_seed(int(seed) % _MAX_SEED)
        rank, world = part
        theta = self._matrices(g, b * world)[rank::world].to(image.device)
        sample_seeds = torch.randint(0, _MAX_SEED, (b * world,), generator=g)[rank::world].tolist()
        # One warp for everything (a single sampling grid): the maps, then a plane of ones whose
        # warped value tells which pixels stay inside the frame.
        keys = list(batch)
        stack = torch.cat([batch[k].float() for k in keys] + [torch.ones_like(image, dtype=torch.float32)], dim=1)
        warped = self._warp(stack, theta)
        sizes = [batch[k].shape[1] for k in keys]
        parts = torch.split(warped, sizes + [1], dim=1)
        out = {k: p.to(batch[k].dtype) for k, p in zip(keys, parts)}
        out["valid"] = (parts[-1] > 0.5).float()
        ops = self._intensity_ops(h, w)
        if ops.transforms:
            img = out["image"]
            views = []
            for i in range(b):  # one seed per sample: the draws do not depend on how the batch is split
                ops.set_random_state(seed=int(sample_seeds[i]))
                views.append(_as_tensor(ops(img[i])))
            out["image"] = torch.stack(views).to(img.dtype)
        out["image"] = out["image"].clamp(0.0, 1.0)
        return out
