import numpy as np
import torch

from sam_mix_monai.transforms import BinarizeLabel, BinarizeLabeld


def test_tumour_merges_into_liver_numpy_and_torch():
    lab = np.array([[0, 1], [2, 0]])
    assert BinarizeLabel()(lab).tolist() == [[0, 1], [1, 0]]
    out = BinarizeLabel()(torch.as_tensor(lab))
    assert out.dtype == torch.uint8 and out.tolist() == [[0, 1], [1, 0]]


def test_selected_values_only():
    d = BinarizeLabeld("label", values=(1,))({"label": np.array([0, 1, 2])})
    assert d["label"].tolist() == [0, 1, 0]
