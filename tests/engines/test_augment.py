"""Weak / strong views: seeded, exact for masks, geometry shared by the maps of a strong view."""

from __future__ import annotations

import torch

from sam_mix_monai.engines.augment import WeakStrongAugment


def _blobs(n: int = 4, size: int = 32) -> torch.Tensor:
    x = torch.zeros(n, 1, size, size)
    for i in range(n):
        x[i, :, 4 + i : 14 + i, 6 : 20 - i] = 1.0
    return x


def test_weak_view_is_seeded_and_moves_masks_exactly():
    aug = WeakStrongAugment(flip_prob=0.5, shift=0.125)
    x = _blobs()
    a, b = aug.weak(x, x.clone(), seed=5), aug.weak(x, x.clone(), seed=5)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert torch.equal(a["image"], a["mask"])  # same flip and integer shift, no interpolation
    assert set(a["mask"].unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(aug.weak(x, seed=6)["image"], a["image"])
    no_flip = WeakStrongAugment(flip_prob=1.0, shift=0.0).weak(x, seed=0, flip=False)["image"]
    assert torch.equal(no_flip, x)


def test_strong_view_moves_maps_with_the_image():
    aug = WeakStrongAugment(strong_ops=0, cutout=False, rotate_deg=30, scale=0.2, shear=0.1)
    x = _blobs()
    out = aug.strong({"image": x, "target": x.clone()}, seed=3)
    assert torch.allclose(out["image"], out["target"], atol=1e-6)  # geometry only: identical warps
    assert not torch.allclose(out["image"], x)
    assert 0.5 < out["valid"].mean() <= 1.0 and set(out["valid"].unique().tolist()) <= {0.0, 1.0}
    again = aug.strong({"image": x, "target": x.clone()}, seed=3)
    assert torch.equal(again["image"], out["image"])


def test_strong_intensity_and_cutout():
    aug = WeakStrongAugment(rotate_deg=0, scale=0, shear=0, strong_ops=2, magnitude=1.0, cutout=True)
    x = 0.25 + 0.5 * torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    out = aug.strong({"image": x, "target": x.clone()}, seed=1)
    assert torch.allclose(out["target"], x, atol=1e-5)  # intensity operations touch the image only
    assert not torch.equal(out["image"], x)
    assert out["image"].min() >= 0 and out["image"].max() <= 1
    assert (out["image"] == 0).flatten(1).sum(1).min() >= 8 * 8  # one blanked square per image


def test_ranks_draw_their_share_of_the_global_views():
    aug = WeakStrongAugment()
    x = torch.rand(6, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    one = aug.weak(x, x.clone(), seed=4)
    parts = [aug.weak(x[r::2], x[r::2].clone(), seed=4, part=(r, 2)) for r in range(2)]
    for r in range(2):
        assert torch.equal(parts[r]["image"], one["image"][r::2]) and torch.equal(parts[r]["mask"], one["mask"][r::2])
    strong = aug.strong({"image": one["image"]}, seed=9)
    for r in range(2):
        share = aug.strong({"image": one["image"][r::2]}, seed=9, part=(r, 2))
        assert torch.allclose(share["image"], strong["image"][r::2], atol=1e-6)
