"""Evaluating checkpoints: rebuilt from the stored model config alone; clear errors otherwise."""

from __future__ import annotations

import pytest
import torch

from sam_mix_monai.engines.evaluate import evaluate_checkpoint, format_results
from sam_mix_monai.networks.run_checkpoint import load_checkpoint
from sam_mix_monai.networks import ModelConfig, build_model
from sam_mix_monai.utils.errors import InputError


def test_checkpoint_round_trip(tiny_phantom, tmp_path):
    cfg = ModelConfig(name="unet", size="compact")
    net = build_model(cfg)
    torch.save({"network": net.state_dict(), "config": {"model": cfg.model_dump()}}, tmp_path / "c.pt")
    loaded, model_cfg, record = load_checkpoint(tmp_path / "c.pt")
    assert model_cfg.name == record["model"]["name"] == "unet" and not loaded.training
    res = evaluate_checkpoint(tmp_path / "c.pt", tiny_phantom[0], ["slice2d", "volume3d"], "test", device="cpu")
    assert res["cases"] >= 1 and res["liver_slices"] > 0 and "volume3d_hd95" in res["metrics"]
    assert "test" in format_results({"test": res})


def test_bad_checkpoints(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"network": {}}, tmp_path / "noconfig.pt")
    with pytest.raises(InputError, match="no model configuration"):
        load_checkpoint(tmp_path / "noconfig.pt")
    cfg = ModelConfig(name="unet", size="compact")
    torch.save({"network": {"x": torch.zeros(1)}, "config": {"model": cfg.model_dump()}}, tmp_path / "bad.pt")
    with pytest.raises(InputError, match="weights do not match"):
        load_checkpoint(tmp_path / "bad.pt")
        

def test_prompt_overrides_change_the_switch_not_the_weights(tmp_path):
    cfg = ModelConfig(name="sam_mix", size="compact", image_size=64)
    net = build_model(cfg)
    torch.save({"network": net.state_dict(), "config": {"model": cfg.model_dump()}}, tmp_path / "c.pt")
    loaded, cfg2, record = load_checkpoint(tmp_path / "c.pt", prompt_overrides={"cam_component": "peak", "box_refine": 1})
    assert loaded.cam_component == "peak" and loaded.box_refine == 1 and cfg2.cam_component == "peak"
    assert torch.equal(loaded.sam.mask_decoder.iou_token.weight, net.sam.mask_decoder.iou_token.weight)
    with pytest.raises(InputError, match="cannot be changed at evaluation"):
        load_checkpoint(tmp_path / "c.pt", prompt_overrides={"image_size": 128})
