"""Run directory: checks before a run, the stored config and provenance, refusal to overwrite."""

from __future__ import annotations

import json
import os
import time

import pytest
import torch

from sam_mix_monai.engines.config import validate_config
from sam_mix_monai.engines.rundir import check_data, prepare_run_dir, provenance, resume_config
from sam_mix_monai.utils.errors import InputError
from tests.engines.conftest import tiny_config


def test_prepare_and_resume_config(tiny_phantom, tmp_path):
    cfg = validate_config(tiny_config(tiny_phantom[0], tmp_path / "run"))
    check_data(cfg, "x.yaml")
    run = prepare_run_dir(cfg, resume=False)
    assert resume_config(run) == cfg
    assert resume_config(run, ["train.epochs=5"]).train.epochs == 5
    assert json.loads((run / "run.json").read_text())[0]["version"] == provenance()["version"]
    (run / "last.pt").write_bytes(b"x")
    with pytest.raises(InputError, match="already holds a run"):
        prepare_run_dir(cfg, resume=False)
    with pytest.raises(InputError, match="last.pt: not a readable PyTorch checkpoint"):
        prepare_run_dir(cfg, resume=True)
    torch.save({"network": {"w": torch.zeros(1)}, "optimizer": {}, "trainer": {}}, run / "last.pt")
    with pytest.raises(InputError, match="already holds a run"):
        prepare_run_dir(cfg, resume=False)
    stale = run / ".last.pt.k1ll3d.part.pt"  # a killed run's half-written checkpoint
    stale.write_bytes(b"half")
    os.utime(stale, (time.time() - 60, time.time() - 60))
    prepare_run_dir(cfg, resume=True)  # resuming appends a provenance record
    assert len(json.loads((run / "run.json").read_text())) == 2
    assert not stale.exists()


def test_check_data_names_the_key(tiny_phantom, tmp_path):
    raw = tiny_config(tiny_phantom[0], tmp_path, tmp_path / "nope.h5")
    with pytest.raises(InputError, match=r"x.yaml: evaluate.cross_domain.0.path: HDF5 file not found"):
        check_data(validate_config(raw), "x.yaml")
    raw = tiny_config(tiny_phantom[0], tmp_path, data={"n_labelled": 10_000})
    with pytest.raises(InputError, match="data.n_labelled: asked for 10000 labelled slices but only"):
        check_data(validate_config(raw), "x.yaml")


def test_check_data_refuses_named_splits_of_an_original_layout_file(tmp_path):
    import numpy as np

    from sam_mix_monai.data.legacy import write_legacy_file

    labels = np.zeros((6, 16, 16), np.int16)
    labels[1:4, 4:10, 4:10] = 1
    write_legacy_file(str(tmp_path / "orig.h5"), np.zeros((6, 16, 16), np.float32), labels)
    cfg = validate_config(tiny_config(tmp_path / "orig.h5", tmp_path / "run", data={"n_labelled": None}))
    with pytest.raises(InputError, match="data.train_split: .*one split"):
        check_data(cfg, "c.yaml")  # before any training: train, val and test would be the same slices
