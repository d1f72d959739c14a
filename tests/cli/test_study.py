"""``sam-mix study``: a real tiny study end to end (tables, plot, resume), bad configs, failed cells."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from sam_mix_monai.cli.main import main
from sam_mix_monai.experiments import jobs
from sam_mix_monai.experiments.table import parse_markdown_table, parse_mean_sd
from tests.engines.conftest import tiny_config, tiny_phantom, write_config  # noqa: F401 (fixture)


def _study(tmp_path: Path, store_a: Path, store_b: Path, models=None, **changes) -> Path:
    base = tiny_config(store_a, tmp_path / "unused", cross=store_b, data={"val_split": None},
                       train={"epochs": 1, "iterations_per_epoch": 2}, evaluate={"protocols": ["slice2d"]})
    write_config(tmp_path / "base.yaml", base)
    raw = {
        "name": "tiny study",
        "base": "base.yaml",
        "models": models or [
            {"label": "SAM-Mix", "set": {"model.name": "sam_mix"}, "n_labelled": [4]},
            {"label": "U-Net", "set": {"model.name": "unet", "unlabelled.enabled": False}, "n_labelled": [4]},
        ],
        "seeds": [0, 1],
        "workers": 2,
        "output": {"dir": str(tmp_path / "out")},
        **changes,
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_tiny_study_end_to_end_then_resume_skips_every_cell(tiny_phantom, tmp_path, capsys):
    path = _study(tmp_path, *tiny_phantom)
    assert main(["study", "--config", str(path), "--no-stream"]) == 0
    out = tmp_path / "out"
    md = (out / "study.md").read_text()
    rows = {r["model"]: r for r in parse_markdown_table(md)}
    assert list(rows) == ["SAM-Mix-4", "U-Net-4"]
    for row in rows.values():
        for col in ("in-domain Dice", "cross-domain Dice"):
            m, sd = parse_mean_sd(row[col])
            assert 0.0 <= m <= 1.0 and sd is not None, row  # two seeds: mean ± sd
    assert "Every run is complete." in md and "Synthetic data" not in md
    assert (out / "dice_vs_n.png").read_bytes()[:4] == b"\x89PNG"
    doc = json.loads((out / "study.json").read_text())
    assert [c["status"] for c in doc["cells"]] == ["done"] * 4
    assert all(c["timing"]["train_seconds"] >= 0 and c["seconds"] > 0 for c in doc["cells"])
    metrics = sorted(out.glob("runs/*/seed*/metrics.json"))
    assert len(metrics) == 4 and (out / "runs" / "U-Net-4" / "seed1.log").is_file()
    stamps = [p.stat().st_mtime_ns for p in metrics]
    capsys.readouterr()

    assert main(["study", "--config", str(path), "--no-stream"]) == 0  # nothing left to do
    assert [p.stat().st_mtime_ns for p in metrics] == stamps
    doc = json.loads((out / "study.json").read_text())
    assert [c["status"] for c in doc["cells"]] == ["skipped"] * 4
    assert "4/4 cells complete" in capsys.readouterr().out
    assert main(["study", "--config", str(path), "--dry-run"]) == 0
    listing = capsys.readouterr().out
    assert "SAM-Mix-4/seed1" in listing and "4 done, 0 partial, 0 new" in listing


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"models": [{"label": "A", "n_labelled": ["many"]}]}, "models.0.n_labelled.0: Input should be a valid integer"),
        ({"seeds": "all"}, "seeds: Input should be a valid list"),
        ({"set": {"train.lr": "fast"}}, "cell SAM-Mix-4/seed0 (base "),
        ({"models": [{"label": "SAM-Mix", "n_labelled": [5000]}]},
         "cell SAM-Mix-5000/seed0: data.n_labelled: asked for 5000 labelled slices"),
    ],
)
def test_bad_study_exits_2_with_one_line(tiny_phantom, tmp_path, capsys, changes, expected):
    path = _study(tmp_path, *tiny_phantom, **changes)
    assert main(["study", "--config", str(path)]) == 2
    line = _error_line(capsys)
    assert line.startswith(f"sam-mix study: error: {path}: {expected}"), line
    assert not (tmp_path / "out" / "runs").exists()


def test_bad_flags_exit_2(tiny_phantom, tmp_path, capsys):
    path = _study(tmp_path, *tiny_phantom)
    assert main(["study", "--config", str(path), "--workers", "0"]) == 2
    assert _error_line(capsys) == "sam-mix study: error: --workers: must be at least 1"
    assert main(["study", "--config", str(path), "--only", "Nope*", "--dry-run"]) == 2
    assert "'Nope*' matches no cell" in _error_line(capsys)


def test_failed_cell_gives_exit_1_naming_it(tiny_phantom, tmp_path, capsys, monkeypatch):
    path = _study(tmp_path, *tiny_phantom)
    code = "import sys; print('child failed'); sys.exit(3)"
    monkeypatch.setattr(jobs, "train_command", lambda job, threads=1: [sys.executable, "-c", code])
    assert main(["study", "--config", str(path), "--no-stream", "--only", "U-Net-4/seed1",
                 "--out", str(tmp_path / "other")]) == 1
    err = capsys.readouterr().err
    assert "failed cells: U-Net-4/seed1 (log " in err
    assert "child failed" in (tmp_path / "other" / "runs" / "U-Net-4" / "seed1.log").read_text()
    md = (tmp_path / "other" / "study.md").read_text()
    assert "Failed: U-Net-4/seed1" in md and parse_markdown_table(md)[0]["in-domain Dice"] == "-"
