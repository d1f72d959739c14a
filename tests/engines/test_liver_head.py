"""The liver head trains through the SAM-Mix trainer (loss.head) and learns where the liver is; SAM stays as it is."""

from __future__ import annotations

import torch

from sam_mix_monai.data import SliceDataset
from sam_mix_monai.engines.config import validate_config
from sam_mix_monai.engines.losses import SAMMixLoss, head_loss
from sam_mix_monai.engines.run import build_training
from sam_mix_monai.networks.liver_head import head_target
from tests.engines.conftest import tiny_config

HEAD_DICE_FLOOR = 0.25  # measured 0.314 (soft Dice, 10 x 8 iterations, random compact SAM features on a 4 x 4 grid)


def _cfg(store, run_dir, epochs):
    return validate_config(tiny_config(
        store, run_dir, model={"liver_head": True, "encoder_mode": "frozen"}, data={"n_labelled": 16, "val_split": None},
        loss={"seg_dice": 0.0, "seg_bce": 0.0, "iou": 0.0, "head": 1.0}, augment={"labelled": False},
        train={"epochs": epochs, "iterations_per_epoch": 8, "batch_size": 8, "lr": 1e-2, "scheduler": "constant"},
        evaluate={"protocols": ["slice2d"], "cross_domain": []}))


def test_head_loss_is_zero_dice_plus_small_bce_for_a_perfect_map_and_high_for_a_wrong_one():
    mask = torch.zeros(2, 1, 16, 16)
    mask[0, :, 4:12, 4:12] = 1.0  # one liver slice, one liver-free slice
    good = (head_target(mask, (4, 4)) * 2 - 1) * 20  # logits that match the target
    assert float(head_loss(good, mask)) < 0.05
    assert float(head_loss(-good, mask)) > 1.0
    assert "head" in SAMMixLoss(seg_dice=0, seg_bce=0, iou=0, head=1.0).supervised({"head_logits": good}, mask, torch.tensor([1, 0]))


def test_head_learns_the_liver_and_only_the_prompt_path_changes(tiny_phantom, tmp_path):
    store, _ = tiny_phantom
    job = build_training(_cfg(store, tmp_path / "run", epochs=10), tmp_path / "run")
    before = {k: v.clone() for k, v in job.model.state_dict().items()}
    untrained = _head_dice(job.model.eval(), store)
    job.model.train()
    job.trainer.run()
    after = job.model.state_dict()
    changed = {k.split(".")[0] for k, v in after.items() if not torch.equal(v, before[k])}
    assert changed == {"classifier", "liver_head"}  # the SAM (encoder, prompt encoder, decoder) is untouched
    dice = _head_dice(job.model.eval(), store)
    print(f"head soft Dice on the training slices: {untrained:.3f} untrained, {dice:.3f} trained")
    assert dice >= max(HEAD_DICE_FLOOR, 2 * untrained)


def _head_dice(net, store) -> float:
    ds = SliceDataset(store, "train")
    x = torch.stack([torch.as_tensor(ds[i]["image"]) for i in range(len(ds))]).float()
    y = torch.stack([torch.as_tensor(ds[i]["mask"]) for i in range(len(ds))]).float()
    with torch.no_grad():
        p = torch.sigmoid(net.head_logits(x))
    t = head_target(y, tuple(p.shape[-2:]))
    return float(2 * (p * t).sum() / (p.sum() + t.sum()))
