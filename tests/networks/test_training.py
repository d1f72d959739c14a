"""CPU training check: the compact SAM-Mix learns to segment the liver of phantom CT slices.

:func:`train_and_evaluate` is reusable with any slices. The acceptance check trains on the
phantom cohort of ``tests/conftest.py`` (:func:`phantom_store`) and evaluates on its held-out
test cases. :func:`standin_slices` (simple ellipses) remains as a quick sanity check.
"""

from __future__ import annotations

import math
import time

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss

from sam_mix_monai.networks import GATED_LOGIT, ModelConfig, SAMMixInference, build_model
from tests.networks import one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def standin_slices(n: int, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """STAND-IN phantom: noisy body ellipse, an ellipse "liver" (half the slices), a distractor organ.

    Args:
        n: number of slices.
        size: side in pixels.
        seed: random seed.

    Returns:
        ``images`` (n, 1, size, size) in [0, 1], ``masks`` (n, 1, size, size) {0, 1}, ``labels`` (n,) {0, 1}.
    """
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")

    def ellipse(cx: float, cy: float, ax: float, ay: float, angle: float) -> torch.Tensor:
        c, s = math.cos(angle), math.sin(angle)
        u, v = (xx - cx) * c + (yy - cy) * s, -(xx - cx) * s + (yy - cy) * c
        return ((u / ax) ** 2 + (v / ay) ** 2) <= 1.0

    def r(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand(1, generator=g))

    images, masks, labels = [], [], []
    for i in range(n):
        body = ellipse(0.0, 0.0, r(0.8, 0.95), r(0.65, 0.85), 0.0)
        img = 0.05 + 0.25 * body.float()
        liver = torch.zeros(size, size, dtype=torch.bool)
        has_liver = i % 2 == 0
        if has_liver:
            liver = ellipse(r(-0.5, -0.1), r(-0.3, 0.2), r(0.25, 0.45), r(0.2, 0.35), r(-0.6, 0.6)) & body
            img = torch.where(liver, torch.full_like(img, 0.6), img)
        organ = ellipse(r(0.3, 0.6), r(-0.3, 0.4), r(0.08, 0.15), r(0.08, 0.15), 0.0) & body & ~liver
        img = torch.where(organ, torch.full_like(img, 0.85), img)
        img = img + 0.05 * torch.randn(size, size, generator=g)
        images.append(img.clamp(0, 1))
        masks.append(liver.float())
        labels.append(int(has_liver))
    return torch.stack(images)[:, None], torch.stack(masks)[:, None], torch.tensor(labels)


def dice_per_slice(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-slice Dice of binary (B, 1, H, W) masks."""
    p, t = pred.flatten(1).float(), target.flatten(1).float()
    return (2 * (p * t).sum(1) + 1e-6) / (p.sum(1) + t.sum(1) + 1e-6)


def train_and_evaluate(
    images: torch.Tensor,
    masks: torch.Tensor,
    labels: torch.Tensor,
    test: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    steps: int = 300,
    batch_size: int = 8,
    lr: float = 1e-4,
    seed: int = 0,
) -> dict[str, float]:
    """Train the compact SAM-Mix on slices and evaluate it on held-out ones.

    Loss: Dice + BCE on the chosen mask of liver slices, CE on the class logits of all slices;
    Adam. Evaluation runs the export wrapper (liver-free gate included).

    Args:
        images: (N, 1, S, S) slices in [0, 1].
        masks: (N, 1, S, S) liver masks.
        labels: (N,) liver present (0/1).
        test: held-out ``(images, masks, labels)``; ``None``: the last quarter of the inputs.
        steps: optimiser steps.
        batch_size: slices per step.
        lr: Adam learning rate.
        seed: random seed.

    Returns:
        ``dice`` (mean per-slice Dice on held-out liver slices), ``cls_acc`` (held-out slice
        classification accuracy), ``fallback_rate`` (held-out liver slices with a fallback box),
        ``seconds`` (training time).
    """
    if test is None:
        k = int(0.75 * len(images))
        test = (images[k:], masks[k:], labels[k:])
        images, masks, labels = images[:k], masks[:k], labels[:k]
    torch.manual_seed(seed)
    net = build_model(ModelConfig(name="sam_mix", size="compact", image_size=images.shape[-1]))
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    dice_loss = DiceLoss(sigmoid=True)
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    net.train()
    for _ in range(steps):
        idx = torch.randint(len(images), (batch_size,), generator=g)
        x, y, lab = images[idx], masks[idx], labels[idx].long()
        out = net(x)
        loss = F.cross_entropy(out["class_logits"], lab)
        pos = lab == 1
        if pos.any():
            logits = out["mask_logits"][pos]
            loss = loss + dice_loss(logits, y[pos]) + F.binary_cross_entropy_with_logits(logits, y[pos])
        opt.zero_grad()
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - t0
    wrapper = SAMMixInference(net).eval()
    ti, tm, tl = test
    with torch.no_grad():
        logits = torch.cat([wrapper(ti[i : i + 16]) for i in range(0, len(ti), 16)])
        outs = [net(ti[i : i + 16]) for i in range(0, len(ti), 16)]
    pred = logits > 0
    present = torch.cat([o["liver_present"] for o in outs])
    fallback = torch.cat([o["box_fallback"] for o in outs])
    pos = tl == 1
    return {
        "dice": float(dice_per_slice(pred[pos], tm[pos]).mean()),
        "cls_acc": float((present.long() == tl).float().mean()),
        "fallback_rate": float(fallback[pos].float().mean()),
        "seconds": seconds,
        "gated_fraction": float((logits.flatten(1).amax(1) <= GATED_LOGIT).float().mean()),
    }


def test_compact_sam_mix_learns_phantom_liver(phantom_store) -> None:
    from tests.conftest import load_split

    train, test = load_split(phantom_store, "train"), load_split(phantom_store, "test")
    result = train_and_evaluate(*train, test=test, steps=300)
    print(f"phantom training check: {result}")
    assert result["dice"] >= 0.8, result
    assert result["cls_acc"] >= 0.85, result


@pytest.mark.slow
def test_compact_sam_mix_learns_standin_slices() -> None:
    images, masks, labels = standin_slices(160, size=64, seed=0)
    test = standin_slices(48, size=64, seed=1)
    result = train_and_evaluate(images, masks, labels, test=test, steps=300)
    print(f"stand-in training check: {result}")
    assert result["dice"] >= 0.8, result
