import numpy as np
import torch

from sam_mix_monai.transforms import SliceLabel, SliceLabeld


def test_slice_label_marks_positive_slices():
    m = np.zeros((4, 8, 8), np.uint8)
    m[1, 3, 3] = 1
    m[3, :2, :2] = 1
    assert SliceLabel()(m).tolist() == [0, 1, 0, 1]
    assert SliceLabel(min_pixels=2)(torch.as_tensor(m)).tolist() == [0, 0, 0, 1]


def test_dict_form_writes_output_key():
    m = np.zeros((2, 4, 4), np.uint8)
    m[0, 0, 0] = 1
    assert SliceLabeld("label", output_key="y")({"label": m})["y"].tolist() == [1, 0]
