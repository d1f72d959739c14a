"""MONAI's own bundle-property check on the bundle: nothing missing for training or inference; MONAI Label's path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow

from tests.inference.tiny_model import IMAGE_SIZE, phantom, save_case

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "sam_mix_liver_ct"
SMALL = {"model_config#image_size": IMAGE_SIZE}


def test_channel_def_names_the_labels() -> None:
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "liver"}
    assert (BUNDLE / "configs" / "multi_gpu_evaluate.yaml").is_file()


def test_inference_properties_and_monai_label_path(tmp_path: Path) -> None:
    c = phantom(0, "LPS")
    data = tmp_path / "ct"
    save_case(data / "case0.nii.gz", c.image, c.affine)
    wf = ConfigWorkflow(config_file=str(BUNDLE / "configs" / "inference.yaml"), workflow_type="infer",
                        bundle_root=str(BUNDLE), dataset_dir=str(data), output_dir=str(tmp_path / "out"), **SMALL)
    wf.initialize()
    assert wf.check_properties() == []
    # MONAI Label's bundle task: preprocessing, then inferer(image[None], network), then postprocessing.
    item = wf.dataset[0]
    assert tuple(item["image"].shape) == (1, *c.image.shape)
    net = wf.parser.get_parsed_content("network")
    with torch.no_grad():
        pred = wf.inferer(item["image"][None], net)  # the (B, 1, X, Y, Z) batch MONAI Label passes
    assert tuple(pred.shape) == (1, 1, *c.image.shape)
    np.testing.assert_allclose(np.asarray(pred.affine[0]), np.asarray(item["image"].affine))
    out = wf.parser.get_parsed_content("postprocessing")({"pred": pred[0]})["pred"]
    assert tuple(out.shape) == (1, *c.image.shape) and set(np.unique(np.asarray(out))) <= {0, 1}
    assert hasattr(wf.evaluator, "run")


def test_training_properties(tmp_path: Path, phantom_store: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    shutil.copy(phantom_store, store / "phantom.h5")
    wf = ConfigWorkflow(config_file=str(BUNDLE / "configs" / "train.yaml"), workflow_type="train",
                        bundle_root=str(tmp_path), dataset_dir=str(store), n_labelled=5, **SMALL)
    wf.initialize()
    assert wf.check_properties() == []
    from sam_mix_monai.data import SliceDataset

    n_empty = wf.parser.get_parsed_content("data_config").n_empty
    same = SliceDataset(store / "phantom.h5", split="train", n_labelled=5, subset="labelled", seed=0, n_empty=n_empty)
    assert len(wf.train_dataset) == len(same) > 0 and wf.max_epochs == 20
