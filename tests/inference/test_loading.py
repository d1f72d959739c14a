"""Checkpoints and bundle weights: formats, one-line errors for files of other models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sam_mix_monai.inference import INFERABLE_MODELS, bundle_network, load_checkpoint, load_weights, read_checkpoint
from sam_mix_monai.networks import ModelConfig, SAMMix, UNetSeg, build_model
from sam_mix_monai.utils.errors import InputError
from tests.inference.tiny_model import tiny_checkpoint

CFG = ModelConfig(name="sam_mix", size="compact", image_size=64)


def test_load_training_checkpoint() -> None:
    net, cfg, record = load_checkpoint(tiny_checkpoint())
    assert isinstance(net, SAMMix) and not net.training and cfg.image_size == 64 and record["model"]["name"] == "sam_mix"


def test_engines_checkpoint_written_by_sam_mix_train(tmp_path: Path) -> None:
    from sam_mix_monai.engines.handlers import RunRecord

    state, cfg, _ = read_checkpoint(tiny_checkpoint())
    p = tmp_path / "best.pt"
    torch.save({"network": state, "config": RunRecord(cfg.model_dump(mode="json"), {}, "x").state_dict()}, p)
    net, cfg2, _ = load_checkpoint(p)
    assert cfg2 == cfg and isinstance(net, SAMMix)


def test_training_preprocessing_from_the_run_record(tmp_path: Path) -> None:
    import h5py

    from sam_mix_monai.inference.loading import training_preprocessing

    store = tmp_path / "lits.h5"
    with h5py.File(store, "w") as f:
        f.attrs.update(image_size=256, window_center=50.0, window_width=350.0)
    rec = {"experiment": {"data": {"path": str(store)}, "phantom": {"image_size": 128}}}
    assert training_preprocessing(rec) == {"image_size": 256, "window": (50.0, 350.0)}
    rec["experiment"]["data"]["path"] = str(tmp_path / "gone.h5")  # store deleted: the phantom's (default window)
    assert training_preprocessing(rec) == {"image_size": 128, "window": (40.0, 400.0)}
    assert training_preprocessing({}) == {}


def test_slicing_recorded_in_the_checkpoint_outlives_the_store(tmp_path: Path) -> None:
    from sam_mix_monai.inference.loading import training_preprocessing

    slicing = {"window_center": 60.0, "window_width": 300.0, "keep_rate": 1.0, "image_size": 128}
    rec = {"slicing": slicing, "experiment": {"data": {"path": str(tmp_path / "moved.h5")}}}
    assert training_preprocessing(rec) == {"image_size": 128, "window": (60.0, 300.0), "keep_rate": 1.0}


def test_checkpoint_without_recoverable_window_is_refused_for_inference(tmp_path: Path) -> None:
    from sam_mix_monai.engines.handlers import RunRecord
    from sam_mix_monai.inference.segmenter import Segmenter

    state, cfg, _ = read_checkpoint(tiny_checkpoint())
    p = tmp_path / "best.pt"
    record = RunRecord(cfg.model_dump(mode="json"), {"data": {"path": str(tmp_path / "moved.h5")}}, "x").state_dict()
    record.pop("slicing", None)  # a checkpoint of before the slicing was recorded
    torch.save({"network": state, "config": record}, p)
    with pytest.raises(InputError, match="HU window .* unknown"):
        Segmenter(checkpoint=p, device="cpu")
    assert Segmenter(checkpoint=p, device="cpu", window=(40, 400)).inferer.window_params == (40.0, 400.0)


def test_unet_checkpoint(tmp_path: Path) -> None:
    cfg = ModelConfig(name="unet", size="compact")
    p = tmp_path / "u.pt"
    torch.save({"model": build_model(cfg).state_dict(), "model_config": cfg.model_dump(), "optimizer": {}}, p)
    net, _, _ = load_checkpoint(p)
    assert isinstance(net, UNetSeg)


def _save(tmp_path: Path, obj) -> Path:
    p = tmp_path / "c.pt"
    torch.save(obj, p)
    return p


@pytest.mark.parametrize(
    "kind, match",
    [
        ("missing", "not found"),
        ("garbage", "not a readable"),
        ("plain", "not a sam-mix training checkpoint"),
        ("bad_config", "invalid model_config"),
        ("other_model", "do not match the model"),
        ("other_size", "do not match the model"),
        ("sam_pp", "cannot run volume inference"),
    ],
)
def test_bad_checkpoints(tmp_path: Path, kind: str, match: str) -> None:
    unet = ModelConfig(name="unet", size="compact")
    if kind == "missing":
        p = tmp_path / "none.pt"
    elif kind == "garbage":
        p = tmp_path / "g.pt"
        p.write_bytes(b"not a checkpoint")
    elif kind == "plain":
        p = _save(tmp_path, build_model(unet).state_dict())
    elif kind == "bad_config":
        p = _save(tmp_path, {"model": {}, "model_config": {"name": "sam_mix", "size": "huge"}})
    elif kind == "other_model":  # U-Net weights under a SAM-Mix config
        p = _save(tmp_path, {"model": build_model(unet).state_dict(), "model_config": CFG.model_dump()})
    elif kind == "other_size":
        other = CFG.model_copy(update={"image_size": 128})
        p = _save(tmp_path, {"model": build_model(other).state_dict(), "model_config": CFG.model_dump()})
    else:
        pp = ModelConfig(name="sam_pp", size="compact", image_size=64)
        p = _save(tmp_path, {"model": build_model(pp).state_dict(), "model_config": pp.model_dump()})
    with pytest.raises(InputError, match=match) as e:
        load_checkpoint(p, models=INFERABLE_MODELS)
    assert "\n" not in str(e.value)


def test_bundle_network_accepts_both_key_layouts() -> None:
    state, cfg, _ = read_checkpoint(tiny_checkpoint())
    a = bundle_network(cfg.model_dump())
    a.load_state_dict(state)  # bare SAMMix keys (pre-hook adds "net.")
    b = bundle_network(cfg)
    b.load_state_dict(a.state_dict())  # its own "net." keys
    load_weights(bundle_network(cfg), state)
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))
    assert all(k.startswith("net.") for k in a.state_dict())
    with pytest.raises(InputError, match="SAM-Mix"):
        bundle_network({"name": "unet"})
