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
