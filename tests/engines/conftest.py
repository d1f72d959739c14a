"""Fixtures and helpers of the engine tests: a tiny phantom store (64 px), a tiny training config,
and a synthetic store whose images are their own liver masks (with an "oracle" network).

The phantom cohorts come from the project's generator and converter (domain a: 6 cases split
train/val/test, domain b: 2 cases), at 64 x 64 pixels and 24 slices per case, so that a compact
SAM-Mix trains on them in seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from sam_mix_monai.data.h5store import CaseSlices, SliceStoreWriter
from sam_mix_monai.engines.config import PhantomDataConfig
from sam_mix_monai.engines.evaluator import build_evaluator
from sam_mix_monai.engines.loaders import evaluation_loader
from sam_mix_monai.engines.phantom_data import ensure_phantom_data


def tiny_phantom_config(root: Path) -> PhantomDataConfig:
    """The tiny phantom of the tests."""
    return PhantomDataConfig(root=root, cases_a=6, cases_b=2, matrix=64, slices=24, image_size=64,
                             split={"train": 0.5, "val": 0.17, "test": 0.33}, seed=0)


@pytest.fixture(scope="session")
def tiny_phantom(tmp_path_factory) -> tuple[Path, Path]:
    """``(domain_a_store, domain_b_store)``: 36/12/24... slices train/val/test at 64 px, and 2 domain-b cases."""
    return ensure_phantom_data(tiny_phantom_config(tmp_path_factory.mktemp("phantom")), workers=1, progress=False)


def tiny_config(store: Path, run_dir: Path, cross: Path | None = None, **sections) -> dict:
    """A raw experiment config that trains a compact SAM-Mix (64 px) for a few iterations."""
    cfg = {
        "name": "tiny",
        "model": {"name": "sam_mix", "size": "compact", "image_size": 64},
        "data": {"path": str(store), "n_labelled": 12},
        "unlabelled": {"batch_size": 4},
        "train": {"epochs": 2, "batch_size": 4, "iterations_per_epoch": 3, "lr": 2e-3, "progress": False,
                  "num_threads": 1, "early_stopping_patience": None},
        "evaluate": {"protocols": ["slice2d", "volume3d"], "batch_size": 16,
                     "cross_domain": [{"name": "b", "path": str(cross)}] if cross else []},
        "output": {"dir": str(run_dir), "tensorboard": False},
    }
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    """Write a raw config as YAML."""
    path.write_text(yaml.safe_dump(cfg))
    return path


SPACING = (0.8, 0.8, 2.5)


def write_mask_store(path, cases=2, n=6, size=32):
    """Cases of ``n`` slices whose image IS the liver mask (a square in the middle slices)."""
    with SliceStoreWriter(path, size) as w:
        for c in range(cases):
            mask = np.zeros((n, size, size), np.uint8)
            for k in range(1, n - 1):
                mask[k, 8 : 20 + c, 6 + k : 22] = 1
            w.append(CaseSlices(f"case{c}", "synthetic", mask.astype(np.float32), mask, mask.reshape(n, -1).max(1),
                                np.arange(n) + 10 * c, np.array(SPACING, np.float32), np.eye(4), (size, size, n)),
                     split="test")
    return path


class Oracle(nn.Module):
    """Segments the bright pixels; its classifier says liver when ``says_liver`` and any pixel is bright."""

    def __init__(self, says_liver: bool = True) -> None:
        super().__init__()
        self.says_liver = says_liver
        self.classifier = nn.Identity()  # "has a classifier": classification metrics on

    def forward(self, image):
        present = (image.flatten(1).amax(1) > 0.5).float() * (1.0 if self.says_liver else 0.0)
        return {"mask_logits": (image - 0.5) * 20, "class_logits": torch.stack([-present * 5, present * 5 - 2.5], 1)}


def run_evaluator(net, path, protocols=("slice2d", "volume3d")):
    ev = build_evaluator(net, evaluation_loader(path, "test", batch_size=4), "cpu", protocols)
    ev.run()
    return ev
