"""Acceptance: `sam-mix phantom` then `sam-mix convert`, in both layouts."""

import h5py
import numpy as np
import pytest

from sam_mix_monai.cli.main import main
from sam_mix_monai.transforms import central_slice_range


@pytest.mark.parametrize("layout", ["lits", "totalseg"])
@pytest.mark.parametrize("keep_rate", ["0.3", "all"])
def test_phantom_then_convert(tmp_path, capsys, layout, keep_rate):
    src, out = tmp_path / "src", tmp_path / "o.h5"
    assert main(["phantom", "--out", str(src), "--cases", "3", "--layout", layout, "--domain", "b",
                 "--seed", "4", "--matrix", "96", "--slices", "40", "--workers", "2"]) == 0
    assert main(["convert", "--no-progress", "--format", layout, "--input", str(src), "--output", str(out),
                 "--keep-rate", keep_rate, "--image-size", "64", "--split", "train=1"]) == 0
    capsys.readouterr()
    with h5py.File(out) as f:
        per_case = f["cases/n_rows"][()]
        assert per_case.tolist() == [len(central_slice_range(40, keep_rate))] * 3
        img, mask, label = f["image"][()].astype(np.float32), f["mask"][()], f["label"][()]
        assert img.min() >= 0.0 and img.max() <= 1.0 and img.std() > 0.1
        assert set(np.unique(mask)) <= {0, 1}
        assert np.array_equal(label, (mask.reshape(len(mask), -1).sum(1) > 0).astype(np.uint8))
        assert label.sum() > 0
        if keep_rate == "all":  # the phantom liver is absent from the first and last slices
            first, n = f["cases/first_row"][()], f["cases/n_rows"][()]
            assert all(label[a] == 0 and label[a + k - 1] == 0 for a, k in zip(first, n))
