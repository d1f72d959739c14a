"""``sam-mix train`` / ``evaluate`` / ``train --resume`` under bad stores, bad checkpoints and a diverging loss.

Each case: exit 2, one line naming the file (store, checkpoint, ``last.pt`` or run directory), no
traceback, nothing written (the run directory does not appear, or is unchanged), inputs unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from sam_mix_monai.cli.main import main
from sam_mix_monai.engines.config import dump_config, validate_config
from tests.engines.conftest import tiny_config, write_config
from tests.faults import Snapshot, assert_clean_failure, leftovers, write_store
from tests.inference.tiny_model import tiny_checkpoint


def _store(tmp_path: Path, kind: str) -> tuple[Path, str]:
    """A store broken in one way, and the words its error must hold."""
    path = write_store(tmp_path / "data" / f"{kind}.h5")
    if kind == "not_hdf5":
        path.write_text("image,mask\n1,2\n")
        return path, "not a readable HDF5 file"
    with h5py.File(path, "r+") as f:
        if kind == "no_label":
            del f["label"]
            return path, "lacks dataset(s) 'label'"
        if kind == "no_split_case_id":
            del f["split"], f["case_id"]
            return path, "lacks dataset(s) 'split', 'case_id'"
        if kind == "short_image":  # 100 image rows against 576 of everything else
            n = 576
            for name in ("mask", "label", "split", "slice_index", "case_id", "spacing"):
                f[name].resize(n, axis=0)
            f["case_id"][:] = "case0"
            f["spacing"][:] = 1.0
            img = f["image"][()]
            del f["image"]
            f.create_dataset("image", data=np.resize(img, (100, *img.shape[1:])), chunks=(1, *img.shape[1:]))
            return path, "dataset 'image' has 100 rows but 'mask' has 576"
        if kind == "billion_rows":
            for name in ("image", "mask", "label", "split", "slice_index", "case_id", "spacing"):
                f[name].resize(10**9, axis=0)
            return path, "dataset 'image' declares 1000000000 rows"
        if kind == "huge_side":
            for name in ("image", "mask"):
                dt, n = f[name].dtype, f[name].shape[0]
                del f[name]
                f.create_dataset(name, shape=(n, 10**6, 10**6), dtype=dt, chunks=(1, 1024, 1024))
            f.attrs["image_size"] = 10**6
            return path, "dataset 'image' declares 30 rows of shape (1000000, 1000000)"
        if kind == "all_nan":
            f["image"][:] = np.nan
            return path, "dataset 'image' holds NaN or infinite values"
    raise ValueError(kind)


STORES = ["not_hdf5", "no_label", "no_split_case_id", "short_image", "billion_rows", "huge_side", "all_nan"]


@pytest.mark.parametrize("kind", STORES)
def test_train_refuses_a_bad_store(tmp_path, capfd, kind):
    store, match = _store(tmp_path, kind)
    (tmp_path / "cfg").mkdir()
    cfg = write_config(tmp_path / "cfg" / "exp.yaml", tiny_config(store, tmp_path / "run", data={"n_labelled": 4}))
    inputs = Snapshot(tmp_path / "data", tmp_path / "cfg")
    rc = main(["-q", "train", "--config", str(cfg)])
    line = assert_clean_failure(rc, capfd, [store], inputs, [tmp_path / "run"], match)
    assert "data.n_labelled" not in line  # the store is blamed, not the labelled-slice count
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kind", ["no_label", "billion_rows", "all_nan"])
def test_evaluate_refuses_a_bad_store(tmp_path, capfd, kind):
    store, match = _store(tmp_path, kind)
    inputs = Snapshot(tmp_path / "data")
    out = tmp_path / "out" / "eval.json"
    rc = main(["-q", "evaluate", "--checkpoint", str(tiny_checkpoint()), "--data", str(store), "--split", "all",
               "--output", str(out)])
    assert_clean_failure(rc, capfd, [store], inputs, [out.parent], match)


def _checkpoint(tmp_path: Path, kind: str, base: Path) -> tuple[Path, str]:
    ckpt = torch.load(base, weights_only=True)
    path = tmp_path / "ck" / "last.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "missing":
        return path, "no checkpoint to resume from"
    if kind == "truncated":
        torch.save(ckpt, path)
        path.write_bytes(path.read_bytes()[:2048])
        return path, "corrupt or truncated"
    if kind == "runs_code":
        class Evil:
            def __reduce__(self):
                return (os.system, ("echo PWNED",))

        ckpt["optimizer"] = Evil()
        torch.save(ckpt, path)
        return path, "refused: it would run code"
    if kind == "nan":
        ckpt["network"] = {k: v * float("nan") if v.is_floating_point() else v for k, v in ckpt["network"].items()}
        torch.save(ckpt, path)
        return path, "NaN or infinite"
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["truncated", "runs_code", "nan"])
def test_evaluate_refuses_a_bad_checkpoint(tmp_path, capfd, kind):
    store = write_store(tmp_path / "data" / "ok.h5")
    ckpt, match = _checkpoint(tmp_path, kind, tiny_checkpoint())
    inputs = Snapshot(tmp_path / "data", ckpt.parent)
    rc = main(["-q", "evaluate", "--checkpoint", str(ckpt), "--data", str(store), "--output", str(tmp_path / "o" / "e.json")])
    assert "PWNED" not in assert_clean_failure(rc, capfd, [ckpt], inputs, [tmp_path / "o"], match)


def _resumable_run(tmp_path: Path, kind: str) -> tuple[Path, Path, str]:
    """A run directory (config, run.json, best.pt) whose last.pt is broken in one way."""
    store = write_store(tmp_path / "data" / "ok.h5")
    run = tmp_path / "run"
    run.mkdir()
    cfg = validate_config(tiny_config(store, run, data={"n_labelled": 4}))
    (run / "config.yaml").write_text(dump_config(cfg))
    (run / "run.json").write_text("[]")
    base = torch.load(tiny_checkpoint(), weights_only=True)
    torch.save({**base, "optimizer": {}, "trainer": {"epoch": 1}}, run / "best.pt")
    last, match = _checkpoint(tmp_path, kind, run / "best.pt")
    if last.exists():
        last.replace(run / "last.pt")
    return run, run / "last.pt", match


@pytest.mark.parametrize("kind", ["missing", "truncated", "runs_code", "nan"])
def test_resume_refuses_a_missing_or_bad_last_checkpoint(tmp_path, capfd, kind):
    run, last, match = _resumable_run(tmp_path, kind)
    inputs = Snapshot(run, tmp_path / "data")  # best.pt, config.yaml and run.json stay as they were
    rc = main(["-q", "train", "--resume", str(run)])
    assert "PWNED" not in assert_clean_failure(rc, capfd, [last], inputs, [], match)


def test_diverging_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path, capfd, monkeypatch):
    store = write_store(tmp_path / "data" / "ok.h5")
    run = tmp_path / "run"
    raw = tiny_config(store, run, data={"n_labelled": 4},
                      train={"epochs": 3, "iterations_per_epoch": 2, "batch_size": 2},
                      unlabelled={"enabled": False, "batch_size": 2}, evaluate={"protocols": ["slice2d"]})
    cfg = write_config(tmp_path / "exp.yaml", raw)
    inputs = Snapshot(tmp_path / "data", cfg)
    from sam_mix_monai.engines.losses import SAMMixLoss

    real, calls = SAMMixLoss.total, []

    def diverge(self, terms):  # finite in epoch 1 (2 iterations), NaN from the first step of epoch 2
        calls.append(1)
        total = real(self, terms)
        return total * float("nan") if len(calls) > 2 else total

    monkeypatch.setattr(SAMMixLoss, "total", diverge)
    rc = main(["-q", "train", "--config", str(cfg)])
    line = assert_clean_failure(rc, capfd, [run], inputs, [], "loss is nan at epoch 2, iteration 3")
    assert f"the last good checkpoint is kept: {run / 'last.pt'} (epoch 1)" in line
    last = torch.load(run / "last.pt", weights_only=True)
    assert last["trainer"]["iteration"] == 2  # the end of epoch 1 (2 iterations per epoch)
    for name in ("last.pt", "best.pt"):
        state = torch.load(run / name, weights_only=True)["network"]
        assert all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point()), name
    assert not [f for f in leftovers(run) if ".part" in f]
