"""Model registry: a :class:`ModelConfig` names the model and its size; :func:`build_model` builds it.

A training checkpoint carries ``ModelConfig.model_dump()``, so evaluation and inference rebuild the
network from that alone (``build_model(ModelConfig(**dump), load_pretrained=False)`` followed by
``load_state_dict``); the encoder mode resolves from ``checkpoint`` being set, not from the file
being present, so the rebuilt module has the same keys.

Example:
    >>> import torch
    >>> cfg = ModelConfig(name="sam_mix", size="compact", image_size=128)
    >>> net = build_model(cfg)
    >>> sorted(net(torch.rand(2, 1, 128, 128)))[:3]
    ['all_mask_logits', 'box_fallback', 'boxes']
"""

from __future__ import annotations

import logging
from typing import Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from sam_mix_monai.networks.baselines import SAMPP, UNET_CHANNELS, UNetSeg
from sam_mix_monai.networks.checkpoint import load_sam_checkpoint
from sam_mix_monai.networks.classifier import build_classifier
from sam_mix_monai.networks.lora import configure_encoder
from sam_mix_monai.networks.sam_builder import build_sam
from sam_mix_monai.networks.sam_mix import SAMMix

__all__ = ["ModelConfig", "build_model", "MODEL_REGISTRY", "register_model"]

logger = logging.getLogger(__name__)


class ModelConfig(BaseModel):
    """Which network to build, and how.

    Attributes:
        name: ``sam_mix``, ``unet`` or ``sam_pp``.
        size: SAM size (``compact``, ``vit_b``, ``vit_l``, ``vit_h``); for ``unet``, ``compact``
            gives channels (8, 16, 32, 64), any other size (16, 32, 64, 128, 256).
        image_size: square network input size (multiple of 16).
        window_size: SAM encoder window (``None``: 8 for compact, else the grid divisor closest to 14).
        classifier: ``resnet38``, ``compact`` or ``auto`` (compact for ``size="compact"``).
        cam_threshold: threshold on the min-max normalised GradCAM.
        cls_threshold: liver probability below which a slice is liver-free.
        lcc_iterations: label-propagation rounds of the CAM connected-component step (``None`` = h + w).
        fallback_box_fraction: side fraction of the central box used when the CAM mask is empty.
        prompts: ``box+mask`` (SAM-Mix), ``box`` or ``mask`` (ablations).
        lora_rank, lora_alpha: LoRA on the encoder's q and v.
        encoder_mode: ``auto`` (``lora`` with a checkpoint, else ``full``), ``lora``, ``full``, ``frozen``.
        checkpoint: official SAM / MedSAM checkpoint file (``None``: random initialisation).
    """

    model_config = ConfigDict(extra="forbid")

    name: Literal["sam_mix", "unet", "sam_pp"] = "sam_mix"
    size: Literal["compact", "vit_b", "vit_l", "vit_h"] = "vit_b"
    image_size: int = Field(256, ge=64, le=1024)
    window_size: int | None = Field(None, ge=1)
    classifier: Literal["auto", "resnet38", "compact"] = "auto"
    cam_threshold: float = Field(0.4, gt=0.0, le=1.0)
    cls_threshold: float = Field(0.5, ge=0.0, le=1.0)
    lcc_iterations: int | None = Field(None, ge=1)
    fallback_box_fraction: float = Field(0.5, gt=0.0, le=1.0)
    prompts: Literal["box+mask", "box", "mask"] = "box+mask"
    lora_rank: int = Field(8, ge=1)
    lora_alpha: float = Field(8.0, gt=0.0)
    encoder_mode: Literal["auto", "lora", "full", "frozen"] = "auto"
    checkpoint: str | None = None

    @field_validator("image_size")
    @classmethod
    def _multiple_of_16(cls, v: int) -> int:
        if v % 16:
            raise ValueError(f"image_size must be a multiple of 16 (SAM patch size), got {v}")
        return v

    @model_validator(mode="after")
    def _window_fits(self) -> "ModelConfig":
        if self.window_size is not None and self.window_size > self.image_size // 16:
            raise ValueError(f"window_size {self.window_size} exceeds the token grid {self.image_size // 16}")
        return self

    @property
    def classifier_size(self) -> str:
        """Resolved classifier size."""
        if self.classifier != "auto":
            return self.classifier
        return "compact" if self.size == "compact" else "resnet38"


def _sam_branch(cfg: ModelConfig, load_pretrained: bool) -> nn.Module:
    sam = build_sam(cfg.size, cfg.image_size, cfg.window_size)
    if cfg.checkpoint is not None and load_pretrained:
        load_sam_checkpoint(sam, cfg.checkpoint)
        logger.info("loaded SAM weights from %s", cfg.checkpoint)
    configure_encoder(sam.image_encoder, cfg.encoder_mode, cfg.checkpoint is not None, cfg.lora_rank, cfg.lora_alpha)
    return sam


def _build_sam_mix(cfg: ModelConfig, load_pretrained: bool) -> nn.Module:
    return SAMMix(
        classifier=build_classifier(cfg.classifier_size),
        sam=_sam_branch(cfg, load_pretrained),
        cam_threshold=cfg.cam_threshold,
        cls_threshold=cfg.cls_threshold,
        lcc_iterations=cfg.lcc_iterations,
        fallback_fraction=cfg.fallback_box_fraction,
        use_box="box" in cfg.prompts,
        use_mask="mask" in cfg.prompts,
    )


def _build_sam_pp(cfg: ModelConfig, load_pretrained: bool) -> nn.Module:
    return SAMPP(_sam_branch(cfg, load_pretrained))


def _build_unet(cfg: ModelConfig, load_pretrained: bool) -> nn.Module:
    return UNetSeg(UNET_CHANNELS["compact" if cfg.size == "compact" else "default"])


MODEL_REGISTRY: dict[str, Callable[[ModelConfig, bool], nn.Module]] = {
    "sam_mix": _build_sam_mix,
    "unet": _build_unet,
    "sam_pp": _build_sam_pp,
}


def register_model(name: str, builder: Callable[[ModelConfig, bool], nn.Module]) -> None:
    """Add a builder ``(cfg, load_pretrained) -> nn.Module`` under ``name`` (``cfg.name`` stays typed)."""
    MODEL_REGISTRY[name] = builder


def build_model(cfg: ModelConfig, load_pretrained: bool = True) -> nn.Module:
    """Build the network a config names.

    Args:
        cfg: the model configuration.
        load_pretrained: load ``cfg.checkpoint`` (official SAM / MedSAM weights). ``False`` when the
            weights come from a training checkpoint instead; the module layout is the same.

    Returns:
        The network (train mode).

    Raises:
        InputError: unreadable, unsafe or mismatching ``cfg.checkpoint``.
    """
    return MODEL_REGISTRY[cfg.name](cfg, load_pretrained)
