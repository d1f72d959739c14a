"""Whole runs: resume after SIGKILL equals an uninterrupted run; a 2-process gloo run agrees with one process."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from sam_mix_monai.cli.main import main
from sam_mix_monai.engines.config import validate_config
from sam_mix_monai.engines.evaluate import evaluate_checkpoint
from sam_mix_monai.engines.run import train
from tests.engines.conftest import tiny_config, write_config

ROOT = Path(__file__).resolve().parents[2]
EVAL_TOL = 1e-5  # the same weights evaluated by 2 processes (case-partitioned, gathered) and by 1
LOSS_TOL = 0.10  # SAM-Mix, 2 vs 1 process: per-epoch mean training loss, relative (per-rank BN statistics differ)
EQUIV_TOL = 1e-3  # U-Net (no batch norm), 2 vs 1 process: per-epoch losses, relative (measured: <= 1.3e-4)
DICE_TOL = 0.01  # ... and test Dice (slice2d, volume3d), absolute
HD_TOL = 0.10  # ... and test HD / HD95, relative (a single pixel moves a Hausdorff distance; on 2026-12-07 this AMD EPYC
# gave slice2d HD 11.95 vs 11.31 px, 5.6 %, at the unchanged c9cdfe7 too: 0.05 failed there, Dice and losses still agree)
FIXED_BN_TOL = 1e-4  # SAM-Mix with fixed classifier BN statistics, 2 vs 1 process: per-epoch loss terms, relative
WEIGHT_TOL = 1e-2  # ... and the largest absolute weight difference after 6 Adam steps, 1 vs 2 processes (measured:
# 4.5e-3 classifier-only, Adam's normalised step amplifies rounding in near-zero gradients; the ranks of the 2-process
# run are compared bit for bit in the worker: without DDP's reduction, the former classifier-only bug, they differed by 3.4e-2)


def _raw(store: Path, cross: Path | None, run_dir: Path, epochs: int = 3, iterations: int = 4) -> dict:
    """A tiny SAM-Mix run: 3 epochs of 4 iterations, known-empty labelled slices included (the Dice
    term over liver slices and the balanced CE are global over ranks, engines.losses)."""
    return tiny_config(store, run_dir, cross, data={"n_labelled": 20}, unlabelled={"batch_size": 8},
                       train={"epochs": epochs, "iterations_per_epoch": iterations, "batch_size": 8, "lr": 3e-3,
                              "scheduler": "constant"})


@pytest.fixture(scope="module")
def reference(tiny_phantom, tmp_path_factory) -> Path:
    """An uninterrupted single-process run."""
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    train(validate_config(_raw(*tiny_phantom, run_dir)))
    return run_dir


def _states(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_resume_after_sigkill_matches_uninterrupted_run(tiny_phantom, reference, tmp_path):
    run_dir = tmp_path / "run"
    cfg_file = write_config(tmp_path / "tiny.yaml", _raw(*tiny_phantom, run_dir))
    # Train in a child process that kills itself (SIGKILL: no cleanup at all) in the middle of epoch 2,
    # after the epoch-1 checkpoint was written.
    code = textwrap.dedent(f"""
        import os, signal
        import torch
        from ignite.engine import Events
        from sam_mix_monai.engines.config import load_config
        from sam_mix_monai.engines.run import build_training, prepare
        cfg = load_config({str(cfg_file)!r})
        run_dir = prepare(cfg, None)
        job = build_training(cfg, run_dir)
        job.trainer.add_event_handler(Events.ITERATION_COMPLETED(once=6), lambda e: os.kill(os.getpid(), signal.SIGKILL))
        job.run()
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert _states(run_dir / "last.pt")["trainer"]["iteration"] == 4  # epoch 1 done, epoch 2 lost
    assert main(["train", "--resume", str(run_dir)]) == 0
    a, b = _states(reference / "last.pt"), _states(run_dir / "last.pt")
    assert b["trainer"]["iteration"] == 12
    for key in a["network"]:
        assert torch.equal(a["network"][key], b["network"][key]), key
    assert json.dumps(a["optimizer"]["state"], default=str) == json.dumps(b["optimizer"]["state"], default=str)
    ha, hb = (json.loads((d / "metrics.json").read_text()) for d in (reference, run_dir))
    assert [r["loss"] for r in ha["train"]] == [r["loss"] for r in hb["train"]]
    assert ha["results"]["test"]["metrics"] == hb["results"]["test"]["metrics"]


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.slow  # about 35 s; two-process equivalence is also held by test_two_process_training_equals_one_process
def test_two_process_sam_mix_run(tiny_phantom, reference, tmp_path):
    """SAM-Mix (FixMatch step, classifier bypass, DDP) in 2 gloo processes vs the 1-process reference."""
    run_dir = tmp_path / "run"
    train(validate_config(_raw(*tiny_phantom, run_dir)), nproc_per_node=2)
    multi, single = _metrics(run_dir), _metrics(reference)
    assert json.loads((run_dir / "run.json").read_text())[-1]["world_size"] == 2
    # metric reduction: evaluating its best checkpoint in 1 process gives the metrics the 2 processes reduced
    for name, split, path in (("test", "test", tiny_phantom[0]), ("cross_domain:b", None, tiny_phantom[1])):
        one = evaluate_checkpoint(run_dir / "best.pt", path, ["slice2d", "volume3d"], split, device="cpu")["metrics"]
        for k, v in multi["results"][name]["metrics"].items():
            assert v == pytest.approx(one[k], abs=EVAL_TOL, rel=EVAL_TOL, nan_ok=True), (name, k)
    # training: same global batches and views; only the classifier's batch-norm statistics are per rank
    assert len(single["train"]) == len(multi["train"]) and all(math.isfinite(r["loss"]) for r in multi["train"])
    off = [(a["loss"], b["loss"]) for a, b in zip(single["train"], multi["train"])
           if b["loss"] != pytest.approx(a["loss"], rel=LOSS_TOL)]
    if off:
        # Known and open: each rank's classifier batch norm normalises with the statistics of its half of
        # each classifier batch (SyncBatchNorm is CUDA-only in torch; wrap_model uses it on CUDA).
        # Everything else is the 1-process step: test_two_process_run_equals_one_process_with_fixed_bn.
        # Measured (3 epochs of 4 steps, known-empty slices included), epoch loss 1 vs 2 processes:
        # 3.204 / 3.117, 2.333 / 3.166 (+36%), 2.144 / 2.687 (+25%); with train.one_classifier_batch
        # 3.304 / 3.391, 2.454 / 3.004, 2.174 / 2.316. With fixed BN statistics 1 and 2 processes agree to
        # float rounding (test below: 1e-7 relative). Before the global means (positives only): 3.05 / 3.41.
        pairs = [(round(a["loss"], 3), round(b["loss"], 3)) for a, b in zip(single["train"], multi["train"])]
        pytest.xfail(f"2-process SAM-Mix loss differs from 1 process beyond {LOSS_TOL:.0%} (per-rank batch norm): "
                     f"(1 process, 2 processes) per epoch {pairs}")


def _fixed_bn_worker(local_rank: int, cfg_dump: dict, run_dir: str) -> None:
    """Train a run whose classifier batch norm uses fixed statistics (eval mode), as run.train's worker does."""
    from torch.nn.modules.batchnorm import _BatchNorm

    from sam_mix_monai.engines.run import build_training

    job = build_training(validate_config(cfg_dump), run_dir)
    bns = [m for m in job.model.classifier.modules() if isinstance(m, _BatchNorm)]
    assert bns  # the ResNet-38 has batch norm; the trainer's net.train() is undone before every classifier call
    job.model.classifier.register_forward_pre_hook(lambda m, i: [b.eval() for b in bns] and None)
    job.trainer.run()
    import ignite.distributed as idist

    if idist.get_world_size() > 1:  # DDP reduced every gradient: the ranks hold the same weights, bit for bit
        both = idist.all_gather(torch.cat([p.detach().flatten() for p in job.model.parameters()]).unsqueeze(0))
        assert torch.equal(both[0], both[1]), f"ranks differ by {float((both[0] - both[1]).abs().max()):.2e}"


@pytest.mark.parametrize("mode", [pytest.param("full", marks=pytest.mark.slow), "classifier_only"])
def test_two_process_run_equals_one_process_with_fixed_bn(tiny_phantom, tmp_path, mode):
    """With batch norm out of the way, 2 gloo processes train SAM-Mix like 1, up to float rounding:
    the global masked means and class weights (known-empty slices included), and DDP's gradient
    reduction also in the classifier-only mode (frozen SAM; it used to call the bare classifier)."""
    from sam_mix_monai.engines.distributed import launch
    from sam_mix_monai.engines.run import prepare

    runs = {}
    for k in (1, 2):
        raw = _raw(tiny_phantom[0], None, tmp_path / f"p{k}", epochs=2, iterations=3)
        raw["data"]["val_split"] = None
        if mode == "classifier_only":
            raw["loss"] = {"seg_dice": 0.0, "seg_bce": 0.0, "iou": 0.0}
            raw["model"]["encoder_mode"] = "frozen"
        cfg = validate_config(raw)
        run_dir = prepare(cfg, None, False, k)
        launch(_fixed_bn_worker, cfg.model_dump(mode="json"), str(run_dir), nproc_per_node=k if k > 1 else None,
               device="cpu")
        runs[k] = run_dir
    one, two = _metrics(runs[1])["train"], _metrics(runs[2])["train"]
    assert len(one) == len(two) == 2
    print(f"{mode}: epoch losses, 1 process {[r['loss'] for r in one]}, 2 processes {[r['loss'] for r in two]}")
    for a, b in zip(one, two):
        for key in a:
            if key not in ("seconds", "lr", "epoch", "iteration"):
                assert b[key] == pytest.approx(a[key], rel=FIXED_BN_TOL, abs=1e-6), (mode, a["epoch"], key)
    w1, w2 = _states(runs[1] / "last.pt")["network"], _states(runs[2] / "last.pt")["network"]
    diff = max(float((w1[k].float() - w2[k].float()).abs().max()) for k in w1 if w1[k].is_floating_point())
    print(f"{mode}: largest weight difference after {one[-1]['iteration']} steps: {diff:.2e}")
    assert diff < WEIGHT_TOL


def test_two_process_training_equals_one_process(tiny_phantom, tmp_path):
    """Without batch norm (U-Net, instance norm) 2 processes train like 1, up to float rounding."""
    def raw(run_dir):  # no validation: both test evaluations use the last weights; no known-empty slices (see _raw)
        return tiny_config(tiny_phantom[0], run_dir, model={"name": "unet"}, data={"n_labelled": 20, "val_split": None, "empty_per_labelled": 0},
                           train={"epochs": 6, "iterations_per_epoch": 5, "batch_size": 8, "lr": 1e-2,
                                  "scheduler": "constant"}, evaluate={"protocols": ["slice2d", "volume3d"]})

    train(validate_config(raw(tmp_path / "one")))
    train(validate_config(raw(tmp_path / "two")), nproc_per_node=2)
    one, two = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    print("1 process:", one["results"]["test"]["metrics"])
    print("2 processes:", two["results"]["test"]["metrics"])
    assert one["results"]["test"]["metrics"]["slice2d_dice"] > 0.4  # a real segmentation, not empty masks
    for a, b in zip(one["train"], two["train"]):
        assert b["loss"] == pytest.approx(a["loss"], rel=EQUIV_TOL)
    m1, m2 = one["results"]["test"]["metrics"], two["results"]["test"]["metrics"]
    for k in ("slice2d_dice", "volume3d_dice"):
        assert m2[k] == pytest.approx(m1[k], abs=DICE_TOL), k
    for k in ("slice2d_hd", "volume3d_hd95"):
        assert m2[k] == pytest.approx(m1[k], rel=HD_TOL), k


def _captured_evaluations(monkeypatch) -> list[dict]:
    import sam_mix_monai.engines.run as run_mod

    calls: list[dict] = []

    def fake(network, path, split, protocols, device, batch_size=16, num_workers=0, precision="fp32", point_prompt="centre"):
        calls.append({"path": str(path), "precision": precision, "point": point_prompt})
        return {"metrics": {"slice2d_dice": 0.5}, "slices": 1, "liver_slices": 1, "cases": 1}

    monkeypatch.setattr(run_mod, "evaluate_dataset", fake)
    return calls


def test_final_evaluation_runs_at_the_resolved_precision(tiny_phantom, tmp_path, monkeypatch):
    from sam_mix_monai.engines.run import build_training

    calls = _captured_evaluations(monkeypatch)
    raw = tiny_config(tiny_phantom[0], tmp_path, model={"name": "unet"}, train={"epochs": 0, "precision": "fp16",
                                                                                 "device": "cpu"})
    job = build_training(validate_config(raw), tmp_path)
    job.final_evaluation()
    assert calls and all(c["precision"] == "fp32" for c in calls)  # fp16 needs CUDA: what training ran at


def test_sam_pp_is_scored_with_the_centre_point_and_an_oracle_row(tiny_phantom, tmp_path, monkeypatch):
    from sam_mix_monai.engines.run import build_training

    calls = _captured_evaluations(monkeypatch)
    raw = tiny_config(tiny_phantom[0], tmp_path, tiny_phantom[1], model={"name": "sam_pp"}, data={"n_labelled": 0},
                      train={"epochs": 0})
    results = build_training(validate_config(raw), tmp_path).final_evaluation()
    assert list(results) == ["test", "cross_domain:b", "test (oracle point)", "cross_domain:b (oracle point)"]
    assert [c["point"] for c in calls] == ["centre", "centre", "oracle", "oracle"]


def test_every_checkpoint_records_the_slicing_of_its_store(tiny_phantom, tmp_path):
    import h5py

    from sam_mix_monai.engines.run import build_training

    raw = tiny_config(tiny_phantom[0], tmp_path, model={"name": "unet"}, train={"epochs": 0},
                      evaluate={"protocols": ["slice2d"]})
    build_training(validate_config(raw), tmp_path).run()
    record = torch.load(tmp_path / "best.pt", weights_only=True)["config"]
    with h5py.File(tiny_phantom[0], "r") as f:
        attrs = dict(f.attrs)
    assert record["slicing"] == {k: float(attrs[k]) if k != "image_size" else int(attrs[k])
                                 for k in ("window_center", "window_width", "keep_rate", "image_size")}


def test_known_empty_slices_supervise_every_model_by_default(tiny_phantom, tmp_path):
    from sam_mix_monai.engines.run import build_training

    for name in ("unet", "sam_mix"):
        job = build_training(validate_config(tiny_config(tiny_phantom[0], tmp_path / name, model={"name": name},
                                                         data={"n_labelled": 6})), tmp_path / name)
        labelled = job.trainer.data_loader.loader.dataset
        labels = labelled.table.labels[labelled.rows]
        assert len(labels) == 12 and int((labels == 0).sum()) == 6  # 6 positives + 6 known-empty slices
    off = validate_config(tiny_config(tiny_phantom[0], tmp_path / "off", data={"n_labelled": 6, "empty_per_labelled": 0}))
    job = build_training(off, tmp_path / "off")
    assert (job.trainer.data_loader.loader.dataset.table.labels[job.trainer.data_loader.loader.dataset.rows] > 0).all()
