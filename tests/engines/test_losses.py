"""Loss terms: masking, FixMatch confidence, IoU targets, weights that switch terms off."""

from __future__ import annotations

import pytest
import torch

from sam_mix_monai.engines.losses import SAMMixLoss, consistency_loss, fixmatch_loss, mask_iou, masked_cross_entropy

LOG2 = torch.log(torch.tensor(2.0)).item()


def test_masked_cross_entropy_ignores_unknown_labels():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [5.0, -5.0]], requires_grad=True)
    full = torch.nn.functional.cross_entropy(logits[:2], torch.tensor([0, 1]))
    assert torch.allclose(masked_cross_entropy(logits, torch.tensor([0, 1, -1])), full)
    none = masked_cross_entropy(logits, torch.tensor([-1, -1, -1]))
    assert none.item() == 0.0 and none.requires_grad  # still part of the graph (DDP-safe)


def test_fixmatch_keeps_confident_pseudo_labels_only():
    weak = torch.tensor([[4.0, 0.0], [0.1, 0.0], [0.0, 4.0]])  # confident 0, unsure, confident 1
    strong = torch.zeros(3, 2, requires_grad=True)
    loss, rate = fixmatch_loss(weak, strong, threshold=0.7)
    assert rate.item() == pytest.approx(2 / 3)
    assert loss.item() == pytest.approx(2 * torch.log(torch.tensor(2.0)).item() / 3)  # FixMatch: mean over the batch
    loss.backward()
    assert strong.grad[1].abs().sum() == 0  # the unsure sample gives no gradient


def test_mask_iou_and_consistency():
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2, :] = 1
    logits = torch.full((1, 3, 4, 4), -5.0)
    logits[:, 0, :2, :] = 5.0  # perfect
    logits[:, 1] = 5.0  # everything: IoU 0.5
    assert mask_iou(logits, target).tolist() == [[1.0, 0.5, 0.0]]
    strong = torch.zeros(1, 1, 4, 4, requires_grad=True)
    p = torch.full((1, 1, 4, 4), 0.6)  # not confident at 0.9
    assert consistency_loss(strong, p, torch.ones_like(p), 0.9).item() == 0.0
    p[..., 0, 0] = 0.99
    assert consistency_loss(strong, p, torch.ones_like(p), 0.9).item() > 0.0


def test_weights_switch_terms_off():
    out = {"mask_logits": torch.zeros(2, 1, 8, 8), "class_logits": torch.zeros(2, 2),
           "all_mask_logits": torch.zeros(2, 3, 8, 8), "iou_pred": torch.zeros(2, 3)}
    mask, label = torch.ones(2, 1, 8, 8), torch.tensor([1, -1])
    assert set(SAMMixLoss().supervised(out, mask, label)) == {"seg_dice", "seg_bce", "iou", "cls"}
    loss = SAMMixLoss(seg_bce=0.0, iou=0.0, cls=0.0)
    terms = loss.supervised(out, mask, label)
    assert set(terms) == {"seg_dice"} and not loss.wants("cls", "iou")
    assert loss.total({**terms, "pseudo_mask_rate": torch.tensor(0.5)}) == terms["seg_dice"]
    assert set(SAMMixLoss().supervised({"mask_logits": out["mask_logits"]}, mask, label)) == {"seg_dice", "seg_bce"}
    with pytest.raises(ValueError, match="no loss term"):
        SAMMixLoss(seg_dice=0.0, seg_bce=0.0).total({})


def test_fixmatch_uses_the_known_label_not_the_pseudo_label():
    weak = torch.tensor([[6.0, 0.0], [6.0, 0.0]])  # confidently "no liver" on both
    strong = torch.tensor([[0.0, 0.0], [0.0, 0.0]], requires_grad=True)
    loss, rate = fixmatch_loss(weak, strong, threshold=0.7, labels=torch.tensor([1, -1]))
    # sample 0: its known label 1 is the target (CE log 2, as for label 0: a zero logit pair); sample 1: pseudo-label 0
    loss.backward()
    assert loss.item() == pytest.approx(LOG2) and rate.item() == pytest.approx(1.0)
    assert strong.grad[0, 1] < 0 < strong.grad[1, 1]  # pulled towards liver where the label says liver
    wrong = torch.tensor([[0.0, 3.0], [0.0, 0.0]])  # the strong view agrees with the known label
    assert fixmatch_loss(weak, wrong, 0.7, torch.tensor([1, -1]))[0] < fixmatch_loss(weak, wrong, 0.7)[0]


def test_balanced_cross_entropy_is_the_mean_of_class_means():
    logits = torch.tensor([[0.0, 2.0], [0.0, 2.0], [0.0, 2.0], [0.0, 2.0], [0.0, -1.0], [3.0, 3.0]])
    labels = torch.tensor([1, 1, 1, 1, 0, -1])
    ce = torch.nn.functional.cross_entropy(logits[:5], labels[:5], reduction="none")
    balanced = (ce[:4].mean() + ce[4]) / 2
    assert masked_cross_entropy(logits, labels, balanced=True).item() == pytest.approx(balanced.item())
    assert masked_cross_entropy(logits, labels).item() == pytest.approx(ce.mean().item())
    assert SAMMixLoss().supervised({"mask_logits": torch.zeros(6, 1, 4, 4), "class_logits": logits},
                                   torch.zeros(6, 1, 4, 4), labels)["cls"].item() == pytest.approx(balanced.item())


def test_dice_term_leaves_known_empty_masks_to_bce():
    logits = torch.full((2, 1, 4, 4), -3.0)
    logits[0, :, :2] = 3.0
    logits[1, :, 0, 0] = 3.0  # one false-positive pixel on the empty slice
    mask = torch.zeros(2, 1, 4, 4)
    mask[0, :, :2] = 1
    terms = SAMMixLoss().supervised({"mask_logits": logits}, mask, torch.tensor([1, 0]))
    from monai.losses import DiceLoss

    assert terms["seg_dice"].item() == pytest.approx(DiceLoss(sigmoid=True)(logits[:1], mask[:1]).item())
    assert terms["seg_bce"].item() == pytest.approx(torch.nn.functional.binary_cross_entropy_with_logits(logits, mask).item())


def test_balanced_fixmatch_weighs_the_kept_classes_alike():
    weak = torch.tensor([[0.0, 4.0], [0.0, 4.0], [0.0, 4.0], [4.0, 0.0], [0.1, 0.0]])  # 3x liver, 1x free, unsure
    strong = torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
    ce = torch.nn.functional.cross_entropy(strong[:4], torch.tensor([1, 1, 1, 0]), reduction="none")
    plain, rate = fixmatch_loss(weak, strong, 0.7)
    assert plain.item() == pytest.approx(ce.sum().item() / 5) and rate.item() == pytest.approx(0.8)
    balanced, _ = fixmatch_loss(weak, strong, 0.7, balanced=True)
    assert balanced.item() == pytest.approx((ce[:3].mean() + ce[3]).item() / 2 * 0.8)  # class means, FixMatch scale
    # with the kept classes balanced it is FixMatch's loss
    even = fixmatch_loss(weak[2:4], strong[2:4], 0.7, balanced=True)[0]
    assert even.item() == pytest.approx(fixmatch_loss(weak[2:4], strong[2:4], 0.7)[0].item())


# -- under torch.distributed: the means over a subset are global ------------------------------

def _batch() -> dict[str, torch.Tensor]:
    """8 samples whose known labels and liver slices are unevenly shared by the two halves."""
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(8, 1, 8, 8)
    for i in (0, 1, 2, 5):  # liver slices: 3 in the first half, 1 in the second
        mask[i, :, 2:6, 1 + i % 3:6] = 1
    return {"logits": torch.randn(8, 2, generator=g), "strong": torch.randn(8, 2, generator=g),
            "weak": torch.randn(8, 2, generator=g) * 3, "labels": torch.tensor([1, 1, 1, 0, 1, -1, -1, -1]),
            "mask_logits": torch.randn(8, 1, 8, 8, generator=g), "mask": mask}


def _terms(b: dict[str, torch.Tensor], part: slice) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Loss values on ``b[part]`` and the gradients of their sum w.r.t. the full batch's leaves."""
    leaves = {k: b[k].clone().requires_grad_(True) for k in ("logits", "strong", "mask_logits")}
    lab = b["labels"][part]
    terms = SAMMixLoss().supervised({"mask_logits": leaves["mask_logits"][part], "class_logits": leaves["logits"][part]},
                                    b["mask"][part], lab)
    terms["cls_plain"] = masked_cross_entropy(leaves["logits"][part], lab)
    terms["pseudo"], terms["rate"] = fixmatch_loss(b["weak"][part], leaves["strong"][part], 0.7, lab, balanced=True)
    sum(v for k, v in terms.items() if k != "rate").backward()
    return {k: float(v.detach()) for k, v in terms.items()}, {k: v.grad for k, v in leaves.items()}


def _global_terms_worker(local_rank: int, out: str) -> None:
    import torch.distributed as dist

    r, k = dist.get_rank(), dist.get_world_size()
    values, grads = _terms(_batch(), slice(4 * r, 4 * r + 4))
    for g in grads.values():  # what DDP does with the gradients: their mean over the ranks
        dist.all_reduce(g)
        g /= k
    torch.save({"values": values, "grads": grads}, f"{out}/rank{r}.pt")


def test_masked_means_and_class_weights_are_global_over_ranks(tmp_path):
    """2 gloo processes, each with half the batch: the rank-averaged values and the DDP-averaged
    gradients of Dice over liver slices, (balanced) CE over known labels and balanced FixMatch equal
    the one-process loss of the whole batch."""
    from sam_mix_monai.engines.distributed import launch

    b = _batch()
    one, one_grads = _terms(b, slice(0, 8))
    halves = [_terms(b, slice(0, 4))[0], _terms(b, slice(4, 8))[0]]
    for key in ("seg_dice", "cls", "pseudo"):  # per-rank means: their mean is not the one-process value
        assert (halves[0][key] + halves[1][key]) / 2 != pytest.approx(one[key], rel=1e-2), key
    launch(_global_terms_worker, str(tmp_path), nproc_per_node=2, device="cpu")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for key, value in one.items():
        assert (ranks[0]["values"][key] + ranks[1]["values"][key]) / 2 == pytest.approx(value, rel=1e-5, abs=1e-7), key
    for key, g in one_grads.items():
        for r in ranks:
            torch.testing.assert_close(r["grads"][key], g, rtol=1e-5, atol=1e-7, msg=key)


def test_cam_mask_loss_rewards_mass_inside_the_liver_and_skips_empty_slices():
    from sam_mix_monai.engines.losses import cam_mask_loss

    mask = torch.zeros(3, 1, 8, 8)
    mask[0, :, :4, :4] = 1  # liver in the top-left quarter (cells 0..1 of a 4x4 map)
    mask[1, :, :4, :4] = 1
    inside, outside = torch.zeros(3, 1, 4, 4), torch.zeros(3, 1, 4, 4)
    inside[:, :, :2, :2] = 5.0
    outside[:, :, 2:, 2:] = 5.0
    lo, hi = cam_mask_loss(inside, mask), cam_mask_loss(outside, mask)
    assert 0 <= float(lo) < 0.05 < 4.0 < float(hi)  # -log(4e^5 / (4e^5 + 12)) = 0.020; -log(4 / (4e^5 + 12)) = 5.02
    # a flat map puts 4 of 16 cells inside: -log(1/4)
    assert abs(float(cam_mask_loss(torch.zeros(3, 1, 4, 4), mask)) - float(torch.log(torch.tensor(4.0)))) < 1e-5
    # the map's mean does not matter (the image logit is left to the cls term)
    assert abs(float(cam_mask_loss(inside + 3.0, mask)) - float(lo)) < 1e-5
    # slice 2 (no liver) does not count; no liver at all gives 0 with a graph
    z = torch.zeros(1, 1, 4, 4, requires_grad=True)
    out = cam_mask_loss(z, torch.zeros(1, 1, 8, 8))
    out.backward()
    assert float(out) == 0.0 and z.grad is not None
    assert SAMMixLoss(cam_mask=1.0).wants("cam_mask") and not SAMMixLoss().wants("cam_mask")
