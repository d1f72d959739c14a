import numpy as np
import pytest
import torch

from sam_mix_monai.transforms import AxialSlice, AxialSliced, central_slice_range, display_to_ras, ras_to_display


@pytest.mark.parametrize("depth,rate,expected", [(100, 0.3, 30), (101, 0.3, 30), (10, "all", 10), (7, 0.01, 1), (120, 1.0, 120)])
def test_keep_rate_counts_are_central(depth, rate, expected):
    r = central_slice_range(depth, rate)
    assert len(r) == expected
    assert abs(r.start - (depth - r.stop)) <= 1  # centred


@pytest.mark.parametrize("bad", [0, 1.5, "half", -0.2])
def test_bad_keep_rate(bad):
    with pytest.raises(ValueError):
        central_slice_range(10, bad)


def test_display_convention_and_inverse():
    vol = np.zeros((5, 4, 3))
    vol[4, 0, 1] = 1  # most patient-right (max x in RAS), most posterior (min y)
    disp = ras_to_display(vol)
    assert disp.shape == (3, 4, 5)
    # row = last (posterior), column 0 (patient right)
    assert disp[1, 3, 0] == 1 and disp.sum() == 1
    assert np.array_equal(display_to_ras(disp), vol)
    t = torch.as_tensor(vol)
    assert torch.equal(ras_to_display(t), torch.as_tensor(disp.copy()))
    assert torch.equal(display_to_ras(ras_to_display(t)), t)


def test_axial_sliced_slices_all_keys_alike():
    vol = torch.arange(2 * 3 * 10, dtype=torch.float32).reshape(1, 2, 3, 10)
    d = AxialSliced(["image", "label"], keep_rate=0.5)({"image": vol, "label": vol.clone()})
    assert d["image"].shape == (5, 3, 2)
    assert d["slice_index"].tolist() == [2, 3, 4, 5, 6]
    assert torch.equal(d["image"], d["label"])
    with pytest.raises(ValueError):
        AxialSlice()(torch.zeros(3, 3, 3))
