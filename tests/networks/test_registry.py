"""ModelConfig validation and build_model."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from sam_mix_monai.networks import MODEL_REGISTRY, ModelConfig, build_model
from tests.networks import one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def test_defaults_follow_the_paper() -> None:
    cfg = ModelConfig()  # the paper's method on the packaged pretrained LiteMedSAM (not ViT-B: no download)
    assert (cfg.name, cfg.size, cfg.image_size, cfg.pixel_norm) == ("sam_mix", "lite_medsam", 256, "minmax")
    assert (cfg.cam_threshold, cfg.cls_threshold, cfg.lora_rank, cfg.prompts) == (0.4, 0.5, 8, "box+mask")
    assert cfg.encoder_mode == "auto" and cfg.checkpoint is None
    assert cfg.classifier_size == "resnet38"
    assert ModelConfig(size="compact").classifier_size == "compact"


@pytest.mark.parametrize(
    "bad",
    [
        {"unknown_field": 1},
        {"name": "resnet"},
        {"size": "vit_s"},
        {"image_size": 250},
        {"cam_threshold": 0.0},
        {"encoder_mode": "partial"},
        {"image_size": 128, "window_size": 16},
        {"prompts": "points"},
    ],
)
def test_invalid_configs_are_rejected(bad: dict) -> None:
    with pytest.raises(ValidationError):
        ModelConfig(**bad)


@pytest.mark.parametrize("name", sorted(MODEL_REGISTRY))
def test_rebuild_from_dump_gives_same_state_keys(name: str) -> None:
    cfg = ModelConfig(name=name, size="compact", image_size=64, encoder_mode="lora", lora_alpha=16.0)
    dump = cfg.model_dump()
    assert ModelConfig(**dump) == cfg
    a, b = build_model(cfg), build_model(ModelConfig.model_validate(dump))
    assert set(a.state_dict()) == set(b.state_dict())
    b.load_state_dict(a.state_dict())  # a training checkpoint restores into the rebuilt model


def test_rebuild_without_the_pretrained_file(tmp_path) -> None:
    # Evaluation rebuilds from the dump alone: the encoder mode follows `checkpoint` being set,
    # even when the pretrained file is not loaded (or no longer exists).
    cfg = ModelConfig(name="sam_mix", size="compact", image_size=64, checkpoint=str(tmp_path / "gone.pth"))
    net = build_model(cfg, load_pretrained=False)
    assert any(".lora_" in k for k in net.state_dict())
    with pytest.raises(Exception, match="checkpoint file not found"):
        build_model(cfg)


def test_unet_sizes() -> None:
    small = build_model(ModelConfig(name="unet", size="compact", image_size=64))
    big = build_model(ModelConfig(name="unet", size="vit_b", image_size=64))
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(small) < n(big)
    assert big(torch.rand(1, 1, 64, 64))["mask_logits"].shape == (1, 1, 64, 64)
