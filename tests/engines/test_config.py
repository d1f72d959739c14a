"""Experiment configs: every shipped config validates; errors are one line naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from sam_mix_monai.engines.config import ExperimentConfig, apply_overrides, dump_config, load_config
from sam_mix_monai.utils.errors import InputError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
EXPECTED = [
    "phantom_demo", "lits_sammix_5", "lits_sammix_50", "lits_sammix_100", "totalseg_crossdomain",
    "unet_5", "unet_50", "unet_100", "sam_pp_0", "sam_pp_5", "sam_pp_50", "sam_pp_100",
]


@pytest.mark.parametrize("name", EXPECTED)
def test_shipped_configs_validate(name, tmp_path):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert isinstance(cfg, ExperimentConfig) and cfg.name == name
    (tmp_path / "resolved.yaml").write_text(dump_config(cfg))
    assert load_config(tmp_path / "resolved.yaml") == cfg  # the resolved dump is itself a valid config


def test_paper_settings_in_configs():
    cfg = load_config(CONFIGS / "lits_sammix_50.yaml")
    assert cfg.data.n_labelled == 50 and cfg.model.size == "lite_medsam" and cfg.model.resolved_encoder_mode() == "lora" and cfg.model.lora_rank == 8
    assert cfg.loss.pseudo_threshold == 0.7 and cfg.loss.pseudo_cls == 0.25 and cfg.train.lr == 1e-4
    assert load_config(CONFIGS / "sam_pp_0.yaml").train.epochs == 0
    assert load_config(CONFIGS / "totalseg_crossdomain.yaml").evaluate.cross_domain


def test_overrides_are_yaml_scalars(tmp_path):
    cfg = load_config(CONFIGS / "phantom_demo.yaml", ["train.lr=3e-4", "train.epochs=2", "unlabelled.enabled=false",
                                                        "data.n_labelled=null", "output.dir=" + str(tmp_path)])
    assert cfg.train.lr == 3e-4 and cfg.train.epochs == 2 and not cfg.unlabelled.enabled
    assert cfg.data.n_labelled is None and cfg.output.dir == tmp_path
    raw = apply_overrides({"a": {"b": 1}}, ["a.c.d=[1, 2]"])
    assert raw == {"a": {"b": 1, "c": {"d": [1, 2]}}}


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.lr=abc", "train.lr: Input should be a valid number"),
        ("train.bogus=1", "train.bogus: Extra inputs are not permitted"),
        ("bogus=1", "bogus: Extra inputs are not permitted"),
        ("model.name=resnet", "model.name: Input should be 'sam_mix', 'unet', 'sam_pp' or 'sam_box'"),
        ("loss.pseudo_threshold=2", "loss.pseudo_threshold: Input should be less than or equal to 1"),
        ("evaluate.protocols=[slice3d]", "evaluate.protocols.0: Input should be 'slice2d' or 'volume3d'"),
    ],
)
def test_errors_name_the_file_and_key(override, expected):
    with pytest.raises(InputError) as e:
        load_config(CONFIGS / "phantom_demo.yaml", [override])
    msg = str(e.value)
    assert msg.startswith(str(CONFIGS / "phantom_demo.yaml") + ": " + expected), msg
    assert "\n" not in msg


def test_bad_files(tmp_path):
    with pytest.raises(InputError, match="config file not found"):
        load_config(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("train: [1,\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(InputError, match="mapping of sections"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "nodata.yaml").write_text("name: x\n")
    with pytest.raises(InputError, match="data: Field required"):
        load_config(tmp_path / "nodata.yaml")
    with pytest.raises(InputError, match="expected key=value"):
        load_config(CONFIGS / "phantom_demo.yaml", ["train.lr"])
