"""Encoder backend selection: ONNX Runtime by default for LiteMedSAM on CPU, exported once, int8 refused when off."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from sam_mix_monai.networks import encoder_backend as eb
from sam_mix_monai.networks.encoder_backend import (CountingEncoder, QuantizationToleranceError, apply_encoder_backend,
                                                    check_int8, resolve_encoder_backend)
from sam_mix_monai.networks.onnx_encoder import OnnxEncoder
from sam_mix_monai.networks.sam_builder import build_sam

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "totalseg_example_dicom"
#: Embedding tolerance, ONNX Runtime fp32 against eager fp32 (float rounding of fused kernels): measured max |diff|
#: 2.3e-6 for embeddings of max |value| 0.64 (packaged weights, a random input); the bound leaves 40x.
EMBEDDING_ATOL = 1e-4
#: Mask Dice of ONNX Runtime against eager on a real slice (box prompt).
MASK_DICE_FLOOR = 0.998


@pytest.fixture(scope="module")
def lite():
    from sam_mix_monai.inference.box3d import pretrained_box_sam

    return pretrained_box_sam()


def _fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list:
    monkeypatch.setenv("SAM_MIX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(eb, "_SESSIONS", {})
    monkeypatch.setattr(eb, "_CHECKS", {})
    calls: list = []
    real = eb.export_encoder
    monkeypatch.setattr(eb, "export_encoder", lambda *a: calls.append(a) or real(*a))
    return calls


def test_resolve_backend() -> None:
    lite = build_sam("lite_medsam", 256)
    compact = build_sam("compact", 64)
    assert resolve_encoder_backend(lite, "cpu") == "onnxruntime"
    assert resolve_encoder_backend(lite, "meta") == "torch"  # not the CPU
    assert resolve_encoder_backend(compact, "cpu") == "torch"  # ViT encoders keep PyTorch
    assert resolve_encoder_backend(lite, "cpu", "torch") == "torch"
    with pytest.raises(ValueError, match="CPU only"):
        resolve_encoder_backend(lite, "meta", "onnxruntime")
    with pytest.raises(ValueError, match="expected one of"):
        resolve_encoder_backend(lite, "cpu", "tensorrt")


def test_export_once_per_weights_into_the_cache_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fresh_cache(tmp_path, monkeypatch)
    torch.manual_seed(0)
    a = build_sam("lite_medsam", 256).eval()  # eval: a forward in train mode would update BatchNorm statistics
    b = build_sam("lite_medsam", 256).eval()
    state = {k: v.clone() for k, v in a.state_dict().items()}
    b.load_state_dict(state)
    x = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        ref = a.image_encoder(x)
    assert apply_encoder_backend(a, "cpu") == "onnxruntime"
    assert apply_encoder_backend(b, "cpu") == "onnxruntime"  # same weights: same session, no second export
    assert len(calls) == 1 and a.image_encoder.session is b.image_encoder.session
    files = list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert len(files) == 1 and a.image_encoder.path == files[0]
    monkeypatch.setattr(eb, "_SESSIONS", {})  # a new process: the file is reused, not exported again
    c = build_sam("lite_medsam", 256).eval()
    c.load_state_dict(state)
    apply_encoder_backend(c, "cpu")
    assert len(calls) == 1
    torch.testing.assert_close(c.image_encoder(x), ref, rtol=1e-3, atol=1e-3)
    d = build_sam("lite_medsam", 256)  # other weights: another export
    apply_encoder_backend(d, "cpu")
    assert len(calls) == 2
    e = build_sam("lite_medsam", 256)
    assert apply_encoder_backend(e, "cpu", "torch") == "torch" and not isinstance(e.image_encoder, OnnxEncoder)
    with pytest.raises(ValueError, match="int8 needs"):
        apply_encoder_backend(e, "cpu", "torch", "int8")


def test_weights_hash_sees_every_value() -> None:
    lite = build_sam("lite_medsam", 256).image_encoder
    h = eb.weights_hash(lite)
    with torch.no_grad():
        next(iter(lite.parameters())).view(-1)[0] += 1e-3
    assert eb.weights_hash(lite) != h


def test_int8_refused_when_its_check_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:
    _fresh_cache(tmp_path, monkeypatch)
    monkeypatch.setattr(eb, "check_int8", lambda *a: 0.05)  # a failed check (the check itself: next test)
    torch.manual_seed(0)
    sam = build_sam("lite_medsam", 256)
    with pytest.raises(QuantizationToleranceError, match="int8 encoder refused"):
        apply_encoder_backend(sam, "cpu", quantization="int8")
    sam = build_sam("lite_medsam", 256)
    with caplog.at_level(logging.WARNING):
        assert apply_encoder_backend(sam, "cpu", quantization="int8", strict=False) == "onnxruntime"
    assert "int8 encoder refused" in caplog.text
    assert "int8" not in sam.image_encoder.path.name  # the fp32 export runs instead
    monkeypatch.setattr(eb, "_CHECKS", {})
    monkeypatch.setattr(eb, "check_int8", lambda *a: 0.001)  # a passed check: the int8 file runs
    sam = build_sam("lite_medsam", 256)
    apply_encoder_backend(sam, "cpu", quantization="int8")
    assert sam.image_encoder.path.name.endswith("-int8.onnx")


class _Zeros(torch.nn.Module):
    img_size = 256

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 256, 64, 64)


@pytest.mark.slow  # about 20 s; the refusal itself is tested in make test (test_int8_refused_when_its_check_fails)
def test_check_int8_measures_the_mask_change(lite) -> None:
    enc = lite.image_encoder
    slices = eb._phantom_slices(2)
    assert check_int8(lite, enc, enc, slices) == 0.0
    assert check_int8(lite, enc, _Zeros(), slices) > eb.INT8_TOLERANCE  # a broken encoder fails the check
    assert lite.image_encoder is enc


def test_counting_encoder() -> None:
    enc = CountingEncoder(_Zeros())
    enc(torch.zeros(3, 3, 256, 256))
    enc(torch.zeros(1, 3, 256, 256))
    assert (enc.calls, enc.slices, enc.img_size) == (2, 4, 256)


def _example_slices(n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    from sam_mix_monai.data.io import read_volume
    from sam_mix_monai.experiments.real_ct import reference_on_grid
    from sam_mix_monai.inference.geometry import AxialGeometry

    vol = read_volume(EXAMPLE / "dicom")
    ref = reference_on_grid(vol, EXAMPLE / "liver.nii.gz")
    arr = np.asarray(vol[0], dtype=np.float32)
    geo = AxialGeometry(np.asarray(vol.affine, dtype=np.float64), arr.shape)
    ct = np.clip(geo.read_slab(arr, 0, geo.depth), -160, 240)
    lab = geo.read_slab(ref, 0, geo.depth) > 0
    zs = np.linspace(0, geo.depth - 1, n).round().astype(int)
    return [ct[z] for z in zs], [lab[z] for z in zs]


def test_onnx_runtime_matches_eager_on_a_real_ct_slice(lite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ONNX Runtime fp32 against eager fp32 on slices of the committed real CT, box-prompted."""
    from sam_mix_monai.networks.box_prompt import encode_slices, predict_box_mask, prepare_sam_slice

    if not (EXAMPLE / "dicom").is_dir():
        pytest.skip(f"the committed real CT example is missing at {EXAMPLE}")
    _fresh_cache(tmp_path, monkeypatch)
    eager = lite.image_encoder
    try:
        apply_encoder_backend(lite, "cpu")
        ort = lite.image_encoder
        assert isinstance(ort, OnnxEncoder)
        for image, mask in zip(*_example_slices(3)):
            assert mask.sum() > 1000
            rows, cols = np.nonzero(mask)
            box = (cols.min(), rows.min(), cols.max(), rows.max())
            embeddings, masks = [], []
            for enc in (eager, ort):
                lite.image_encoder = enc
                prep = encode_slices(lite, [prepare_sam_slice(image, lite)], 1)[0]
                embeddings.append(prep.embedding)
                masks.append(predict_box_mask(lite, prep, box).mask.astype(bool))
            assert float((embeddings[0] - embeddings[1]).abs().max()) <= EMBEDDING_ATOL
            dice = 2 * (masks[0] & masks[1]).sum() / (masks[0].sum() + masks[1].sum())
            assert masks[0].sum() > 1000 and dice >= MASK_DICE_FLOOR, dice
    finally:
        lite.image_encoder = eager


def test_auto_falls_back_to_torch_when_the_export_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fresh_cache(tmp_path, monkeypatch)

    def broken(*a):
        raise RuntimeError("exporter broke")

    monkeypatch.setattr(eb, "export_encoder", broken)
    sam = build_sam("lite_medsam", 256)
    assert apply_encoder_backend(sam, "cpu") == "torch" and not isinstance(sam.image_encoder, OnnxEncoder)
    with pytest.raises(RuntimeError, match="exporter broke"):  # asked for explicitly: the error stands
        apply_encoder_backend(sam, "cpu", "onnxruntime")
