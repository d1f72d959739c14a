"""LoRA on the q and v parts of SAM's fused ``qkv`` projections, and encoder freezing modes.

``peft`` is not a dependency and has no notion of "q and v of a fused qkv Linear", so the adapter
is hand-written (the same scheme as SAMed): ``qkv(x) + [B_q A_q x, 0, B_v A_v x] * alpha / r``.

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
    """

    def __init__(self, base: nn.Linear, rank: int = 8, alpha: float = 8.0) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        if self.out_features != 3 * self.in_features:
            raise ValueError("LoRAQKV expects a fused qkv layer with out_features == 3 * in_features")
        self.weight = base.weight
        self.bias = base.bias
        dim = self.in_features
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
        return out + torch.cat([dq, torch.zeros_like(dq), dv], dim=-1)


def is_lora_key(key: str) -> bool:
    """True for state-dict keys of LoRA adapters (absent from official checkpoints)."""
    return ".lora_" in key


def inject_lora(encoder: nn.Module, rank: int = 8, alpha: float = 8.0) -> int:
    """Replace every ``attn.qkv`` linear of a SAM image encoder by :class:`LoRAQKV`.

    Args:
        encoder: ``segment_anything`` ``ImageEncoderViT``.
        rank: LoRA rank.
        alpha: LoRA alpha.

    Returns:
        Number of adapted layers.
    """
    n = 0
    for block in encoder.blocks:
        if not isinstance(block.attn.qkv, LoRAQKV):
            block.attn.qkv = LoRAQKV(block.attn.qkv, rank, alpha)
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
    ``frozen``: nothing in the encoder trains. The choice is logged.

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
