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



def _one_case_store(tmp_path, keep_rate):
    """A held-out phantom case as NIfTI and as a one-case test store at the network's size (64)."""
    from tests.inference.tiny_model import case_store

    store, files = case_store(tmp_path, keep_rate)
    return (*files["5"], store)


def test_volume3d_equals_the_infer_path_on_a_full_volume_store(tmp_path):
    import nibabel as nib
    import numpy as np
    from monai.metrics import compute_dice

    from sam_mix_monai.engines.evaluate import evaluate_dataset
    from sam_mix_monai.inference import Case, SlicePredictor, VolumeSliceInferer
    from sam_mix_monai.inference.runner import Model, segment_case
    from tests.inference.tiny_model import IMAGE_SIZE, tiny_checkpoint

    image, label, store = _one_case_store(tmp_path, "all")
    net, _, _ = load_checkpoint(tiny_checkpoint())
    res = evaluate_dataset(net, store, "test", ["volume3d"], "cpu")
    (tmp_path / "out").mkdir()
    # the per-slice mode: volume3d stacks per-slice predictions (the volume prompt mode is measured by the infer path)
    out = segment_case(Case("5", image), Model(SlicePredictor(net, prompt_mode="slice"),
                                               VolumeSliceInferer(image_size=IMAGE_SIZE)), tmp_path / "out")
    pred = np.asarray(nib.load(str(out.outputs[0])).dataobj) > 0
    ref = np.asarray(nib.load(str(label)).dataobj) > 0
    infer_dice = float(compute_dice(torch.from_numpy(pred)[None, None].float(), torch.from_numpy(ref)[None, None].float()))
    print(f"volume3d {res['metrics']['volume3d_dice']:.4f} vs infer path {infer_dice:.4f}")
    assert 0.2 < infer_dice < 1.0  # a real, imperfect segmentation
    assert res["metrics"]["volume3d_dice"] == pytest.approx(infer_dice, abs=2e-3)  # float16 store pixels


def test_volume3d_is_refused_on_a_slab_store(tmp_path):
    from sam_mix_monai.engines.evaluate import evaluate_dataset
    from tests.inference.tiny_model import tiny_checkpoint

    _, _, store = _one_case_store(tmp_path, 0.5)
    net, _, _ = load_checkpoint(tiny_checkpoint())
    res = evaluate_dataset(net, store, "test", ["slice2d", "volume3d"], "cpu")
    assert "volume3d_dice" not in res["metrics"] and "slice2d_dice" in res["metrics"]
    assert "keep_rate 0.5" in res["refused"]["volume3d"]
    assert "refused" in format_results({"test": res})


def test_zero_shot_rows_evaluate_without_a_checkpoint(tiny_phantom, capsys):
    from sam_mix_monai.cli.main import main
    from sam_mix_monai.engines.batch import run_network
    from sam_mix_monai.engines.evaluate import evaluate_zero_shot
    from sam_mix_monai.networks.single_output import GATED_LOGIT

    small = ["--set", "model.size=compact", "--set", "model.image_size=64"]  # the packaged LiteMedSAM is the default
    assert main(["evaluate", "--zero-shot", "sam_pp_0", "--zero-shot", "oracle_box", "--data", str(tiny_phantom[0]),
                 *small]) == 0
    out = capsys.readouterr().out
    assert "SAM-PP-0 (test)" in out and "SAM, oracle box (test)" in out
    res = evaluate_zero_shot("oracle_box", tiny_phantom[0], model={"size": "compact", "image_size": 64})
    assert res["row"] == "SAM, oracle box" and res["model"]["name"] == "sam_box" and res["model"]["encoder_mode"] == "frozen"
    assert 0.0 <= res["metrics"]["slice2d_dice"] <= 1.0
    # the oracle row reads the reference: its tight box, and no prompt (an empty mask) where it is empty
    net = build_model(ModelConfig(name="sam_box", size="compact", image_size=64)).eval()
    mask = torch.zeros(2, 1, 64, 64)
    mask[0, 0, 10:30, 20:50] = 1
    with torch.no_grad():
        out = run_network(net, torch.rand(2, 1, 64, 64), mask)
    assert out["boxes"][0].tolist() == [20.0, 10.0, 49.0, 29.0]
    assert torch.all(out["mask_logits"][1] == GATED_LOGIT) and not torch.all(out["mask_logits"][0] == GATED_LOGIT)
    with pytest.raises(ValueError, match="needs the ground-truth mask"):
        run_network(net, torch.rand(2, 1, 64, 64))
