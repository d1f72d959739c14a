"""SAMMixTrainer: a compact SAM-Mix learns on the tiny phantom; every loss path and baseline runs."""

from __future__ import annotations

import json

import pytest
import torch
from ignite.engine import Events

from sam_mix_monai.engines.config import validate_config
from sam_mix_monai.engines.run import build_training
from tests.engines.conftest import tiny_config

LEARN_DICE = 0.5  # slice2d Dice on the tiny phantom's test split after 36 iterations (measured: about 0.6-0.7)


def test_compact_sam_mix_learns(tiny_phantom, tmp_path):
    cfg = validate_config(tiny_config(tiny_phantom[0], tmp_path / "run", data={"n_labelled": 20},
                                      train={"epochs": 6, "iterations_per_epoch": 6, "batch_size": 8, "lr": 3e-3,
                                             "warmup_epochs": 1},
                                      unlabelled={"batch_size": 8}, evaluate={"protocols": ["slice2d"]}))
    job = build_training(cfg, tmp_path / "run")
    results = job.run()
    doc = json.loads((tmp_path / "run" / "metrics.json").read_text())
    losses = [r["loss"] for r in doc["train"]]
    dice = results["test"]["metrics"]["slice2d_dice"]
    print(f"tiny phantom: epoch losses {[round(x, 3) for x in losses]}, test slice2d Dice {dice:.3f}")
    assert losses[-1] < 0.75 * losses[0]
    assert dice >= LEARN_DICE
    assert (tmp_path / "run" / "best.pt").is_file() and (tmp_path / "run" / "curves.png").is_file()


def _one_epoch(cfg_dict, tmp_path):
    cfg = validate_config(cfg_dict)
    job = build_training(cfg, tmp_path)
    seen = []
    job.trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(dict(e.state.output)))
    job.trainer.run()
    return job, seen


def test_every_unlabelled_term_runs(tiny_phantom, tmp_path):
    raw = tiny_config(tiny_phantom[0], tmp_path, train={"epochs": 1, "iterations_per_epoch": 2},
                      loss={"seg_consistency": 1.0}, data={"n_labelled": 8, "withhold_label_fraction": 0.5})
    raw["data"]["val_split"] = None
    job, seen = _one_epoch(raw, tmp_path)
    assert {"seg_dice", "seg_bce", "iou", "cls", "unlabelled_cls", "pseudo_cls", "seg_consistency"} <= set(seen[0])
    assert all(torch.isfinite(torch.tensor(s["loss"])) for s in seen)
    # supervised only: no unlabelled terms at all
    raw = tiny_config(tiny_phantom[0], tmp_path / "sup", train={"epochs": 1, "iterations_per_epoch": 1},
                      unlabelled={"enabled": False})
    raw["data"]["val_split"] = None
    _, seen = _one_epoch(raw, tmp_path / "sup")
    assert set(seen[0]) == {"loss", "seg_dice", "seg_bce", "iou", "cls"}


@pytest.mark.parametrize("name", ["unet", "sam_pp"])
def test_baselines_train_and_evaluate(tiny_phantom, tmp_path, name):
    raw = tiny_config(tiny_phantom[0], tmp_path, model={"name": name}, train={"epochs": 1, "iterations_per_epoch": 2})
    job = build_training(validate_config(raw), tmp_path)
    assert job.trainer.unlabelled_data_loader is None  # no classifier: no FixMatch step
    results = job.run()
    m = results["test"]["metrics"]
    assert {"slice2d_dice", "slice2d_hd", "volume3d_dice", "volume3d_hd95"} <= set(m)
    assert "cls_accuracy" not in m


def test_no_training_evaluates_the_network_as_it_is(tiny_phantom, tmp_path):
    """SAM-PP-0: ``train.epochs: 0`` skips training; the untrained network is the run's checkpoint."""
    raw = tiny_config(tiny_phantom[0], tmp_path, model={"name": "sam_pp"}, data={"n_labelled": 0},
                      train={"epochs": 0}, evaluate={"protocols": ["slice2d"]})
    job = build_training(validate_config(raw), tmp_path)
    assert job.trainer is None
    results = job.run()
    assert "slice2d_dice" in results["test"]["metrics"]
    assert torch.load(tmp_path / "best.pt", weights_only=True)["config"]["model"]["name"] == "sam_pp"
