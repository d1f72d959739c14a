"""LoRA on the q and v parts of SAM's fused ``qkv`` projections, and encoder freezing modes.

``peft`` is not a dependency and has no notion of "q and v of a fused qkv Linear", so the adapter
is hand-written (the same scheme as SAMed): ``qkv(x) + [B_q A_q x, 0, B_v A_v x] * alpha / r``.

Two fused layouts exist:

* SAM's ViT (``segment_anything``): the output is ``(3, heads, head_dim)``: all q, then all k, then all v;
* TinyViT (LiteMedSAM): the output is ``(heads, 3, head_dim)``: per head q, k, v
  (``qkv.view(B, N, heads, -1).split([key_dim, key_dim, d])``), so the update is interleaved per head.

:class:`LoRAQKV` subclasses :class:`torch.nn.Linear` and keeps ``weight`` / ``bias``, so an encoder
with adapters keeps the official state-dict keys (``...attn.qkv.weight``) and only adds
``...attn.qkv.lora_*`` keys.
"""

from __future__ import annotations

import logging
import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LoRAQKV", "inject_lora", "is_lora_key", "resolve_encoder_mode", "configure_encoder", "EncoderMode"]

logger = logging.getLogger(__name__)

EncoderMode = Literal["auto", "lora", "full", "frozen"]


class LoRAQKV(nn.Linear):
    """A fused qkv ``nn.Linear`` with low-rank updates on its q and v outputs.

    Args:
        base: the ``qkv`` linear layer (out_features = 3 * dim); its weights are shared, not copied.
        rank: LoRA rank r.
        alpha: LoRA scaling numerator (update scaled by alpha / r).
        heads: ``None`` for SAM's ``(3, heads, head_dim)`` output layout; the head count for
            TinyViT's per-head ``(heads, 3, head_dim)`` layout.
    """

    def __init__(self, base: nn.Linear, rank: int = 8, alpha: float = 8.0, heads: int | None = None) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        if self.out_features != 3 * self.in_features:
            raise ValueError("LoRAQKV expects a fused qkv layer with out_features == 3 * in_features")
        self.weight = base.weight
        self.bias = base.bias
        dim = self.in_features
        if heads is not None and dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.rank, self.scaling = rank, alpha / rank
        self.lora_q_a = nn.Linear(dim, rank, bias=False)
        self.lora_q_b = nn.Linear(rank, dim, bias=False)
        self.lora_v_a = nn.Linear(dim, rank, bias=False)
        self.lora_v_b = nn.Linear(rank, dim, bias=False)
        for a, b in ((self.lora_q_a, self.lora_q_b), (self.lora_v_a, self.lora_v_b)):
            nn.init.kaiming_uniform_(a.weight, a=math.sqrt(5))
            nn.init.zeros_(b.weight)  # the adapted layer starts equal to the base layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        dq = self.lora_q_b(self.lora_q_a(x)) * self.scaling
        dv = self.lora_v_b(self.lora_v_a(x)) * self.scaling
        if self.heads is None:
            return out + torch.cat([dq, torch.zeros_like(dq), dv], dim=-1)
        per_head = (self.heads, self.in_features // self.heads)
        dq, dv = dq.unflatten(-1, per_head), dv.unflatten(-1, per_head)
        return out + torch.stack([dq, torch.zeros_like(dq), dv], dim=-2).flatten(-3)


def is_lora_key(key: str) -> bool:
    """True for state-dict keys of LoRA adapters (absent from official checkpoints)."""
    return ".lora_" in key


def _attention_modules(encoder: nn.Module) -> list[tuple[nn.Module, int | None]]:
    """(attention module, heads for a per-head qkv layout or ``None``) of every encoder block."""
    found = []
    for m in encoder.modules():
        qkv = getattr(m, "qkv", None)
        if not isinstance(qkv, nn.Linear):
            continue
        if hasattr(m, "key_dim"):  # TinyViT attention: per-head [q, k, v]
            if not (m.key_dim == m.d and qkv.out_features == 3 * qkv.in_features):
                raise ValueError("TinyViT attention with attn_ratio != 1 is not supported by LoRAQKV")
            found.append((m, int(m.num_heads)))
        else:  # segment_anything ViT attention: [all q, all k, all v]
            found.append((m, None))
    return found


def inject_lora(encoder: nn.Module, rank: int = 8, alpha: float = 8.0) -> int:
    """Replace every attention ``qkv`` linear of a SAM image encoder by :class:`LoRAQKV`.

    Args:
        encoder: ``segment_anything`` ``ImageEncoderViT`` or LiteMedSAM's TinyViT.
        rank: LoRA rank.
        alpha: LoRA alpha.

    Returns:
        Number of adapted layers.
    """
    n = 0
    for attn, heads in _attention_modules(encoder):
        if not isinstance(attn.qkv, LoRAQKV):
            attn.qkv = LoRAQKV(attn.qkv, rank, alpha, heads=heads)
            n += 1
    return n


def resolve_encoder_mode(mode: EncoderMode, has_checkpoint: bool) -> Literal["lora", "full", "frozen"]:
    """Resolve ``auto``: LoRA on a frozen encoder with pretrained weights, full training without.

    A frozen random encoder makes no sense, so ``auto`` trains a randomly initialised encoder fully.

    Args:
        mode: ``"auto"``, ``"lora"``, ``"full"`` or ``"frozen"``.
        has_checkpoint: whether pretrained SAM / MedSAM weights are (or were) loaded.

    Returns:
        The concrete mode.
    """
    if mode == "auto":
        return "lora" if has_checkpoint else "full"
    if mode not in ("lora", "full", "frozen"):
        raise ValueError(f"unknown encoder_mode {mode!r}")
    return mode


def configure_encoder(
    encoder: nn.Module, mode: EncoderMode, has_checkpoint: bool, rank: int = 8, alpha: float = 8.0
) -> str:
    """Set which image-encoder weights train, adding LoRA adapters for ``lora``.

    ``lora``: adapters train, every other encoder weight is frozen. ``full``: everything trains.
    ``frozen``: nothing in the encoder trains. The choice is logged. An encoder with a
    ``freeze_norm`` switch (LiteMedSAM's TinyViT, which has BatchNorm) keeps its normalisation
    statistics fixed unless the mode is ``full``.

    Args:
        encoder: SAM image encoder.
        mode: requested mode (``auto`` resolved by :func:`resolve_encoder_mode`).
        has_checkpoint: whether pretrained weights are used.
        rank: LoRA rank.
        alpha: LoRA alpha.

    Returns:
        The resolved mode.
    """
    resolved = resolve_encoder_mode(mode, has_checkpoint)
    if resolved == "lora":
        inject_lora(encoder, rank, alpha)
    for name, p in encoder.named_parameters():
        p.requires_grad_(resolved == "full" or (resolved == "lora" and is_lora_key("." + name)))
    if hasattr(encoder, "freeze_norm"):
        encoder.freeze_norm = resolved != "full"
        encoder.train(encoder.training)
    n_train = sum(p.numel() for p in encoder.parameters() if p.requires_grad)
    logger.info(
        "SAM image encoder mode %r (requested %r, pretrained=%s): %d trainable encoder parameters%s",
        resolved,
        mode,
        has_checkpoint,
        n_train,
        f" (LoRA rank {rank}, alpha {alpha})" if resolved == "lora" else "",
    )
    return resolved
