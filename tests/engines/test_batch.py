"""Shared batch helpers: the liver-free gate, network calls, resizing."""

from __future__ import annotations

import torch

from sam_mix_monai.engines.batch import predict_masks, prepare_slices, resize_batch, run_network
from sam_mix_monai.networks import ModelConfig, build_model


def test_predict_masks_gates_liver_free_slices():
    logits = torch.full((2, 1, 4, 4), 3.0)
    out = {"mask_logits": logits, "class_logits": torch.tensor([[0.0, 2.0], [2.0, 0.0]])}
    pred = predict_masks(out)
    assert pred[0].sum() == 16 and pred[1].sum() == 0
    assert predict_masks({"mask_logits": logits}).sum() == 32  # no classifier: no gate


def test_run_network_and_classifier_only_forward():
    torch.manual_seed(0)
    net = build_model(ModelConfig(name="sam_mix", size="compact", image_size=64)).eval()
    x = torch.rand(2, 1, 128, 128)  # data larger than the network: resized inside
    with torch.no_grad():
        out = run_network(net, x)
        assert out["mask_logits"].shape == (2, 1, 128, 128)
        alone = net(x, classify_only=True)  # the classifier alone (the trainer's prompt-path-only step)
        assert set(alone) == {"class_logits", "liver_map"}  # the map feeds loss.cam_mask
        assert torch.allclose(alone["class_logits"], out["class_logits"], atol=1e-5)
        assert torch.allclose(alone["liver_map"], out["liver_map"], atol=1e-5) and alone["liver_map"].shape[:2] == (2, 1)
    sampp = build_model(ModelConfig(name="sam_pp", size="compact", image_size=64)).eval()
    mask = torch.zeros(2, 1, 64, 64)
    mask[:, :, 10:30, 20:40] = 1
    with torch.no_grad():
        assert run_network(sampp, x[:, :, :64, :64], mask)["mask_logits"].shape == (2, 1, 64, 64)


def test_prepare_and_resize():
    batch = {"image": torch.rand(2, 1, 8, 8), "mask": torch.ones(2, 1, 8, 8), "label": torch.tensor([1, -1])}
    image, target = prepare_slices(batch, "cpu")
    assert image.shape == (2, 1, 8, 8) and target["label"].tolist() == [1, -1]
    small, mask = resize_batch(image, target["mask"], 4)
    assert small.shape == (2, 1, 4, 4) and set(mask.unique().tolist()) == {1.0}
    assert resize_batch(image, None, None)[0] is image


def test_resize_batch_keeps_float32_under_bf16_autocast():
    # MONAI's array transforms (the strong augmentation) cannot take bf16; CPU autocast would resize to bf16
    import torch

    from sam_mix_monai.engines.batch import resize_batch

    with torch.autocast("cpu", dtype=torch.bfloat16):
        image, mask = resize_batch(torch.rand(2, 1, 32, 32), torch.zeros(2, 1, 32, 32), 64)
    assert image.dtype == torch.float32 and image.shape == (2, 1, 64, 64) and mask.shape == (2, 1, 64, 64)


def test_strong_augmentation_runs_inside_bf16_autocast():
    import torch

    from sam_mix_monai.engines.augment import WeakStrongAugment
    from sam_mix_monai.engines.config import AugmentConfig

    a = AugmentConfig()
    aug = WeakStrongAugment(a.flip_prob, a.shift, a.rotate_deg, a.scale, a.shear, a.strong_ops, a.magnitude, a.cutout)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        views = [aug.strong({"image": torch.rand(2, 1, 64, 64)}, seed=s)["image"] for s in range(6)]
    assert all(v.dtype == torch.float32 and v.shape == (2, 1, 64, 64) for v in views)
