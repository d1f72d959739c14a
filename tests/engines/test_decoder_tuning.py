"""Decoder fine-tuning (loss.decoder): rough boxes, and only the SAM's decoder and prompt encoder learn."""

from __future__ import annotations

import torch
from ignite.engine import Events

from sam_mix_monai.data import SliceDataset
from sam_mix_monai.engines.config import validate_config
from sam_mix_monai.engines.decoder_tuning import decoder_loss, evidence_boxes, jitter_boxes
from sam_mix_monai.engines.run import build_training
from sam_mix_monai.networks.decoding import sam_decode, sam_encode
from tests.engines.conftest import tiny_config


def test_jitter_moves_each_edge_within_its_reach_both_ways_and_stays_on_the_image():
    boxes = torch.tensor([[40.0, 50.0, 139.0, 99.0]] * 2000)  # 100 wide, 50 high
    out = jitter_boxes(boxes, 256, 0.2, torch.Generator().manual_seed(0))
    d = out - boxes
    assert float(d[:, [0, 2]].abs().max()) <= 20.0 + 1e-4 and float(d[:, [1, 3]].abs().max()) <= 10.0 + 1e-4
    assert float(d.min()) < -8 and float(d.max()) > 8  # boxes both larger and smaller than the reference
    assert bool((out[:, 2] > out[:, 0]).all() and (out[:, 3] > out[:, 1]).all())
    edge = jitter_boxes(torch.tensor([[0.0, 0.0, 255.0, 255.0]] * 50), 256, 0.5, torch.Generator().manual_seed(1))
    assert float(edge.min()) >= 0 and float(edge.max()) <= 255
    assert torch.equal(jitter_boxes(boxes[:5], 256, 0.2, torch.Generator().manual_seed(3)),
                       jitter_boxes(boxes[:5], 256, 0.2, torch.Generator().manual_seed(3)))


def test_evidence_box_covers_the_cells_above_the_threshold_on_the_image_grid():
    logits = torch.full((2, 1, 16, 16), -9.0)
    logits[0, 0, 4:8, 2:10] = 9.0  # rows 4-7, columns 2-9 of a 16 x 16 grid: 16 px per cell at 256
    boxes, found = evidence_boxes(logits, 256)
    assert found.tolist() == [True, False]
    assert boxes[0].tolist() == [32.0, 64.0, 159.0, 127.0]


def _cfg(store, run_dir, loss):
    return validate_config(tiny_config(
        store, run_dir, model={"liver_head": True, "encoder_mode": "frozen"}, data={"n_labelled": 16, "val_split": None},
        loss={"seg_dice": 0.0, "seg_bce": 0.0, "iou": 0.0, "cls": 0.0, "unlabelled_cls": 0.0, "pseudo_cls": 0.0,
              **loss},
        augment={"labelled": False}, unlabelled={"enabled": False},
        train={"epochs": 4, "iterations_per_epoch": 6, "batch_size": 8, "lr": 1e-3, "sam_lr": 3e-3,
               "scheduler": "constant"},
        evaluate={"protocols": ["slice2d"], "cross_domain": []}))


def _jittered_dice(net, store) -> float:
    """Mean Dice of the single mask on the training liver slices from fixed jittered reference boxes."""
    from sam_mix_monai.networks.cam import mask_to_box

    ds = SliceDataset(store, "train")
    items = [ds[i] for i in range(len(ds))]
    x = torch.stack([torch.as_tensor(it["image"]) for it in items]).float()
    y = (torch.stack([torch.as_tensor(it["mask"]) for it in items]).float() > 0.5).float()
    keep = y.flatten(1).amax(1) > 0
    x, y = x[keep], y[keep]
    s = net.image_size
    x = torch.nn.functional.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
    y = torch.nn.functional.interpolate(y, size=(s, s), mode="nearest")
    boxes = jitter_boxes(mask_to_box(y)[0], s, 0.2, torch.Generator().manual_seed(123))
    with torch.no_grad():
        pred = (sam_decode(net.sam, sam_encode(net.sam, x), (s, s), boxes=boxes, multimask_output=False)["mask_logits"] > 0).float()
    inter, total = (pred * y).sum((1, 2, 3)), pred.sum((1, 2, 3)) + y.sum((1, 2, 3))
    return float((2 * inter / total.clamp(min=1)).mean())


def test_decoder_fine_tuning_changes_only_the_decoder_and_prompt_encoder_and_learns(tiny_phantom, tmp_path):
    store, _ = tiny_phantom
    job = build_training(_cfg(store, tmp_path / "run", {"decoder": 1.0}), tmp_path / "run")
    groups = job.optimizer.param_groups
    assert [g["lr"] for g in groups] == [1e-3, 3e-3]  # train.sam_lr: the SAM's decoder and prompt encoder apart
    before = {k: v.detach().clone() for k, v in job.model.named_parameters()}  # weights (BN statistics move in train mode)
    start = _jittered_dice(job.model.eval(), store)
    job.model.train()
    seen = []
    job.trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(dict(e.state.output)))
    job.trainer.run()
    after = dict(job.model.named_parameters())
    changed = {".".join(k.split(".")[:2]) for k, v in after.items() if not torch.equal(v, before[k])}
    assert changed and changed <= {"sam.mask_decoder", "sam.prompt_encoder"}, changed
    assert "sam.mask_decoder" in changed
    assert all(torch.equal(after[k], v) for k, v in before.items() if k.startswith(("sam.image_encoder", "classifier", "liver_head")))
    assert set(seen[0]) == {"loss", "decoder"}
    end = _jittered_dice(job.model.eval(), store)
    print(f"single-mask Dice from jittered boxes on the training slices: {start:.3f} before, {end:.3f} after")
    assert end > start + 0.05


def test_decoder_loss_of_a_batch_without_liver_is_a_zero_on_the_decoder_graph(tiny_phantom, tmp_path):
    store, _ = tiny_phantom
    job = build_training(_cfg(store, tmp_path / "run", {"decoder": 1.0}), tmp_path / "run")
    s = job.model.image_size
    loss = decoder_loss(job.model, torch.rand(3, 1, s, s), torch.zeros(3, 1, s, s), torch.Generator().manual_seed(0))
    assert float(loss.detach()) == 0.0 and loss.requires_grad
