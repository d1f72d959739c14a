"""``sam-mix pretrain``: bad arguments are one error line with exit code 2; a tiny run writes the weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sam_mix_monai.cli.main import COMMANDS, main
from sam_mix_monai.networks import ModelConfig, build_model


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--steps", "0"], "--steps must be at least 1 (got 0)"),
        (["--cases", "-2"], "--cases must be at least 1 (got -2)"),
        (["--image-size", "100"], "--image-size must be a multiple of 16 and at least 64 (got 100)"),
        (["--threads", "0"], "--threads must be at least 1 (got 0)"),
        (["--lr", "0"], "--lr must be positive (got 0.0)"),
        (["--transfer", "missing.h5"], "missing.h5: HDF5 file not found"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys, extra, expected):
    out = tmp_path / "sam.pt"
    assert main(["pretrain", "--out", str(out), *extra]) == 2
    line = _error_line(capsys)
    assert line.startswith("sam-mix pretrain: error: ") and line.endswith(expected), line
    assert not out.exists()


def test_bad_output_paths(tmp_path, capsys):
    assert main(["pretrain", "--out", str(tmp_path)]) == 2
    assert "is a folder" in _error_line(capsys)
    assert main(["pretrain", "--out", str(tmp_path / "w.json")]) == 2
    assert "cannot be a .json file" in _error_line(capsys)
    with pytest.raises(SystemExit) as e:  # argparse: not an int
        main(["pretrain", "--out", str(tmp_path / "w.pt"), "--steps", "many"])
    assert e.value.code == 2


def test_registered():
    assert "pretrain" in COMMANDS


def test_tiny_run_writes_weights_and_sidecar(tmp_path, capsys):
    out = tmp_path / "w" / "sam.pt"
    rc = main(["-q", "pretrain", "--out", str(out), "--cases", "2", "--image-size", "64", "--steps", "3",
               "--batch-size", "2", "--seed", "1"])
    assert rc == 0
    stdout = capsys.readouterr().out
    assert "held-out organ Dice box" in stdout and f"wrote {out}" in stdout
    doc = json.loads((tmp_path / "w" / "sam.json").read_text())
    assert doc["cases"] == 2 and doc["heldout_cases"] == 1 and doc["data_seed"] == 1000
    assert doc["config"]["steps"] == 3 and doc["config"]["seed"] == 1 and "liver" not in doc["organs"]
    net = build_model(ModelConfig(size="compact", image_size=64, checkpoint=str(out)))
    state = torch.load(out, map_location="cpu", weights_only=True)
    torch.testing.assert_close(net.sam.state_dict()["mask_decoder.iou_token.weight"], state["mask_decoder.iou_token.weight"])
    assert sorted(p.name for p in Path(out.parent).iterdir()) == ["sam.json", "sam.pt"]
