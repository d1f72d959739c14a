"""A refused training run leaves no run folder behind (issue 22 #7)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from sam_mix_monai.cli.main import main
from tests.engines.conftest import tiny_config, write_config
from tests.faults import Snapshot, assert_clean_failure, leftovers, write_store


class _Evil:
    def __reduce__(self):  # noqa: D105 - would run a shell command if loaded unsafely
        return (os.system, ("echo PWNED",))


def _evil_checkpoint(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": _Evil()}, path)
    return path


def _setup(tmp_path: Path, run: Path) -> tuple[Path, Path]:
    store = write_store(tmp_path / "data" / "s.h5")
    evil = _evil_checkpoint(tmp_path / "data" / "evil.pt")
    cfg = write_config(tmp_path / "data" / "exp.yaml", tiny_config(store, run, train={"epochs": 1}))
    return cfg, evil


def test_refused_model_checkpoint_leaves_no_run_folder(tmp_path, capfd):
    run = tmp_path / "runs" / "r1"
    cfg, evil = _setup(tmp_path, run)
    inputs = Snapshot(tmp_path / "data")
    rc = main(["-q", "train", "--config", str(cfg), "--set", f"model.checkpoint={evil}"])
    assert_clean_failure(rc, capfd, [evil], inputs, [], "would run code")
    assert not run.exists(), leftovers(run)


def test_refused_run_keeps_what_the_folder_held_before(tmp_path, capfd):
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "notes.txt").write_text("mine")
    cfg, evil = _setup(tmp_path, run)
    inputs = Snapshot(tmp_path / "data", run)
    rc = main(["-q", "train", "--config", str(cfg), "--set", f"model.checkpoint={evil}"])
    assert_clean_failure(rc, capfd, [evil], inputs, [], "would run code")
    assert leftovers(run) == ["notes.txt"]
