"""``sam-mix train`` / ``sam-mix evaluate``: bad configs are one error line with exit code 2; a run evaluates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sam_mix_monai.cli.main import main
from tests.engines.conftest import tiny_config, tiny_phantom, write_config  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parents[2]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(
    "section, values, expected",
    [
        ("train", {"bogus": 1}, "train.bogus: Extra inputs are not permitted"),
        ("train", {"lr": "fast"}, "train.lr: Input should be a valid number"),
        ("data", {"path": "missing.h5"}, "data.path: HDF5 file not found: missing.h5"),
        ("data", {"n_labelled": 5000}, "data.n_labelled: asked for 5000 labelled slices but only"),
    ],
)
def test_bad_configs_exit_2_with_one_line(tiny_phantom, tmp_path, capsys, section, values, expected):
    raw = tiny_config(tiny_phantom[0], tmp_path / "run")
    raw[section].update(values)
    cfg = write_config(tmp_path / "bad.yaml", raw)
    assert main(["train", "--config", str(cfg)]) == 2
    line = _error_line(capsys)
    assert line.startswith(f"sam-mix train: error: {cfg}: {expected}"), line
    assert not (tmp_path / "run" / "last.pt").exists()


def test_bad_overrides_and_resume(tiny_phantom, tmp_path, capsys):
    cfg = write_config(tmp_path / "ok.yaml", tiny_config(tiny_phantom[0], tmp_path / "run"))
    assert main(["train", "--config", str(cfg), "--set", "train.epochs=-1"]) == 2
    assert "train.epochs: Input should be greater than or equal to 0" in _error_line(capsys)
    assert main(["train", "--resume", str(tmp_path / "nowhere")]) == 2
    assert "not a run directory" in _error_line(capsys)
    assert main(["evaluate", "--checkpoint", str(tmp_path / "none.pt"), "--data", str(tiny_phantom[0])]) == 2
    assert "checkpoint file not found" in _error_line(capsys)


def test_console_script_exit_code(tmp_path):
    (tmp_path / "bad.yaml").write_text("data: {path: x.h5}\ntrain: {lr: [1]}\n")
    proc = subprocess.run([sys.executable, "-m", "sam_mix_monai.cli.main", "train", "--config", str(tmp_path / "bad.yaml")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"sam-mix train: error: {tmp_path / 'bad.yaml'}: train.lr: Input should be a valid number"


def test_train_then_evaluate(tiny_phantom, tmp_path, capsys):
    raw = tiny_config(tiny_phantom[0], tmp_path / "run", tiny_phantom[1], train={"epochs": 1, "iterations_per_epoch": 2})
    cfg = write_config(tmp_path / "ok.yaml", raw)
    assert main(["train", "--config", str(cfg), "--set", "evaluate.protocols=[slice2d]"]) == 0
    run = tmp_path / "run"
    for name in ("config.yaml", "run.json", "last.pt", "best.pt", "metrics.json", "curves.png", "train.log"):
        assert (run / name).is_file(), name
    record = json.loads((run / "run.json").read_text())[-1]
    assert record["version"] and "git_commit" in record
    ckpt = torch.load(run / "best.pt", weights_only=True)
    assert ckpt["config"]["model"]["name"] == "sam_mix" and ckpt["config"]["experiment"]["name"] == "tiny"
    # a second fresh run into the same directory is refused
    capsys.readouterr()  # drop what the successful run logged
    assert main(["train", "--config", str(cfg)]) == 2
    assert "already holds a run" in _error_line(capsys)
    out_json = tmp_path / "eval.json"
    assert main(["evaluate", "--checkpoint", str(run / "best.pt"), "--data", str(tiny_phantom[1]), "--split", "all",
                 "--protocol", "slice2d", "--protocol", "volume3d", "--output", str(out_json)]) == 0
    res = json.loads(out_json.read_text())
    assert res["cases"] == 2 and set(res["metrics"]) >= {"slice2d_dice", "volume3d_dice", "volume3d_hd95", "cls_auc"}
    assert "3D Dice" in capsys.readouterr().out
