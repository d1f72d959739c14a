"""ONNX Runtime encoder: same embeddings as the PyTorch encoder, any batch through a fixed exported batch."""

from __future__ import annotations

import pytest
import torch

from sam_mix_monai.networks.onnx_encoder import OnnxEncoder, fast_cpu_encoder, use_onnx_encoder
from sam_mix_monai.networks.sam_builder import build_sam
from tests.networks import one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def test_onnx_encoder_matches_eager_and_pads_partial_batches() -> None:
    torch.manual_seed(0)
    sam = build_sam("compact", 64).eval()
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        ref = sam.image_encoder(x)
    ort = OnnxEncoder(sam.image_encoder, batch=2, threads=1)
    assert ort.path.is_file() and ort.img_size == 64
    out = ort(x)  # batches of 2: the last one padded
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    use_onnx_encoder(sam, batch=2, threads=1)
    assert isinstance(sam.image_encoder, OnnxEncoder)


def test_fast_cpu_encoder_swaps_only_a_lite_medsam_encoder_on_cpu() -> None:
    compact = build_sam("compact", 64).eval()
    assert not fast_cpu_encoder(compact, "cpu")  # ViT encoders keep PyTorch
    assert not isinstance(compact.image_encoder, OnnxEncoder)
    torch.manual_seed(0)
    lite = build_sam("lite_medsam", 256).eval()
    assert not fast_cpu_encoder(lite, "meta")  # not the CPU: untouched
    x = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        ref = lite.image_encoder(x)
    assert fast_cpu_encoder(lite, "cpu")
    assert isinstance(lite.image_encoder, OnnxEncoder) and lite.image_encoder.batch == 1
    torch.testing.assert_close(lite.image_encoder(x), ref, rtol=1e-3, atol=1e-3)
