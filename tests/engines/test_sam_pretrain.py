"""SAM pretraining on phantom organs: prompts, the multimask loss, a tiny run that learns, and a
saved file that SAM-Mix loads with LoRA on a frozen encoder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sam_mix_monai.data.phantom.organ_slices import build_organ_slices
from sam_mix_monai.engines.organ_prompts import coarse_masks, jittered_boxes, prompted_dice, random_points, transfer_dice
from sam_mix_monai.engines.sam_pretrain import PretrainConfig, multimask_loss, pretrain_sam, save_pretrained, sidecar_path
from sam_mix_monai.networks import ModelConfig, build_model
from sam_mix_monai.networks.lora import LoRAQKV
from sam_mix_monai.networks.sam_builder import build_sam
from sam_mix_monai.utils.errors import InputError
from tests.engines.conftest import tiny_phantom  # noqa: F401 (fixture)

SIZE = 64
STEPS = 40


@pytest.fixture(scope="module")
def one_thread():
    """Module fixtures run before the per-test one-thread fixture of tests/conftest.py."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def organs(one_thread):
    data = build_organ_slices(cases=3, image_size=SIZE, matrix=96, slices=24, min_pixels=12, progress=False)
    return data.split_by_case([2])  # (train, held-out)


@pytest.fixture(scope="module")
def tiny_run(organs):
    train, held = organs
    cfg = PretrainConfig(image_size=SIZE, steps=STEPS, batch_size=4, masks_per_image=4, heldout_masks=120, seed=0)
    return pretrain_sam(train, cfg, held, progress=False)


def _masks():
    m = torch.zeros(3, SIZE, SIZE, dtype=torch.bool)
    m[0, 10:20, 30:50] = True
    m[1, 40:63, 0:5] = True
    m[2, 32, 32] = True
    return m


def test_prompts_stay_on_their_masks():
    m = _masks()
    rng = np.random.default_rng(0)
    exact = jittered_boxes(m, 0.0, rng)
    assert exact[0].tolist() == [30.0, 10.0, 49.0, 19.0]
    for _ in range(20):
        b = jittered_boxes(m, 0.1, rng)
        assert (b >= 0).all() and (b <= SIZE - 1).all() and (b[:, 2] >= b[:, 0]).all() and (b[:, 3] >= b[:, 1]).all()
        # each side moves by at most 10% of the box's side length (0: width 20, height 10)
        assert (b[0] - exact[0]).abs().max() <= 2.0 + 1e-4
    pts = random_points(m, 2, rng).long()
    assert pts.shape == (3, 2, 2)
    for i in range(3):
        assert m[i, pts[i, :, 1], pts[i, :, 0]].all()
    dense = coarse_masks(m, rng)
    assert dense.shape == (3, 1, SIZE // 4, SIZE // 4)
    assert 0.0 <= dense.min() and dense.max() <= 1.0 and dense[0].sum() > 0


def test_multimask_loss_trains_only_the_best_mask():
    target = _masks()[:2].float()
    good = target * 20 - 10  # confident and right
    logits = torch.stack([good, -good, torch.zeros_like(good)], dim=1).requires_grad_()
    iou = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], requires_grad=True)
    loss, dice = multimask_loss(logits, iou, target)
    assert loss.item() < 0.01 and dice.item() > 0.99
    loss.backward()
    assert logits.grad[:, 1:].abs().sum() == 0 and logits.grad[:, 0].abs().sum() > 0
    # A wrong IoU ranking costs: the IoU head is trained on all three masks.
    loss2, _ = multimask_loss(logits.detach(), torch.tensor([[0.0, 1.0, 1.0]] * 2), target)
    assert loss2.item() > loss.item() + 0.5


def test_tiny_run_loss_falls(tiny_run):
    losses = np.asarray(tiny_run.losses)
    assert len(losses) == STEPS and np.isfinite(losses).all()
    assert losses[-8:].mean() < losses[:8].mean() - 0.15, (losses[:8].mean(), losses[-8:].mean())
    held = tiny_run.heldout
    assert held["masks"] == 120 and 0.0 <= held["dice_box"] <= 1.0 and "dice_point_organ_mean" in held
    assert not tiny_run.sam.training


@pytest.mark.slow
def test_prompts_select_the_right_organ(organs):
    """Two slices with 8 organ instances each, 200 steps: the box of an instance must give that
    instance (the prompts, masks and image embeddings are paired right), a random SAM gives nothing."""
    train, _ = organs
    z = np.argsort(-np.bincount(train.mask_slice))[:2]
    two = train._take(np.isin(np.arange(len(train.images)), z))
    cfg = PretrainConfig(image_size=SIZE, steps=200, batch_size=4, masks_per_image=4, heldout_masks=0, seed=0)
    sam = pretrain_sam(two, cfg, progress=False).sam
    x = torch.from_numpy(two.images[two.mask_slice])[:, None]
    m = torch.from_numpy(two.masks)
    torch.manual_seed(0)
    base = prompted_dice(build_sam("compact", SIZE).eval(), x, m, "box")
    got = prompted_dice(sam, x, m, "box")
    assert len(m) >= 10 and np.median(got) > 0.6 and got.mean() > base.mean() + 0.4, (got, base)


def test_saved_file_loads_as_lora_sam_mix(tiny_run, tmp_path):
    weights, side = save_pretrained(tiny_run, tmp_path / "sam.pt", {"cases": 3})
    assert side == sidecar_path(weights) == tmp_path / "sam.json"
    doc = json.loads(side.read_text())
    assert doc["cases"] == 3 and doc["config"]["steps"] == STEPS and "dice_box" in doc["heldout"]
    assert "liver" not in doc["organs"] and doc["train_masks"] > 0 and doc["seconds"] > 0
    state = torch.load(weights, map_location="cpu", weights_only=True)
    assert set(state) == set(build_sam("compact", SIZE).state_dict())  # official layout, no LoRA keys
    net = build_model(ModelConfig(size="compact", image_size=SIZE, checkpoint=str(weights)))
    enc = net.sam.image_encoder
    assert all(isinstance(b.attn.qkv, LoRAQKV) for b in enc.blocks)
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in "." + n for n in trainable)
    loaded = net.sam.state_dict()
    for key in ("mask_decoder.iou_token.weight", "image_encoder.patch_embed.proj.weight",
                "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"):
        torch.testing.assert_close(loaded[key], state[key])
    assert not list(tmp_path.glob("*.part*"))
    with pytest.raises(InputError, match="json"):
        save_pretrained(tiny_run, tmp_path / "sam.json")


def test_deterministic(organs):
    train, _ = organs
    cfg = PretrainConfig(image_size=SIZE, steps=4, batch_size=4, heldout_masks=0, seed=3)
    a, b = pretrain_sam(train, cfg, progress=False), pretrain_sam(train, cfg, progress=False)
    assert a.losses == b.losses
    for (k, v), w in zip(a.sam.state_dict().items(), b.sam.state_dict().values()):
        assert torch.equal(v, w), k
    c = pretrain_sam(train, PretrainConfig(image_size=SIZE, steps=4, batch_size=4, heldout_masks=0, seed=4), progress=False)
    assert c.losses != a.losses


def test_bad_settings(organs):
    train, _ = organs
    with pytest.raises(InputError, match="steps must be at least 1"):
        pretrain_sam(train, PretrainConfig(image_size=SIZE, steps=0), progress=False)
    with pytest.raises(InputError, match="slices are 64 px but image_size is 128"):
        pretrain_sam(train, PretrainConfig(image_size=128, steps=1), progress=False)
    with pytest.raises(InputError, match="prompt_probs"):
        pretrain_sam(train, PretrainConfig(image_size=SIZE, prompt_probs={"scribble": 1.0}), progress=False)


def test_transfer_dice_on_a_store(tiny_phantom):  # noqa: F811
    torch.manual_seed(0)
    out = transfer_dice(build_sam("compact", SIZE).eval(), tiny_phantom[0])
    assert out["slices"] > 0 and 0.0 <= out["dice_box"] <= 1.0 and 0.0 <= out["dice_point"] <= 1.0
    with pytest.raises(InputError, match="unknown split"):
        transfer_dice(build_sam("compact", SIZE).eval(), tiny_phantom[0], split="nonexistent")
