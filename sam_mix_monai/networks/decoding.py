"""Batched SAM decoding with one prompt per image.

``segment_anything``'s ``MaskDecoder.predict_masks`` assumes one image and many prompts: it
``repeat_interleave``-s the image embedding by the number of prompts, so B images with one box
each would become B x B pairs. :func:`decode_paired` is the same computation with image ``i``
paired with prompt ``i``; it reuses the decoder's own submodules and weights.

``Sam.forward`` runs under ``@torch.no_grad()``, so training calls the encoder, the prompt
encoder and this function directly (:func:`sam_forward`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling import MaskDecoder, Sam

from sam_mix_monai.networks.embedding_cache import encode_images
from sam_mix_monai.networks.sam_builder import preprocess_gray

__all__ = ["decode_paired", "select_best_mask", "sam_forward", "sam_encode", "sam_decode"]


def decode_paired(
    decoder: MaskDecoder,
    image_embeddings: torch.Tensor,
    image_pe: torch.Tensor,
    sparse_embeddings: torch.Tensor,
    dense_embeddings: torch.Tensor,
    multimask_output: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``MaskDecoder.forward`` with image ``i`` paired with prompt ``i`` (no B x B expansion).

    Args:
        decoder: SAM mask decoder.
        image_embeddings: (B, C, h, w).
        image_pe: (1, C, h, w) dense positional encoding (``prompt_encoder.get_dense_pe()``).
        sparse_embeddings: (B, N, C) point / box tokens (N may be 0).
        dense_embeddings: (B, C, h, w) mask-prompt embedding (or the no-mask embedding).
        multimask_output: return the 3 disambiguation masks (else the single-mask output).

    Returns:
        ``(masks, iou_pred)``: (B, 3 or 1, 4h, 4w) low-resolution mask logits and (B, 3 or 1) IoU scores.
    """
    b = image_embeddings.shape[0]
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    output_tokens = output_tokens.unsqueeze(0).expand(b, -1, -1)
    tokens = torch.cat((output_tokens, sparse_embeddings), dim=1)

    src = image_embeddings + dense_embeddings
    pos_src = image_pe.expand(b, -1, -1, -1)
    _, c, h, w = src.shape

    hs, src = decoder.transformer(src, pos_src, tokens)
    iou_token_out = hs[:, 0, :]
    mask_tokens_out = hs[:, 1 : (1 + decoder.num_mask_tokens), :]

    src = src.transpose(1, 2).reshape(b, c, h, w)
    upscaled = decoder.output_upscaling(src)
    hyper_in = torch.stack(
        [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], dim=1
    )
    _, c2, h2, w2 = upscaled.shape
    masks = (hyper_in @ upscaled.reshape(b, c2, h2 * w2)).reshape(b, -1, h2, w2)
    iou_pred = decoder.iou_prediction_head(iou_token_out)

    sl = slice(1, None) if multimask_output else slice(0, 1)
    return masks[:, sl], iou_pred[:, sl]


def select_best_mask(masks: torch.Tensor, iou_pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick, per image, the mask with the highest predicted IoU.

    Args:
        masks: (B, M, H, W) mask logits.
        iou_pred: (B, M) predicted IoU.

    Returns:
        ``(best_mask, best_iou)``: (B, 1, H, W) and (B,).
    """
    idx = iou_pred.argmax(dim=1, keepdim=True)  # (B, 1)
    h, w = masks.shape[-2:]
    best = torch.gather(masks, 1, idx.view(-1, 1, 1, 1).expand(-1, 1, h, w))
    return best, torch.gather(iou_pred, 1, idx).squeeze(1)


def sam_forward(
    sam: Sam,
    image: torch.Tensor,
    boxes: torch.Tensor | None = None,
    mask_prompt: torch.Tensor | None = None,
    points: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Run SAM with gradients on a batch of gray slices, one prompt set per image.

    Args:
        sam: SAM from :func:`.sam_builder.build_sam` (input size ``S = sam.image_encoder.img_size``).
        image: (B, 1, S, S) slices in [0, 1] (mapped to SAM input by :func:`.sam_builder.preprocess_gray`).
        boxes: (B, 4) boxes (x1, y1, x2, y2) in input pixels, or ``None``.
        mask_prompt: (B, 1, S/4, S/4) dense prompt (SAM's mask-input size), or ``None``.
        points: ``(coords (B, N, 2) as (x, y) pixels, labels (B, N))``, or ``None``.

    Returns:
        dict with ``all_mask_logits`` (B, 3, S, S), ``iou_pred`` (B, 3), ``mask_logits`` (B, 1, S, S)
        (highest predicted IoU), ``chosen_iou`` (B,), ``low_res_logits`` (B, 1, S/4, S/4).
    """
    return sam_decode(sam, sam_encode(sam, image), tuple(image.shape[-2:]), boxes, mask_prompt, points)


def sam_encode(sam: Sam, image: torch.Tensor) -> torch.Tensor:
    """Image embeddings (B, C, h, w) of (B, 1, S, S) gray slices in [0, 1] (the first half of :func:`sam_forward`)."""
    return encode_images(sam, preprocess_gray(sam, image))  # via sam.embedding_cache when attached


def sam_decode(
    sam: Sam,
    embeddings: torch.Tensor,
    size: tuple[int, int],
    boxes: torch.Tensor | None = None,
    mask_prompt: torch.Tensor | None = None,
    points: tuple[torch.Tensor, torch.Tensor] | None = None,
    multimask_output: bool = True,
) -> dict[str, torch.Tensor]:
    """The prompt encoder and mask decoder of :func:`sam_forward` on given image embeddings.

    Args:
        sam: SAM.
        embeddings: (B, C, h, w) image-encoder output.
        size: (S, S) input size the masks are upsampled to.
        boxes, mask_prompt, points: prompts, as in :func:`sam_forward`.
        multimask_output: the 3 disambiguation masks, best by predicted IoU (``False``: the single-mask
            token, LiteMedSAM's official box inference; ``all_mask_logits`` then holds one mask).

    Returns:
        :func:`sam_forward`'s dict.
    """
    sparse, dense = sam.prompt_encoder(points=points, boxes=boxes, masks=mask_prompt)
    if dense.shape[0] != embeddings.shape[0]:  # no prompt at all: prompt encoder assumes batch 1
        dense = dense.expand(embeddings.shape[0], -1, -1, -1)
        sparse = sparse.expand(embeddings.shape[0], -1, -1)
    low_res, iou_pred = decode_paired(
        sam.mask_decoder, embeddings, sam.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output=multimask_output
    )
    best_low, best_iou = select_best_mask(low_res, iou_pred)
    all_masks = F.interpolate(low_res, size=size, mode="bilinear", align_corners=False)
    best, _ = select_best_mask(all_masks, iou_pred)
    return {
        "all_mask_logits": all_masks,
        "iou_pred": iou_pred,
        "mask_logits": best,
        "chosen_iou": best_iou,
        "low_res_logits": best_low,
    }
