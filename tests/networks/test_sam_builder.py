"""SAM configurations, gray-to-RGB mapping and paired batched decoding."""

from __future__ import annotations

import pytest
import torch
from segment_anything.modeling import Sam

from sam_mix_monai.networks.decoding import decode_paired, sam_forward, select_best_mask
from sam_mix_monai.networks.sam_builder import SAM_SPECS, auto_window_size, build_sam, preprocess_gray
from tests.networks import one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def test_official_dims() -> None:
    assert (SAM_SPECS["vit_b"].embed_dim, SAM_SPECS["vit_b"].depth, SAM_SPECS["vit_b"].num_heads) == (768, 12, 12)
    assert (SAM_SPECS["vit_l"].embed_dim, SAM_SPECS["vit_l"].depth, SAM_SPECS["vit_l"].num_heads) == (1024, 24, 16)
    assert (SAM_SPECS["vit_h"].embed_dim, SAM_SPECS["vit_h"].depth, SAM_SPECS["vit_h"].num_heads) == (1280, 32, 16)
    assert SAM_SPECS["vit_h"].global_attn_indexes == (7, 15, 23, 31)


def test_auto_window_avoids_padding() -> None:
    assert auto_window_size(1024) == 14  # official
    assert auto_window_size(256) == 16
    assert auto_window_size(512) == 16
    assert auto_window_size(128) == 8
    for size in (128, 256, 512, 768):
        assert (size // 16) % auto_window_size(size) == 0


def test_compact_build_shapes() -> None:
    sam = build_sam("compact", 128)
    assert isinstance(sam, Sam)
    enc = sam.image_encoder
    assert enc.pos_embed.shape == (1, 8, 8, 192)
    assert [b.window_size for b in enc.blocks] == [8, 0, 8, 0]
    assert sam.prompt_encoder.mask_input_size == (32, 32)
    assert enc(torch.zeros(1, 3, 128, 128)).shape == (1, 128, 8, 8)


def test_vit_b_at_256_rel_pos_sizes() -> None:
    sam = build_sam("vit_b", 256)
    blocks = sam.image_encoder.blocks
    assert blocks[0].window_size == 16 and blocks[2].window_size == 0
    assert blocks[0].attn.rel_pos_h.shape == (31, 64)  # 2 * 16 - 1, head dim 768 / 12
    assert sam.image_encoder.pos_embed.shape == (1, 16, 16, 768)


def test_preprocess_gray_matches_sam_preprocess_of_rgb_8bit() -> None:
    sam = build_sam("compact", 64)
    gray = torch.randint(0, 256, (2, 1, 64, 64)).float() / 255.0
    ours = preprocess_gray(sam, gray)
    rgb = (gray * 255.0).round().repeat(1, 3, 1, 1)  # an 8-bit gray image replicated to RGB
    ref = torch.stack([sam.preprocess(im) for im in rgb])  # what SamPredictor feeds the encoder
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-4)


def test_decode_paired_equals_per_image_mask_decoder() -> None:
    torch.manual_seed(0)
    sam = build_sam("compact", 64).eval()
    b = 3
    emb = torch.randn(b, 128, 4, 4)
    boxes = torch.tensor([[4.0, 5.0, 30.0, 40.0], [0.0, 0.0, 63.0, 63.0], [20.0, 10.0, 50.0, 33.0]])
    masks_in = torch.rand(b, 1, 16, 16)
    with torch.no_grad():
        sparse, dense = sam.prompt_encoder(points=None, boxes=boxes, masks=masks_in)
        pe = sam.prompt_encoder.get_dense_pe()
        ours, iou = decode_paired(sam.mask_decoder, emb, pe, sparse, dense, multimask_output=True)
        for i in range(b):  # the official decoder, one image with its own prompt at a time
            ref, ref_iou = sam.mask_decoder(emb[i : i + 1], pe, sparse[i : i + 1], dense[i : i + 1], True)
            torch.testing.assert_close(ours[i : i + 1], ref, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(iou[i : i + 1], ref_iou, rtol=1e-5, atol=1e-6)
    assert ours.shape == (b, 3, 16, 16) and iou.shape == (b, 3)


def test_select_best_mask_gathers_per_image() -> None:
    masks = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    iou = torch.tensor([[0.1, 0.9, 0.3], [0.8, 0.1, 0.2]])
    best, best_iou = select_best_mask(masks, iou)
    assert torch.equal(best[0, 0], masks[0, 1]) and torch.equal(best[1, 0], masks[1, 0])
    assert best_iou.tolist() == pytest.approx([0.9, 0.8])


def test_sam_forward_with_gradients_and_points() -> None:
    sam = build_sam("compact", 64)
    x = torch.rand(2, 1, 64, 64)
    pts = (torch.tensor([[[10.0, 20.0]], [[30.0, 30.0]]]), torch.ones(2, 1))
    out = sam_forward(sam, x, points=pts)
    assert out["mask_logits"].shape == (2, 1, 64, 64) and out["all_mask_logits"].shape == (2, 3, 64, 64)
    assert out["low_res_logits"].shape == (2, 1, 16, 16)
    out["mask_logits"].sum().backward()  # Sam.forward would be no_grad
    assert sam.mask_decoder.output_upscaling[0].weight.grad is not None
