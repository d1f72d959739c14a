"""Output shapes of every model and size, on mixed liver / no-liver batches."""

from __future__ import annotations

import pytest
import torch

from sam_mix_monai.networks import SAMPP, ModelConfig, SAMMix, UNetSeg, build_model, interior_point
from tests.networks import mixed_batch, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

SAM_MIX_KEYS = {
    "mask_logits": (1,),
    "all_mask_logits": (3,),
    "cam": (1,),
    "cam_mask": (1,),
}


def _check_sam_mix(out: dict[str, torch.Tensor], b: int, size: int, s: int) -> None:
    for key, (c,) in SAM_MIX_KEYS.items():
        assert out[key].shape == (b, c, size, size), key
    assert out["class_logits"].shape == (b, 2)
    assert out["iou_pred"].shape == (b, 3)
    assert out["chosen_iou"].shape == (b,)
    assert out["liver_prob"].shape == (b,) and out["liver_present"].dtype == torch.bool
    assert out["boxes"].shape == (b, 4) and out["box_fallback"].shape == (b,)
    assert out["low_res_logits"].shape == (b, 1, s // 4, s // 4)
    assert bool((out["boxes"] >= 0).all() and (out["boxes"] <= s - 1).all())
    assert float(out["cam"].min()) >= 0.0 and float(out["cam"].max()) <= 1.0
    assert set(out["cam_mask"].unique().tolist()) <= {0.0, 1.0}
    chosen = out["all_mask_logits"].gather(1, out["iou_pred"].argmax(1).view(-1, 1, 1, 1).expand(-1, 1, size, size))
    torch.testing.assert_close(out["mask_logits"], chosen)
    torch.testing.assert_close(out["chosen_iou"], out["iou_pred"].max(1).values)


def test_compact_sam_mix_shapes() -> None:
    net = build_model(ModelConfig(name="sam_mix", size="compact", image_size=64))
    assert isinstance(net, SAMMix)
    x, _ = mixed_batch(4, 64)
    out = net(x)
    _check_sam_mix(out, 4, 64, 64)
    out["mask_logits"].mean().backward()


def test_compact_sam_mix_resizes_other_input_sizes() -> None:
    net = build_model(ModelConfig(name="sam_mix", size="compact", image_size=64)).eval()
    x, _ = mixed_batch(2, 96)
    with torch.no_grad():
        out = net(x)
    _check_sam_mix(out, 2, 96, 64)


@pytest.mark.parametrize("prompts", ["box", "mask"])
def test_prompt_ablations(prompts: str) -> None:
    """An ablation feeds SAM exactly its one prompt: the output equals SAM run with that prompt alone."""
    from sam_mix_monai.networks import sam_forward

    net = build_model(ModelConfig(name="sam_mix", size="compact", image_size=64, prompts=prompts)).eval()
    assert (net.use_box, net.use_mask) == (prompts == "box", prompts == "mask")
    x, _ = mixed_batch(3, 64)
    with torch.no_grad():
        out = net(x)
        p = net.prompt(x)
        alone = sam_forward(net.sam, p["image"], boxes=p["boxes"] if prompts == "box" else None,
                            mask_prompt=p["dense_prompt"] if prompts == "mask" else None)
        both = sam_forward(net.sam, p["image"], boxes=p["boxes"], mask_prompt=p["dense_prompt"])
    _check_sam_mix(out, 3, 64, 64)
    torch.testing.assert_close(out["mask_logits"], alone["mask_logits"])
    torch.testing.assert_close(out["iou_pred"], alone["iou_pred"])
    assert (out["mask_logits"] - both["mask_logits"]).abs().max() > 1e-3  # the other prompt is really left out


def test_compact_unet_and_sam_pp_shapes() -> None:
    x, _ = mixed_batch(4, 64)
    unet = build_model(ModelConfig(name="unet", size="compact", image_size=64))
    assert isinstance(unet, UNetSeg)
    assert unet(x)["mask_logits"].shape == (4, 1, 64, 64)
    sam_pp = build_model(ModelConfig(name="sam_pp", size="compact", image_size=64))
    assert isinstance(sam_pp, SAMPP)
    point = interior_point((x > 0.5).float())
    out = sam_pp(x, point)
    assert out["mask_logits"].shape == (4, 1, 64, 64) and out["all_mask_logits"].shape == (4, 3, 64, 64)
    assert out["iou_pred"].shape == (4, 3) and out["points"].shape == (4, 2)


def test_vit_b_construction() -> None:
    net = build_model(ModelConfig(name="sam_mix", size="vit_b", image_size=256))
    enc = net.sam.image_encoder
    assert len(enc.blocks) == 12 and enc.pos_embed.shape == (1, 16, 16, 768)
    assert net.classifier.out_channels == 4096  # the real ResNet-38
    n_sam = sum(p.numel() for p in net.sam.parameters())
    assert 88e6 < n_sam < 95e6  # SAM ViT-B: ~93.7 M at 1024, smaller pos_embed / rel-pos tables at 256


def test_vit_b_sam_pp_forward_256() -> None:
    torch.manual_seed(0)
    net = build_model(ModelConfig(name="sam_pp", size="vit_b", image_size=256)).eval()
    x, _ = mixed_batch(2, 256)
    with torch.no_grad():
        out = net(x, torch.tensor([[90.0, 115.0], [128.0, 128.0]]))
    assert out["mask_logits"].shape == (2, 1, 256, 256) and torch.isfinite(out["mask_logits"]).all()


@pytest.mark.slow
def test_vit_b_sam_mix_forward_256() -> None:
    net = build_model(ModelConfig(name="sam_mix", size="vit_b", image_size=256)).eval()
    x, _ = mixed_batch(2, 256)
    with torch.no_grad():
        out = net(x)
    _check_sam_mix(out, 2, 256, 256)
    assert torch.isfinite(out["mask_logits"]).all()


def test_prompt_and_segment_compose_forward() -> None:
    torch.manual_seed(0)
    net = build_model(ModelConfig(name="sam_mix", size="compact", image_size=64)).eval()
    x, _ = mixed_batch(4, 96)  # resized to 64 inside, outputs mapped back to 96
    sam_calls = []
    handle = net.sam.register_forward_pre_hook(lambda m, a: sam_calls.append(1))
    enc = net.sam.image_encoder.register_forward_hook(lambda m, a, o: sam_calls.append(a[0].shape[0]))
    try:
        with torch.no_grad():
            p = net.prompt(x)
            assert sam_calls == []  # the prompt stage never touches SAM
            assert p["image"].shape == (4, 1, 64, 64) and p["dense_prompt"].shape == (4, 1, 16, 16)
            assert p["cam"].shape == (4, 1, 64, 64) and p["liver_prob"].dtype == torch.float32
            seg = net.segment(p["image"], p)
            full = net(x)
            keep = torch.tensor([1, 3])
            sub = net.segment(p["image"][keep], {k: v[keep] for k, v in p.items()})
    finally:
        handle.remove()
        enc.remove()
    assert sam_calls == [4, 4, 2]
    _check_sam_mix(full, 4, 96, 64)
    composed = net.resize_outputs({**seg, **{k: p[k] for k in ("cam", "cam_mask")}}, (96, 96))
    for key in ("mask_logits", "all_mask_logits", "iou_pred", "chosen_iou", "low_res_logits", "cam", "cam_mask"):
        torch.testing.assert_close(composed[key], full[key], rtol=0, atol=0, msg=key)
    for key in ("class_logits", "liver_prob", "liver_present", "boxes", "box_fallback"):
        torch.testing.assert_close(p[key], full[key], rtol=0, atol=0, msg=key)
    torch.testing.assert_close(sub["mask_logits"], seg["mask_logits"][keep], rtol=0, atol=1e-5)
    torch.testing.assert_close(sub["chosen_iou"], seg["chosen_iou"][keep], rtol=0, atol=1e-5)


def test_prompt_stage_gradients() -> None:
    net = build_model(ModelConfig(name="sam_mix", size="compact", image_size=64))
    x, _ = mixed_batch(2, 64)
    p = net.prompt(x)
    assert p["class_logits"].requires_grad  # trained by the classification loss
    assert not any(p[k].requires_grad for k in ("cam", "cam_mask", "boxes", "dense_prompt"))


def test_refine_boxes_from_mask_with_margin_and_empty_fallback() -> None:
    net = build_model(ModelConfig(name="sam_mix", size="compact", image_size=64, box_refine=1, box_margin=2))
    logits = torch.full((2, 1, 64, 64), -5.0)
    logits[0, 0, 10:20, 30:63] = 5.0  # touches the right border: the margin is clipped
    old = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    assert net.refine_boxes(logits, old).tolist() == [[28.0, 8.0, 63.0, 21.0], [5.0, 6.0, 7.0, 8.0]]


def test_box_refine_prompts_sam_with_the_box_of_its_first_mask() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(name="sam_mix", size="compact", image_size=64)
    plain = build_model(cfg).eval()
    refined = build_model(cfg.model_copy(update={"box_refine": 1, "box_margin": 1.0})).eval()
    refined.load_state_dict(plain.state_dict())
    x, _ = mixed_batch(3, 64)
    with torch.no_grad():
        p = plain.prompt(x)
        first = plain.segment(p["image"], p)
        out = refined(x)
        expected = refined.refine_boxes(first["mask_logits"], p["boxes"])
        second = plain.segment(p["image"], {**p, "boxes": expected})
    torch.testing.assert_close(out["boxes"], expected)
    torch.testing.assert_close(out["mask_logits"], second["mask_logits"])
    assert not torch.equal(out["boxes"], p["boxes"])  # the CAM box was replaced


def test_skip_gated_runs_sam_on_passed_slices_only_with_the_same_masks() -> None:
    from sam_mix_monai.networks.single_output import GATED_LOGIT

    torch.manual_seed(0)
    net = build_model(ModelConfig(name="sam_mix", size="compact", image_size=64, skip_gated=True)).eval()
    x, _ = mixed_batch(4, 64)
    with torch.no_grad():
        prob = net.prompt(x)["liver_prob"]
        net.cls_threshold = float(prob.median())  # some slices pass, some do not
        passed = prob >= net.cls_threshold
        assert 0 < int(passed.sum()) < 4
        calls = []
        hook = net.sam.image_encoder.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
        fast = net(x)
        net.skip_gated = False
        full = net(x)
        hook.remove()
    assert calls == [int(passed.sum()), 4]  # SAM encoded the passed slices only
    torch.testing.assert_close(fast["mask_logits"][passed], full["mask_logits"][passed], rtol=1e-4, atol=1e-4)
    assert torch.all(fast["mask_logits"][~passed] == GATED_LOGIT)
    for k in ("liver_prob", "boxes", "cam_mask"):
        torch.testing.assert_close(fast[k], full[k])


def test_box_clip_body_keeps_the_cam_box_inside_the_body() -> None:
    from sam_mix_monai.networks.cam import clip_boxes_to_body
    from sam_mix_monai.networks.registry import PROMPT_KEYS

    assert "box_clip_body" in PROMPT_KEYS  # a prompt switch: sam-mix evaluate --set model.box_clip_body=true
    torch.manual_seed(0)
    cfg = ModelConfig(name="sam_mix", size="compact", image_size=64)
    plain = build_model(cfg).eval()
    clipped = build_model(cfg.model_copy(update={"box_clip_body": True})).eval()
    clipped.load_state_dict(plain.state_dict())
    x = torch.zeros(2, 1, 64, 64)
    x[:, :, 16:48, 24:56] = 0.6  # the body
    x[:, :, 24:40, 30:44] = 0.9
    with torch.no_grad():
        p, q = plain.prompt(x), clipped.prompt(x)
    torch.testing.assert_close(q["boxes"], clip_boxes_to_body(p["boxes"], p["image"]))
    assert (q["boxes"][:, 0] >= 24).all() and (q["boxes"][:, 2] <= 55).all()
    assert (q["boxes"][:, 1] >= 16).all() and (q["boxes"][:, 3] <= 47).all()


def test_extra_slices_share_one_classifier_batch() -> None:
    """The trainer's one-batch forward: labelled slices and the FixMatch views in ONE classifier batch
    (one call, batch-norm statistics of the concatenation); SAM only on the labelled slices."""
    import copy

    torch.manual_seed(0)
    net = build_model(ModelConfig(name="sam_mix", size="compact", image_size=64)).train()
    ref = copy.deepcopy(net.classifier)
    x, extra = torch.rand(2, 1, 64, 64), torch.rand(4, 1, 64, 64)
    calls, sam_calls = [], []
    net.classifier.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    net.sam.image_encoder.register_forward_hook(lambda m, i, o: sam_calls.append(i[0].shape[0]))
    out = net(x, extra=extra)
    assert calls == [6] and sam_calls == [2]
    logits, _ = ref(torch.cat([x, extra]))  # one forward over the concatenated batch
    torch.testing.assert_close(out["class_logits"], logits[:2])
    torch.testing.assert_close(out["extra_class_logits"], logits[2:])
    for (name, a), b in zip(net.classifier.named_buffers(), ref.buffers()):
        torch.testing.assert_close(a, b, msg=name)  # running statistics: those of the one batch
    assert out["mask_logits"].shape == (2, 1, 64, 64) and out["boxes"].shape == (2, 4)
    alone = net(x, extra=extra, classify_only=True)  # the prompt path alone (frozen SAM): no prompts, no SAM
    assert set(alone) == {"class_logits", "liver_map", "extra_class_logits"} and calls == [6, 6] and sam_calls == [2]


def test_cam_inside_body_moves_the_peak_off_the_air() -> None:
    from sam_mix_monai.networks.registry import PROMPT_KEYS

    assert "cam_inside_body" in PROMPT_KEYS
    torch.manual_seed(0)
    cfg = ModelConfig(name="sam_mix", size="compact", image_size=64, cam_component="peak")
    net = build_model(cfg.model_copy(update={"cam_inside_body": True})).eval()
    x = torch.zeros(1, 1, 64, 64)
    x[:, :, 16:48, 16:48] = 0.6  # the body
    feats = torch.zeros(1, net.classifier.fc.weight.shape[1], 8, 8)
    w = net.classifier.fc.weight[1].detach()
    feats[0, :, 0, 0] = 10.0 * w.sign()  # the strongest liver evidence in the air (top-left corner)
    feats[0, :, 4, 4] = 1.0 * w.sign()   # weaker evidence inside the body
    with torch.no_grad():
        p = net._prompts(x, torch.zeros(1, 2), feats)
        net.cam_inside_body = False
        q = net._prompts(x, torch.zeros(1, 2), feats)
    assert q["boxes"][0, 0] < 8 and q["boxes"][0, 1] < 8  # without the switch: the corner
    assert 24 <= p["boxes"][0, 0] <= 40 and 24 <= p["boxes"][0, 1] <= 40  # with it: inside the body
    assert p["liver_map"].shape == (1, 1, 8, 8)
