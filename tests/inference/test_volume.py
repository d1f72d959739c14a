"""Streaming slice inference: parity with the training pipeline, batch independence, gating, memory-mapped input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from sam_mix_monai.data.io import read_volume
from sam_mix_monai.inference import AxialGeometry, VolumeSliceInferer, SlicePredictor, load_checkpoint
from sam_mix_monai.networks import GATED_LOGIT
from sam_mix_monai.transforms import SlicingConfig, volume_to_slices_transform
from tests.inference.tiny_model import IMAGE_SIZE, phantom, save_case, tiny_checkpoint


class Recorder(torch.nn.Module):
    """Records its inputs; predicts 'bright' pixels."""

    image_size = IMAGE_SIZE

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        return (x - 0.55) * 50


def _volume(codes: str = "LPS") -> MetaTensor:
    c = phantom(0, codes)
    return MetaTensor(torch.from_numpy(c.image.copy())[None], affine=torch.as_tensor(c.affine))


def test_network_input_equals_training_slices() -> None:
    vol = _volume("LPS")
    rec = Recorder()
    VolumeSliceInferer(batch_size=16)(vol, rec)
    seen = torch.cat(rec.seen)[:, 0]
    ref = volume_to_slices_transform(SlicingConfig(keep_rate="all", image_size=IMAGE_SIZE), with_label=False)(
        {"image": vol.float()})["image"]
    assert seen.shape == (40, IMAGE_SIZE, IMAGE_SIZE)
    torch.testing.assert_close(seen, torch.as_tensor(ref), rtol=0, atol=1e-6)


@pytest.mark.parametrize("batch", [1, 7])
def test_result_does_not_depend_on_batch_size(batch: int) -> None:
    vol = _volume("PLS")
    ref = VolumeSliceInferer(batch_size=40)(vol, Recorder())
    out = VolumeSliceInferer(batch_size=batch)(vol, Recorder())
    assert torch.equal(out.as_tensor(), ref.as_tensor())
    assert out.shape == vol.shape and out.dtype == torch.uint8 and torch.equal(out.affine, vol.affine)
    assert 0 < int(out.sum()) < out.numel()


def test_trained_model_scores_and_gate() -> None:
    net, _, _ = load_checkpoint(tiny_checkpoint())
    vol = _volume("RAS")
    out = VolumeSliceInferer(batch_size=8)(vol, net)
    prob, iou = out.meta["liver_prob"], out.meta["chosen_iou"]
    assert prob.shape == (40,) and iou.shape == (40,) and not np.isnan(prob).any()
    geo = AxialGeometry(np.asarray(vol.affine), vol.shape[1:])
    has = out.as_tensor()[0].numpy().any(axis=(0, 1))  # RAS: z is the last axis
    assert not has[prob < 0.5].any()  # gated slices stay empty
    assert geo.depth == 40
    # Gate everything: an empty mask.
    empty = VolumeSliceInferer(cls_threshold=1.01)(vol, net)
    assert int(empty.sum()) == 0


def test_predictor_on_single_output_module() -> None:
    pred = SlicePredictor(Recorder())
    out = pred(torch.rand(2, 1, IMAGE_SIZE, IMAGE_SIZE))
    assert out.logits.shape == (2, 1, IMAGE_SIZE, IMAGE_SIZE) and out.liver_prob is None and not pred.has_scores
    with pytest.raises(ValueError, match="image_size"):
        VolumeSliceInferer()(_volume(), torch.nn.Identity())


def test_memory_mapped_nifti_is_read_slab_by_slab(tmp_path: Path) -> None:
    c = phantom(0, "LAS")
    path = save_case(tmp_path / "v.nii", c.image, c.affine)  # uncompressed: nibabel memory-maps it
    vol = read_volume(path)
    assert isinstance(vol.as_tensor().numpy().base, np.memmap) or vol.as_tensor().numpy().base is not None
    out = VolumeSliceInferer(batch_size=5)(vol, Recorder())
    ref = VolumeSliceInferer(batch_size=5)(_volume("LAS"), Recorder())
    assert torch.equal(out.as_tensor(), ref.as_tensor())


def test_gated_logit_is_empty() -> None:
    inf = VolumeSliceInferer()
    logits = torch.full((2, 1, 8, 8), GATED_LOGIT)
    logits[1, 0, 2:4, 2:4] = 5.0
    m = inf.postprocess(logits, (16, 12))
    assert m.shape == (2, 16, 12) and m[0].sum() == 0 and m[1].sum() > 0


def test_bf16_autocast_agrees_with_fp32() -> None:
    net, _, _ = load_checkpoint(tiny_checkpoint())
    vol = _volume("LPS")
    ref = VolumeSliceInferer()(vol, net).as_tensor().bool()
    got = VolumeSliceInferer(precision="bf16")(vol, net).as_tensor().bool()
    dice = 2 * (ref & got).sum() / (ref.sum() + got.sum())
    assert float(dice) >= 0.95
    with pytest.raises(ValueError, match="precision"):
        VolumeSliceInferer(precision="int8")(vol, net)
