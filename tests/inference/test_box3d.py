"""The user's 3D box prompt: parsing and checks, orientation-independent propagation, real CT against its reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from sam_mix_monai.inference.box3d import Box3D, check_box, parse_box, pretrained_box_sam, segment_box
from sam_mix_monai.utils.errors import InputError


def test_parse_and_check() -> None:
    assert parse_box("1, 2,3,10,20,30") == Box3D((1, 2, 3), (10, 20, 30))
    with pytest.raises(InputError, match="z1 = 9 > z2 = 3") as e:
        parse_box("0,0,9,5,5,3", "scan.nii.gz")
    assert "scan.nii.gz" in str(e.value)
    with pytest.raises(InputError, match="six integers"):
        parse_box("1,2,3,4,5")
    with pytest.raises(InputError, match="six integers"):
        parse_box("1,2,3,4,5,x")
    check_box(Box3D((0, 0, 0), (9, 9, 4)), (10, 10, 5), "v.nii")
    with pytest.raises(InputError, match=r"z range \[0, 5\] lies outside the volume \(valid indices 0-4") as e:
        check_box(Box3D((0, 0, 0), (9, 9, 5)), (10, 10, 5), "v.nii")
    assert str(e.value).startswith("v.nii:")
    with pytest.raises(InputError, match="x range"):
        check_box(Box3D((-1, 0, 0), (3, 3, 3)), (10, 10, 5), "v.nii")


def test_next_prompt_boxes_the_largest_component() -> None:
    from sam_mix_monai.inference.box3d import _mask_box

    m = np.zeros((40, 50), bool)
    m[10:20, 5:25] = True  # the organ
    m[30:33, 40:44] = True  # a stray piece: must not widen the next slice's box
    assert _mask_box(m, 2, (0, 0, 49, 39)) == (3, 8, 26, 21)
    assert _mask_box(m, 2, (6, 9, 49, 39)) == (6, 9, 26, 21)  # kept inside the user's box
    assert _mask_box(np.zeros((4, 4), bool), 2, (0, 0, 3, 3)) is None


def _phantom_volume(flip: bool) -> MetaTensor:
    rng = np.random.default_rng(0)
    arr = rng.normal(-50, 20, (48, 40, 12)).astype(np.float32)
    arr[10:30, 8:28, 2:10] = 120.0
    aff = np.diag([0.8, 0.8, 2.0, 1.0])
    if flip:  # the same voxels in an LPS header: first two axes reversed
        arr = arr[::-1, ::-1].copy()
        aff = np.array([[-0.8, 0, 0, 47 * 0.8], [0, -0.8, 0, 39 * 0.8], [0, 0, 2.0, 0], [0, 0, 0, 1]])
    return MetaTensor(torch.from_numpy(arr)[None], affine=torch.as_tensor(aff))


def test_propagation_stays_in_the_box_and_ignores_header_orientation() -> None:
    from sam_mix_monai.networks.sam_builder import build_sam

    torch.manual_seed(0)
    sam = build_sam("compact", 64).eval()
    box = Box3D((8, 6, 3), (33, 31, 8))
    ras = segment_box(_phantom_volume(False), box, sam)
    inside = np.zeros(ras.mask.shape, bool)
    inside[8:34, 6:32, 3:9] = True
    assert ras.mask.any() and not ras.mask[~inside].any()  # never outside the user's box
    assert np.isnan(ras.chosen_iou[:3]).all() and not np.isnan(ras.chosen_iou[3:9]).any()
    lps = segment_box(_phantom_volume(True), Box3D((48 - 34, 40 - 32, 3), (48 - 9, 40 - 7, 8)), sam)
    np.testing.assert_array_equal(lps.mask[::-1, ::-1], ras.mask)  # same voxels, other header: same mask


@pytest.mark.slow
def test_reference_box_on_ircadb_07(ircadb_07: Path) -> None:
    """The pretrained LiteMedSAM from the reference mask's 3D box (an upper bound: an oracle box)."""
    from sam_mix_monai.data.ircadb import read_ircadb_patient
    from sam_mix_monai.transforms.components import keep_largest_component

    p = read_ircadb_patient(ircadb_07)
    ref = p.liver.numpy()[0] > 0
    idx = [np.flatnonzero(ref.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    box = Box3D(tuple(int(i[0]) for i in idx), tuple(int(i[-1]) for i in idx))
    res = segment_box(p.image, box, pretrained_box_sam())
    mask = res.mask.copy()
    keep_largest_component(mask)
    dice = 2 * (mask.astype(bool) & ref).sum() / (mask.sum() + ref.sum())
    print(f"ircadb_07 reference-box 3D Dice {dice:.4f}")
    assert dice >= DICE_FLOOR_IRCADB, dice


#: Measured 0.942 (0.9423 with and without the 3D largest component; README "A 3D box prompt"); the
#: floor sits a little under it. Before the largest-2D-component box rule: 0.866.
DICE_FLOOR_IRCADB = 0.93


class _Recorder(torch.nn.Module):
    """Records a fingerprint of every slice the wrapped encoder sees."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder, self.img_size, self.seen = encoder, encoder.img_size, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += [round(float(v.double().sum()), 3) for v in x]
        return self.encoder(x)


def test_no_slice_is_encoded_twice() -> None:
    """The start-slice candidates are encoded once, not again by the propagation (counted at the encoder)."""
    from sam_mix_monai.networks.sam_builder import build_sam

    torch.manual_seed(0)
    sam = build_sam("compact", 64).eval()
    sam.image_encoder = _Recorder(sam.image_encoder)
    res = segment_box(_phantom_volume(False), Box3D((8, 6, 0), (33, 31, 11)), sam, batch_size=4)
    prompted = int((~np.isnan(res.chosen_iou)).sum())
    assert prompted >= 2
    assert len(sam.image_encoder.seen) == len(set(sam.image_encoder.seen)), sam.image_encoder.seen
    assert len(sam.image_encoder.seen) <= 12  # at most the box's 12 slices
