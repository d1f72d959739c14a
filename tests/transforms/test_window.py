import numpy as np
import pytest
import torch

from sam_mix_monai.transforms import HUWindow, HUWindowd, window_bounds


def test_window_maps_paper_window_to_unit_interval():
    x = torch.tensor([-1000.0, -160.0, 40.0, 240.0, 3000.0])
    assert torch.allclose(HUWindow()(x), torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))


def test_window_is_configurable_and_dict_form_matches():
    x = np.array([[-100.0, 0.0, 100.0]])
    d = HUWindowd("image", center=0, width=200)({"image": x, "other": 5})
    assert np.allclose(d["image"], [[0.0, 0.5, 1.0]]) and d["other"] == 5


def test_bad_width_is_rejected():
    with pytest.raises(ValueError):
        window_bounds(40, 0)
