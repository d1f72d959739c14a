"""Loading official SAM / MedSAM checkpoints: resizing, wrapping, key checks, unsafe pickles."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from segment_anything import build_sam_vit_b

from sam_mix_monai.networks import ModelConfig, build_model, build_sam, load_sam_checkpoint, read_state_dict
from sam_mix_monai.utils.errors import InputError
from tests.networks import mixed_batch, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="session")
def official_vit_b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint in the official ``sam_vit_b_01ec64.pth`` layout: segment_anything's own
    ``build_sam_vit_b`` (1024 input, window 14), random weights, saved as a plain state dict."""
    torch.manual_seed(0)
    sam = build_sam_vit_b(checkpoint=None)
    with torch.no_grad():  # non-zero position tables, so that resizing is observable
        sam.image_encoder.pos_embed.normal_(0, 0.02)
        for blk in sam.image_encoder.blocks:
            blk.attn.rel_pos_h.normal_(0, 0.02)
            blk.attn.rel_pos_w.normal_(0, 0.02)
    path = tmp_path_factory.mktemp("ckpt") / "sam_vit_b_official_layout.pth"
    torch.save(sam.state_dict(), path)
    return path


def test_official_vit_b_loads_at_256_with_resized_tables(official_vit_b: Path) -> None:
    official = torch.load(official_vit_b, map_location="cpu", weights_only=True)
    sam = build_sam("vit_b", 256)  # window 16, 16x16 tokens
    load_sam_checkpoint(sam, official_vit_b)
    enc = sam.image_encoder
    expected_pos = F.interpolate(
        official["image_encoder.pos_embed"].permute(0, 3, 1, 2), size=(16, 16), mode="bicubic", align_corners=False
    ).permute(0, 2, 3, 1)
    torch.testing.assert_close(enc.pos_embed.data, expected_pos)
    assert official["image_encoder.blocks.0.attn.rel_pos_h"].shape == (27, 64)  # window 14
    assert official["image_encoder.blocks.2.attn.rel_pos_h"].shape == (127, 64)  # global at 64x64 tokens
    assert enc.blocks[0].attn.rel_pos_h.shape == enc.blocks[2].attn.rel_pos_h.shape == (31, 64)
    # Every row: the loaded table gives the relative positions segment_anything's own get_rel_pos
    # computes from the official table (it interpolates a table of another length itself).
    from segment_anything.modeling.image_encoder import get_rel_pos

    for blk, q in ((0, 16), (2, 16)):  # a windowed block (window 16) and a global one (16 x 16 tokens)
        for axis in ("h", "w"):
            key = f"image_encoder.blocks.{blk}.attn.rel_pos_{axis}"
            loaded = getattr(enc.blocks[blk].attn, f"rel_pos_{axis}").data
            torch.testing.assert_close(get_rel_pos(q, q, loaded), get_rel_pos(q, q, official[key]))
            assert not torch.allclose(loaded[1:-1], loaded[:1].expand(29, -1))  # not a constant table
    assert torch.equal(enc.blocks[5].mlp.lin1.weight, official["image_encoder.blocks.5.mlp.lin1.weight"])
    assert torch.equal(sam.mask_decoder.iou_token.weight, official["mask_decoder.iou_token.weight"])


def test_official_vit_b_into_sam_mix_keeps_the_official_encoder(official_vit_b: Path) -> None:
    """The checkpoint reaches SAM-Mix's SAM: with LoRA at its zero start, the image embeddings equal
    those of a plain SAM loaded from the same file, and the decoder weights are the file's."""
    from sam_mix_monai.networks import preprocess_gray

    cfg = ModelConfig(
        name="sam_mix", size="vit_b", image_size=256, classifier="compact", checkpoint=str(official_vit_b)
    )
    net = build_model(cfg).eval()
    enc = net.sam.image_encoder
    # auto mode with a checkpoint: LoRA on a frozen encoder
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n for n in trainable)
    plain = load_sam_checkpoint(build_sam("vit_b", 256), official_vit_b).eval()
    official = torch.load(official_vit_b, map_location="cpu", weights_only=True)
    assert torch.equal(net.sam.mask_decoder.iou_token.weight, official["mask_decoder.iou_token.weight"])
    x, _ = mixed_batch(2, 256)
    with torch.no_grad():
        ours = enc(preprocess_gray(net.sam, x))
        ref = plain.image_encoder(preprocess_gray(plain, x))
        out = net(x)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)
    assert ours.std() > 0.01  # real embeddings, not a constant
    assert out["mask_logits"].shape == (2, 1, 256, 256)
    for key in ("mask_logits", "all_mask_logits", "iou_pred", "class_logits", "cam", "boxes"):
        assert torch.isfinite(out[key]).all(), key


def test_wrapped_checkpoints_and_module_prefix(official_vit_b: Path, tmp_path: Path) -> None:
    state = torch.load(official_vit_b, map_location="cpu", weights_only=True)
    small = {k: v for k, v in list(state.items())[:3]}
    variants = ({"model": small}, {"state_dict": small, "epoch": 3}, {f"module.{k}": v for k, v in small.items()})
    for i, wrapped in enumerate(variants):
        path = tmp_path / f"w{i}.pth"
        torch.save(wrapped, path)
        assert set(read_state_dict(path)) == set(small)


class _RunsCode:
    def __reduce__(self):  # noqa: D105 - a pickle that calls print("EXECUTED") when loaded unsafely
        return (print, ("EXECUTED",))


def test_checkpoint_that_runs_code_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "payload": _RunsCode()}, path)
    capsys.readouterr()
    with pytest.raises(InputError) as err:
        load_sam_checkpoint(build_sam("compact", 64), path)
    assert "EXECUTED" not in capsys.readouterr().out
    assert err.value.path == os.fspath(path)
    assert "refused" in err.value.problem and "would run code (it calls print)" in err.value.problem


def test_wrong_keys_are_named(tmp_path: Path) -> None:
    sam = build_sam("compact", 64)
    state = sam.state_dict()
    state["image_encoder.extra.weight"] = torch.zeros(1)
    del state["mask_decoder.iou_token.weight"]
    path = tmp_path / "wrong.pth"
    torch.save(state, path)
    with pytest.raises(InputError) as err:
        load_sam_checkpoint(build_sam("compact", 64), path)
    msg = str(err.value)
    assert "missing keys: 1 (mask_decoder.iou_token.weight)" in msg
    assert "unexpected keys: 1 (image_encoder.extra.weight)" in msg


def test_many_wrong_keys_are_counted_and_truncated(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({f"backbone.layer{i}.weight": torch.zeros(1) for i in range(20)}, path)
    with pytest.raises(InputError) as err:
        load_sam_checkpoint(build_sam("compact", 64), path)
    msg = str(err.value)
    assert "unexpected keys: 20 (backbone.layer0.weight" in msg and ", ...)" in msg
    assert "missing keys:" in msg


def test_checkpoint_of_another_size_is_refused(official_vit_b: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="keys look like vit_b.*missing keys: 168"):
        load_sam_checkpoint(build_sam("vit_l", 64), official_vit_b)  # 24 blocks vs 12
    state = build_sam("compact", 64).state_dict()
    state["mask_decoder.iou_token.weight"] = torch.zeros(1, 256)
    path = tmp_path / "shapes.pth"
    torch.save(state, path)
    with pytest.raises(InputError, match=r"1 tensors have incompatible shapes .*iou_token.weight: checkpoint \(1, 256"):
        load_sam_checkpoint(build_sam("compact", 64), path)


def test_missing_and_garbage_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_sam_checkpoint(build_sam("compact", 64), tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a readable PyTorch checkpoint"):
        load_sam_checkpoint(build_sam("compact", 64), junk)


def test_load_after_lora_injection_keeps_adapters(tmp_path: Path) -> None:
    cfg = ModelConfig(name="sam_pp", size="compact", image_size=64, encoder_mode="lora")
    src = build_model(cfg)
    path = tmp_path / "compact_official_layout.pth"
    torch.save({k: v for k, v in src.sam.state_dict().items() if ".lora_" not in k}, path)
    dst = build_model(cfg)
    load_sam_checkpoint(dst.sam, path)
    assert torch.equal(dst.sam.image_encoder.blocks[0].attn.qkv.weight, src.sam.image_encoder.blocks[0].attn.qkv.weight)
