"""The demo's YAML: the shipped config and one-line errors for bad ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sam_mix_monai.experiments.demo_config import default_demo_config, load_demo_config
from sam_mix_monai.utils.errors import InputError

ROOT = Path(__file__).resolve().parents[2]


def write_demo_yaml(tmp_path: Path, runs: list[dict], name: str = "demo", **extra) -> Path:
    """A demo YAML with these runs (and extra top-level keys)."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"runs": runs, **extra}))
    return path


def test_shipped_demo_config_is_valid_and_consistent():
    path = ROOT / "configs" / "demo.yaml"
    demo = load_demo_config(path)
    assert [r.label for r in demo.runs] == ["SAM-Mix-50", "U-Net-50"]
    assert demo.infer_model == "SAM-Mix-50"
    from sam_mix_monai.engines.config import load_config

    cfgs = [load_config(path.parent / r.config, r.overrides) for r in demo.runs]
    assert [c.model.name for c in cfgs] == ["sam_mix", "unet"]
    assert cfgs[0].phantom == cfgs[1].phantom is not None  # one data set for both models
    assert cfgs[0].data.n_labelled == cfgs[1].data.n_labelled == 50
    assert cfgs[0].data.label_seed == cfgs[1].data.label_seed  # the same 50 slices
    sam = cfgs[0]  # the documented demo design: pretrained LiteMedSAM as is, only the prompt path trains
    assert sam.model.size == "lite_medsam" and sam.model.resolved_encoder_mode() == "frozen"
    assert sam.model.prompts == "box" and (sam.loss.seg_dice, sam.loss.seg_bce, sam.loss.iou) == (0.0, 0.0, 0.0)
    assert sam.model.liver_head and sam.loss.head > 0 and sam.model.prompt_mode == "volume"  # the default model's design
    assert sam.train.precision == "fp32" and not sam.augment.labelled  # one model on every CPU; cached embeddings
    assert demo.infer_precision in ("fp32", "bf16")
    assert default_demo_config().name == "demo.yaml"


def test_bad_demo_configs_are_one_line_input_errors(tmp_path):
    with pytest.raises(InputError, match="runs.0.bogus: Extra inputs are not permitted"):
        load_demo_config(write_demo_yaml(tmp_path, [{"label": "A", "config": "a.yaml", "bogus": 1}]))
    with pytest.raises(InputError, match="runs: List should have at least 1 item"):
        load_demo_config(write_demo_yaml(tmp_path, []))
    with pytest.raises(InputError, match="demo config not found"):
        load_demo_config(tmp_path / "nowhere.yaml")
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(InputError, match="a demo config must be a mapping"):
        load_demo_config(listed)
    broken = tmp_path / "broken.yaml"
    broken.write_text("runs: [\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_demo_config(broken)
