"""SAM configurations and construction from ``segment_anything``'s own modules.

``segment_anything.build_sam_vit_*`` only builds 1024-pixel models and loads checkpoints
unsafely, so this module builds :class:`segment_anything.modeling.Sam` itself, at any input size
(a multiple of 16), with the official dimensions for ``vit_b`` / ``vit_l`` / ``vit_h`` and a small
``compact`` ViT for CPU; ``lite_medsam`` (TinyViT, 256 input) comes from :mod:`.lite_medsam`. The
state-dict keys are the official ones (``image_encoder.*``, ``prompt_encoder.*``, ``mask_decoder.*``),
so official SAM, MedSAM and LiteMedSAM checkpoints load with
:func:`sam_mix_monai.networks.checkpoint.load_sam_checkpoint`.

Input normalisation depends on the checkpoint family, not on the architecture (MedSAM ViT-B has
SAM ViT-B's layout but other training inputs), so each built SAM carries ``sam.pixel_norm``:

* ``imagenet`` (official SAM): the [0, 1] slice times 255, minus ImageNet ``pixel_mean``, over ``pixel_std``;
* ``minmax`` (MedSAM ViT-B, LiteMedSAM): the slice min-max scaled to [0, 1] per image, 3 channels,
  no ImageNet statistics (MedSAM's and LiteMedSAM's own inference scripts).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from torch import nn

from sam_mix_monai.networks.lite_medsam import LITE_IMAGE_SIZE, build_lite_medsam_sam

__all__ = [
    "SamSpec",
    "SAM_SPECS",
    "SAM_SIZES",
    "PIXEL_NORMS",
    "FAMILY_PIXEL_NORM",
    "auto_window_size",
    "build_sam",
    "preprocess_gray",
]

PATCH_SIZE = 16
OFFICIAL_IMAGE_SIZE = 1024
OFFICIAL_WINDOW = 14


@dataclass(frozen=True)
class SamSpec:
    """Dimensions of one SAM variant.

    Attributes:
        embed_dim, depth, num_heads, global_attn_indexes: image-encoder ViT.
        window_size: window of the non-global blocks (``None``: :func:`auto_window_size`).
        prompt_dim: prompt / decoder transformer width (``out_chans`` of the encoder neck).
        decoder_mlp_dim, decoder_heads, decoder_depth: the two-way transformer.
        iou_hidden_dim: hidden width of the IoU head.
        mask_in_chans: hidden channels of the dense (mask) prompt encoder.
    """

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int | None = None
    prompt_dim: int = 256
    decoder_mlp_dim: int = 2048
    decoder_heads: int = 8
    decoder_depth: int = 2
    iou_hidden_dim: int = 256
    mask_in_chans: int = 16


SAM_SPECS: dict[str, SamSpec] = {
    "vit_b": SamSpec(768, 12, 12, (2, 5, 8, 11)),
    "vit_l": SamSpec(1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": SamSpec(1280, 32, 16, (7, 15, 23, 31)),
    # CPU-sized: 4 blocks of 192 wide ViT (3 heads), window 8, 128-wide decoder.
    "compact": SamSpec(
        192, 4, 3, (1, 3), window_size=8, prompt_dim=128, decoder_mlp_dim=512, decoder_heads=4, iou_hidden_dim=128
    ),
}


LITE_MEDSAM = "lite_medsam"
#: Every SAM architecture :func:`build_sam` knows.
SAM_SIZES = (*SAM_SPECS, LITE_MEDSAM)
PIXEL_NORMS = ("imagenet", "minmax")
#: Input normalisation each checkpoint family was trained with.
FAMILY_PIXEL_NORM = {"sam": "imagenet", "medsam": "minmax", "lite_medsam": "minmax"}


def auto_window_size(image_size: int) -> int:
    """Window size for the non-global blocks at ``image_size``.

    The official 14 at 1024 (so official checkpoints need no table resizing there); otherwise the
    divisor of the token grid closest to 14 (ties: the larger), so that no block pads its tokens
    (SAM's 14 on a 16x16 grid pads to 28x28, about 3x the work). 256 -> 16, 512 -> 16, 128 -> 8.

    Args:
        image_size: SAM input size in pixels.

    Returns:
        The window size in tokens.
    """
    grid = image_size // PATCH_SIZE
    if image_size == OFFICIAL_IMAGE_SIZE or grid % OFFICIAL_WINDOW == 0:
        return OFFICIAL_WINDOW
    divisors = [d for d in range(1, grid + 1) if grid % d == 0]
    return min(divisors, key=lambda d: (abs(d - OFFICIAL_WINDOW), -d))


def build_sam(
    size: str = "vit_b", image_size: int = 256, window_size: int | None = None, pixel_norm: str | None = None
) -> Sam:
    """Build an (untrained) SAM from ``segment_anything`` modules.

    Args:
        size: ``"vit_b"``, ``"vit_l"``, ``"vit_h"`` (official dimensions), ``"compact"``, or
            ``"lite_medsam"`` (TinyViT; ``image_size`` must be 256, ``window_size`` is ignored).
        image_size: square input size, a multiple of 16.
        window_size: window of the non-global encoder blocks; ``None`` = the spec's, else
            :func:`auto_window_size`.
        pixel_norm: ``"imagenet"`` or ``"minmax"`` (stored as ``sam.pixel_norm``, used by
            :func:`preprocess_gray`); ``None``: ``minmax`` for ``lite_medsam``, else ``imagenet``.

    Returns:
        A :class:`segment_anything.modeling.Sam` in train mode, official state-dict layout.
    """
    if pixel_norm is not None and pixel_norm not in PIXEL_NORMS:
        raise ValueError(f"unknown pixel_norm {pixel_norm!r}; expected one of {PIXEL_NORMS}")
    if size == LITE_MEDSAM:
        if image_size != LITE_IMAGE_SIZE:
            raise ValueError(f"lite_medsam takes {LITE_IMAGE_SIZE}x{LITE_IMAGE_SIZE} input, got image_size {image_size}")
        sam = build_lite_medsam_sam()
        sam.pixel_norm = pixel_norm or "minmax"
        return sam
    if size not in SAM_SPECS:
        raise ValueError(f"unknown SAM size {size!r}; expected one of {list(SAM_SIZES)}")
    if image_size % PATCH_SIZE:
        raise ValueError(f"image_size must be a multiple of {PATCH_SIZE}, got {image_size}")
    spec = SAM_SPECS[size]
    window = window_size or spec.window_size or auto_window_size(image_size)
    grid = image_size // PATCH_SIZE
    encoder = ImageEncoderViT(
        depth=spec.depth,
        embed_dim=spec.embed_dim,
        img_size=image_size,
        mlp_ratio=4,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        num_heads=spec.num_heads,
        patch_size=PATCH_SIZE,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=spec.global_attn_indexes,
        window_size=window,
        out_chans=spec.prompt_dim,
    )
    prompt_encoder = PromptEncoder(
        embed_dim=spec.prompt_dim,
        image_embedding_size=(grid, grid),
        input_image_size=(image_size, image_size),
        mask_in_chans=spec.mask_in_chans,
    )
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(
            depth=spec.decoder_depth,
            embedding_dim=spec.prompt_dim,
            mlp_dim=spec.decoder_mlp_dim,
            num_heads=spec.decoder_heads,
        ),
        transformer_dim=spec.prompt_dim,
        iou_head_depth=3,
        iou_head_hidden_dim=spec.iou_hidden_dim,
    )
    sam = Sam(image_encoder=encoder, prompt_encoder=prompt_encoder, mask_decoder=decoder)
    sam.pixel_norm = pixel_norm or "imagenet"
    return sam


def preprocess_gray(sam: Sam, image: torch.Tensor) -> torch.Tensor:
    """Map gray CT slices in [0, 1] to the SAM's 3-channel input, per ``sam.pixel_norm``.

    * ``imagenet`` (official SAM; the default for a SAM without ``pixel_norm``): ``x * 255``
      replicated to 3 channels, then ``(x - pixel_mean) / pixel_std``: exactly what
      ``SamPredictor.set_image`` does to an 8-bit gray image replicated to RGB
      (``Sam.preprocess``), minus the 8-bit rounding.
    * ``minmax`` (MedSAM ViT-B, LiteMedSAM): ``(x - min) / max(max - min, 1e-8)`` per image,
      replicated to 3 channels, no ImageNet statistics (MedSAM's and LiteMedSAM's inference). It
      is idempotent, and zero padding of an already min-max scaled slice leaves it unchanged.

    No resizing or padding: the slice must already be ``image_size`` square
    (:func:`.box_prompt.prepare_sam_slice` pads a slice of any shape).

    Args:
        sam: the SAM (``pixel_norm``, ``pixel_mean``, ``pixel_std``).
        image: (B, 1, H, W) slices in [0, 1].

    Returns:
        (B, 3, H, W) encoder input.
    """
    norm = getattr(sam, "pixel_norm", "imagenet")
    if norm == "minmax":
        x = image.float()
        lo = x.amin(dim=(1, 2, 3), keepdim=True)
        hi = x.amax(dim=(1, 2, 3), keepdim=True)
        return ((x - lo) / (hi - lo).clamp_min(1e-8)).expand(-1, 3, -1, -1)
    if norm != "imagenet":
        raise ValueError(f"unknown pixel_norm {norm!r}; expected one of {PIXEL_NORMS}")
    x = image.float() * 255.0
    x = x.expand(-1, 3, -1, -1)
    return (x - sam.pixel_mean) / sam.pixel_std
