"""``sam-mix export``: TorchScript / ONNX files that match eager and run without the package."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sam_mix_monai.cli.main import main
from sam_mix_monai.inference import bundle_network, read_checkpoint
from tests.inference.tiny_model import liver_batch, run_isolated, tiny_checkpoint

#: Largest allowed |logit| difference between an export and eager PyTorch (float32, CPU).
ATOL = 1e-3


def _eager(x: torch.Tensor) -> np.ndarray:
    state, cfg, _ = read_checkpoint(tiny_checkpoint())
    net = bundle_network(cfg)
    net.load_state_dict(state)
    with torch.no_grad():
        return net(x).numpy()


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_matches_eager_without_package(tmp_path: Path, fmt: str, capsys) -> None:
    out = tmp_path / ("model.ts" if fmt == "torchscript" else "model.onnx")
    assert main(["-q", "export", "--checkpoint", str(tiny_checkpoint()), "--format", fmt, "--output", str(out)]) == 0
    assert "mask agreement" in capsys.readouterr().out
    x = liver_batch(5)  # another batch size than the traced one (2)
    eager = _eager(x)
    got = run_isolated(out, fmt, x, tmp_path)
    live = eager > -1e3
    assert live.any(), "the check needs slices the classifier does not gate"
    assert got.shape == eager.shape
    np.testing.assert_allclose(got[live], eager[live], rtol=0, atol=ATOL)
    np.testing.assert_array_equal(got > 0, eager > 0)
    assert not list(tmp_path.glob("*.part*"))


def test_export_errors(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.pt"
    torch.save({"weights": 1}, bad)
    assert main(["export", "--checkpoint", str(bad), "--format", "onnx", "--output", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a sam-mix training checkpoint" in err
    assert not (tmp_path / "m.onnx").exists()


def test_bundle_weights_from_a_training_checkpoint(tmp_path: Path, capsys) -> None:
    out = tmp_path / "models" / "model.pt"
    assert main(["export", "--checkpoint", str(tiny_checkpoint()), "--format", "bundle", "--output", str(out)]) == 0
    assert "bundle weights" in capsys.readouterr().out
    state = torch.load(out, weights_only=True)
    ref_state, cfg, _ = read_checkpoint(tiny_checkpoint())
    net = bundle_network(cfg)
    net.load_state_dict(state)  # the bundle's network_def takes it as it is
    assert all(torch.equal(state[f"net.{k}"], v) for k, v in ref_state.items())
