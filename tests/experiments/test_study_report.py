"""The study report's model lines say where each network's weights come from."""

from __future__ import annotations

from sam_mix_monai.engines.config import load_config
from sam_mix_monai.experiments.study_report import _model_line
from tests.conftest import ROOT


def test_model_line_names_packaged_weights_checkpoint_or_random_init():
    base = ROOT / "configs" / "ircadb_sammix_50.yaml"
    lite = _model_line("SAM-Mix", load_config(base))
    assert "packaged pretrained weights" in lite and "random init" not in lite
    assert "8 epochs x 12 iterations" in lite
    assert "random init" in _model_line("U-Net", load_config(base, ["model.name=unet"]))
    assert "random init" in _model_line("SAM-Mix", load_config(base, ["model.size=compact"]))
    assert "checkpoint `w.pth`" in _model_line("SAM-Mix", load_config(base, ["model.size=vit_b", "model.checkpoint=w.pth"]))
