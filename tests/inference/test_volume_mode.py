"""Volume prompt mode: each slice encoded at most once, the encoder only where needed, mode selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from torch import nn

from sam_mix_monai.inference.predictor import SlicePredictor
from sam_mix_monai.inference.volume import VolumeSliceInferer
from sam_mix_monai.inference.volume_mode import resolve_evidence, segment_volume_prompt
from sam_mix_monai.networks import ModelConfig, build_model

SIZE = 64


class _Counting(nn.Module):
    """Wraps an image encoder and records how many slices each call encodes."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder, self.calls = encoder, []
        self.img_size = encoder.img_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(int(x.shape[0]))
        return self.encoder(x)


class _BoxEvidence(nn.Module):
    """A stand-in liver head: high logits on the central block (a quarter to three quarters) of the grid."""

    def __init__(self, on: bool = True) -> None:
        super().__init__()
        self.on = on

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        h, w = emb.shape[-2:]
        out = torch.full((emb.shape[0], 1, h, w), -10.0)
        if self.on:
            out[:, :, h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 10.0
        return out


def _model(head: bool = True) -> nn.Module:
    torch.manual_seed(0)
    net = build_model(ModelConfig(name="sam_mix", size="compact", image_size=SIZE, liver_head=head), load_pretrained=False)
    net.sam.image_encoder = _Counting(net.sam.image_encoder)
    return net.eval()


def _volume(depth: int = 24) -> MetaTensor:
    vol = torch.full((1, 48, 48, depth), -1000.0)
    vol[0, 8:40, 8:40, :] = 40.0  # a body
    vol[0, 14:30, 12:28, 6:18] = 120.0  # a bright "liver"
    return MetaTensor(vol, affine=torch.diag(torch.tensor([1.5, 1.5, 2.5, 1.0], dtype=torch.float64)))


def test_resolve_evidence():
    assert resolve_evidence(_model(True)) == "head"
    assert resolve_evidence(_model(False)) == "cam"
    assert resolve_evidence(_model(True), "cam") == "cam"
    with pytest.raises(ValueError, match="liver head"):
        resolve_evidence(_model(False), "head")
    with pytest.raises(ValueError):
        resolve_evidence(_model(True), "points")


def test_head_evidence_everywhere_encodes_each_slice_once_while_the_range_grows():
    net = _model()
    net.liver_head = _BoxEvidence()  # liver on every slice: the range must grow to all
    inferer = VolumeSliceInferer(image_size=SIZE, batch_size=5)
    res = segment_volume_prompt(_volume(), net, inferer, evidence="head", search_mm=5.0)
    calls = net.sam.image_encoder.calls
    assert sum(calls) == 24 == len(res.encoded) == len(set(res.encoded))  # every slice once, none twice
    assert max(calls) <= 5  # batched by the inferer's batch size
    assert (res.prompt.z0, res.prompt.z1) == (0, 23)
    assert res.mask.shape == (48, 48, 24) and res.mask.dtype == np.uint8


def test_no_head_evidence_gives_an_empty_mask_and_no_decoder_call():
    net = _model()
    net.liver_head = _BoxEvidence(on=False)
    res = segment_volume_prompt(_volume(), net, VolumeSliceInferer(image_size=SIZE), evidence="head")
    assert res.prompt.empty and int(res.mask.sum()) == 0 and np.isnan(res.chosen_iou).all()


def test_cam_evidence_encodes_only_the_prompt_range(monkeypatch):
    net = _model(head=False)
    depth = 24
    prob = torch.zeros(depth)
    prob[6:18] = 0.9  # the classifier's liver slices

    def prompt(x):  # a classifier that knows the liver's slices; a CAM on a block
        b = x.shape[0]
        start = prompt.seen
        prompt.seen += b
        cam = torch.zeros(b, 1, SIZE, SIZE)
        cam[:, :, 20:40, 16:36] = 1.0
        return {"liver_prob": prob[start : start + b], "cam": cam}

    prompt.seen = 0
    monkeypatch.setattr(net, "prompt", prompt)
    res = segment_volume_prompt(_volume(depth), net, VolumeSliceInferer(image_size=SIZE, batch_size=4), evidence="cam")
    assert (res.prompt.z0, res.prompt.z1) == (6, 17)
    assert res.encoded == list(range(6, 18)) and sum(net.sam.image_encoder.calls) == 12
    assert np.isfinite(res.chosen_iou[6:18]).all() and np.isnan(res.chosen_iou[:6]).all()


def test_mode_selection_predictor_inferer_and_model_default():
    net = _model()
    assert net.prompt_mode == "volume"  # every SAM-Mix config's default
    assert SlicePredictor(net).prompt_mode == "volume"
    assert SlicePredictor(net, prompt_mode="slice").prompt_mode == "slice"
    with pytest.raises(ValueError):
        SlicePredictor(net, prompt_mode="box")
    with pytest.raises(ValueError):
        VolumeSliceInferer(prompt_mode="3d")
    slice_cfg = build_model(ModelConfig(name="sam_mix", size="compact", image_size=SIZE, prompt_mode="slice"),
                            load_pretrained=False)
    assert SlicePredictor(slice_cfg).prompt_mode == "slice"
    unet = build_model(ModelConfig(name="unet", size="compact", image_size=SIZE), load_pretrained=False)
    assert SlicePredictor(unet).prompt_mode is None  # no prompts: per slice


def test_inferer_runs_the_mode_it_is_given():
    net = _model()
    net.liver_head = _BoxEvidence()
    vol = _volume()
    out = VolumeSliceInferer(image_size=SIZE, batch_size=8)(vol, net)
    assert out.meta["prompt_mode"] == "volume" and out.meta["encoded_slices"] == list(range(24))
    net.sam.image_encoder.calls.clear()
    out = VolumeSliceInferer(image_size=SIZE, batch_size=8, prompt_mode="slice")(vol, net)
    assert "prompt_mode" not in out.meta and out.shape == (1, 48, 48, 24)


def test_z_stride_is_the_most_whole_slices_within_the_step():
    from sam_mix_monai.inference.volume_mode import z_stride

    assert [z_stride(4.0, dz) for dz in (1.6, 2.0, 2.5, 5.0, 0.8)] == [2, 2, 1, 1, 5]
    assert z_stride(0.0, 1.0) == 1


def _bright_volume(depth: int = 40) -> MetaTensor:
    """A body with a bright block on slices 8 .. 31 that shrinks towards its ends (dz 1.6 mm)."""
    vol = torch.full((1, 48, 48, depth), -1000.0)
    vol[0, 8:40, 8:40, :] = 40.0
    for z in range(8, 32):
        r = 6 + min(z - 8, 31 - z) // 2
        vol[0, 24 - r : 24 + r, 22 - r : 22 + r, z] = 120.0
    return MetaTensor(vol, affine=torch.diag(torch.tensor([1.5, 1.5, 1.6, 1.0], dtype=torch.float64)))


def test_z_step_runs_every_second_slice_and_interpolates_the_rest(monkeypatch):
    import sam_mix_monai.inference.volume_mode as vm

    depth = 40
    liver = np.zeros((depth, 16, 16), np.float32)
    liver[8:32, 4:12, 3:10] = 0.9  # the head's evidence: the liver's slices
    monkeypatch.setattr(vm, "_head_map", lambda model, slices, z: liver[z])
    results = {}
    for step in (0.0, 4.0):  # 1.6 mm slices: 4 mm -> every second slice
        net = _model()
        res = segment_volume_prompt(_bright_volume(depth), net, VolumeSliceInferer(image_size=SIZE, batch_size=8),
                                    evidence="head", cls_threshold=0.0, z_step_mm=step)
        results[step] = (res, sum(net.sam.image_encoder.calls))
    (full, n_full), (half, n_half) = results[0.0], results[4.0]
    assert n_full == depth and n_half == len(half.encoded) == len(set(half.encoded))  # none twice
    assert n_half <= depth // 2 + 3  # the even slices and the ends of the search range and of the prompt
    assert (full.prompt.z0, full.prompt.z1) == (8, 31)
    # the evidence between two run slices is interpolated: the range may move by less than the stride
    assert abs(half.prompt.z0 - 8) <= 1 and abs(half.prompt.z1 - 31) <= 1
    prompted = half.prompt.slices()
    assert np.isfinite(half.chosen_iou[prompted.start : prompted.stop]).all()
    assert np.isnan(half.chosen_iou[: prompted.start]).all() and np.isnan(half.chosen_iou[prompted.stop :]).all()
    odd = [z for z in prompted if z not in half.encoded]
    assert odd  # some slices were interpolated, not run
    a, b = full.mask.astype(bool), half.mask.astype(bool)
    dice = 2 * (a & b).sum() / max(1, a.sum() + b.sum())
    print(f"stride-2 mask against every slice: Dice {dice:.4f}, {n_half} of {n_full} slices encoded")
    assert a.sum() > 0 and dice >= 0.9


def _muscle_and_liver(depth: int = 24) -> MetaTensor:
    vol = torch.full((1, 48, 48, depth), -1000.0)
    vol[0, 8:40, 8:40, :] = 40.0  # a body of muscle on every slice
    vol[0, 14:30, 12:28, 6:18] = 120.0  # the liver on slices 6-17
    return MetaTensor(vol, affine=torch.diag(torch.tensor([1.5, 1.5, 2.5, 1.0], dtype=torch.float64)))


def test_intensity_gate_keeps_the_prompt_on_the_liver_where_weak_evidence_covers_the_body(monkeypatch):
    import torch.nn.functional as F

    import sam_mix_monai.inference.volume_mode as vm
    from sam_mix_monai.inference.intensity_gate import IntensityGateSettings

    def head_map(model, slices, z):  # a head trained elsewhere: strong on the liver, weak on all other tissue
        hu = torch.from_numpy(slices.hu(z).astype(np.float32))[None, None]
        bright = F.adaptive_avg_pool2d((hu > 100).float(), 16)[0, 0].numpy() >= 0.5
        body = F.adaptive_avg_pool2d((hu > 0).float(), 16)[0, 0].numpy() >= 0.5
        return np.where(bright, 0.9, np.where(body, 0.35, 0.0)).astype(np.float32)

    monkeypatch.setattr(vm, "_head_map", head_map)
    net, vol = _model(), _muscle_and_liver()
    inferer = VolumeSliceInferer(image_size=SIZE, batch_size=8)
    toy = IntensityGateSettings(core_ml=5.0)  # the toy liver holds 17 mL (a real one 1-2 L, the default core 100 mL)
    gated = segment_volume_prompt(vol, net, inferer, evidence="head", cls_threshold=0.0, gate=toy)
    raw = segment_volume_prompt(vol, net, inferer, evidence="head", cls_threshold=0.0,
                                gate=IntensityGateSettings(enabled=False))
    assert (raw.prompt.z0, raw.prompt.z1) == (0, 23)  # the weak evidence on the muscle spans the volume
    assert (gated.prompt.z0, gated.prompt.z1) == (6, 17)
    width = lambda p, z: p.boxes[z][2] - p.boxes[z][0]  # noqa: E731
    assert width(gated.prompt, 10) < width(raw.prompt, 10)  # the box holds to the liver, not the body


def test_the_models_intensity_gate_switch_reaches_the_volume_mode(monkeypatch):
    import sam_mix_monai.inference.volume_mode as vm

    seen = []
    real = vm.segment_volume_prompt
    monkeypatch.setattr(vm, "segment_volume_prompt", lambda *a, **k: seen.append(k["gate"].enabled) or real(*a, **k))
    net = _model()
    net.liver_head = _BoxEvidence()
    assert net.intensity_gate is True  # the default of every SAM-Mix config
    VolumeSliceInferer(image_size=SIZE, batch_size=8)(_volume(), net)
    off = build_model(ModelConfig(name="sam_mix", size="compact", image_size=SIZE, liver_head=True, intensity_gate=False),
                      load_pretrained=False).eval()
    off.liver_head = _BoxEvidence()
    VolumeSliceInferer(image_size=SIZE, batch_size=8)(_volume(), off)
    assert seen == [True, False]


def test_the_models_intensity_filter_switch_reaches_the_volume_mode(monkeypatch):
    import sam_mix_monai.inference.volume_mode as vm

    seen = []
    real = vm.segment_volume_prompt
    monkeypatch.setattr(vm, "segment_volume_prompt",
                        lambda *a, **k: seen.append(k["mask_filter"].enabled) or real(*a, **k))
    net = _model()
    net.liver_head = _BoxEvidence()
    assert net.intensity_filter is True  # the default of every SAM-Mix config
    VolumeSliceInferer(image_size=SIZE, batch_size=8)(_volume(), net)
    off = build_model(ModelConfig(name="sam_mix", size="compact", image_size=SIZE, liver_head=True,
                                  intensity_filter=False), load_pretrained=False).eval()
    off.liver_head = _BoxEvidence()
    VolumeSliceInferer(image_size=SIZE, batch_size=8)(_volume(), off)
    assert seen == [True, False]
