"""The bundle without ``models/model.pt``: the packaged default liver model segments, on its own design, and says so."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

import sam_mix_monai
from sam_mix_monai.data.phantom import generate_case
from sam_mix_monai.inference import bundle_weights, load_bundle
from sam_mix_monai.networks import ModelConfig, SAMMix
from sam_mix_monai.networks.checkpoint import safe_torch_load
from sam_mix_monai.networks.default_model import DEFAULT_MODEL
from sam_mix_monai.utils.errors import InputError
from tests.inference.tiny_model import save_case

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "sam_mix_liver_ct"
INFERENCE = BUNDLE / "configs" / "inference.yaml"


def _design() -> dict:
    return ConfigParser.load_config_file(str(INFERENCE))["default_model_config"]


def test_inference_yaml_describes_the_default_model() -> None:
    shipped = ModelConfig(**safe_torch_load(DEFAULT_MODEL)["model_config"])
    assert ModelConfig(**_design()) == shipped
    assert shipped.size == "lite_medsam" and shipped.liver_head and shipped.prompt_mode == "volume"
    text = INFERENCE.read_text()
    assert 'default_model: "$sam_mix_monai.networks.default_model.DEFAULT_MODEL"' in text
    assert 'default_model: "@default_model"' in text  # the evaluator is given it


def test_missing_weights_without_a_default_model_or_with_another_design() -> None:
    net = torch.nn.Linear(1, 1)
    with pytest.raises(InputError, match="bundle weights not found"):
        bundle_weights(net, "/nonexistent/models/model.pt")
    with pytest.raises(InputError, match="differs from the bundle's default_model_config in liver_head"):
        bundle_weights(net, "/nonexistent/models/model.pt", DEFAULT_MODEL, {**_design(), "liver_head": False})


def _small_ct(path: Path, slices: int = 4) -> Path:
    """A few axial slices through the middle of a small phantom liver (the least the LiteMedSAM has to encode)."""
    c = generate_case(0, 0, "b", 64, 16, orientation="RAS")
    z = np.flatnonzero((c.label > 0).any(axis=(0, 1)))
    lo = int(z[len(z) // 2]) - slices // 2
    return save_case(path, c.image[..., lo : lo + slices], c.affine)


def test_sam_mix_infer_bundle_loads_the_default_model(tmp_path: Path, caplog) -> None:
    root = tmp_path / "bundle"
    shutil.copytree(BUNDLE, root)
    assert not (root / "models" / "model.pt").exists()
    with caplog.at_level(logging.INFO, logger="sam_mix_monai.inference.loading"):
        net, settings = load_bundle(root)
    assert isinstance(net, SAMMix) and net.liver_head is not None and settings["image_size"] == 256
    assert any("models/model.pt not found; segmenting with the default liver model" in r.getMessage()
               and "sam_mix on lite_medsam, liver head, volume prompts" in r.getMessage() for r in caplog.records)


def test_bundle_run_without_weights_segments_like_the_default_model(tmp_path: Path, caplog) -> None:
    src = _small_ct(tmp_path / "ct" / "c0.nii.gz")
    parser = ConfigParser()
    parser.read_config(str(INFERENCE))
    parser["bundle_root"] = str(tmp_path / "bundle")  # no models/model.pt there
    parser["dataset_dir"] = str(src.parent)
    parser["output_dir"] = str(tmp_path / "out")
    parser["device"] = "$torch.device('cpu')"
    with caplog.at_level(logging.INFO, logger="sam_mix_monai.inference.loading"):
        parser.get_parsed_content("evaluator").run()
    assert any("segmenting with the default liver model" in r.getMessage() for r in caplog.records)
    got = np.asarray(nib.load(str(tmp_path / "out" / "c0_liver.nii.gz")).dataobj)
    # the same model as `Segmenter()` (the bundle runs the encoder in PyTorch)
    ref = sam_mix_monai.segment(src, device="cpu", encoder_backend="torch")
    assert got.any()
    np.testing.assert_array_equal(got, np.asarray(ref.dataobj))
