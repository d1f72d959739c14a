"""Store validation at open: good stores pass (also compressed ones), broken ones name the store and dataset."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from sam_mix_monai.data.dataset import SliceTable
from sam_mix_monai.data.legacy import write_legacy_file
from sam_mix_monai.utils.errors import InputError
from tests.faults import write_store


def test_good_and_compressed_stores_pass(tmp_path):
    store = write_store(tmp_path / "ok.h5")
    assert len(SliceTable(store)) == 30
    packed = tmp_path / "packed.h5"
    with h5py.File(store) as src, h5py.File(packed, "w") as dst:
        for k, v in src.attrs.items():
            dst.attrs[k] = v
        for name in ("image", "mask", "label", "split", "case_id", "slice_index", "spacing"):
            src.copy(name, dst)
        del dst["image"]
        dst.create_dataset("image", data=src["image"][()], chunks=(1, 64, 64), compression="gzip")
    assert len(SliceTable(packed)) == 30


def test_unwritten_chunks_and_out_of_range_values(tmp_path):
    store = write_store(tmp_path / "s.h5")
    with h5py.File(store, "r+") as f:
        f["mask"].resize(40, axis=0)
    with pytest.raises(InputError, match=r"s\.h5: dataset 'image' has 30 rows but 'mask' has 40"):
        SliceTable(store)
    with h5py.File(store, "r+") as f:  # ten rows declared everywhere but never written (they would read as zeros)
        for name in ("image", "label", "split", "case_id", "slice_index", "spacing"):
            f[name].resize(40, axis=0)
    with pytest.raises(InputError, match=r"s\.h5: dataset 'image' declares 40 rows .* only 30 of its 40 chunks"):
        SliceTable(store)
    store = write_store(tmp_path / "r.h5")
    with h5py.File(store, "r+") as f:
        f["image"][3] = 2.5
    with pytest.raises(InputError, match=r"r\.h5: dataset 'image' holds values in \[0, 2\.5\]"):
        SliceTable(store)
    store = write_store(tmp_path / "l.h5")
    with h5py.File(store, "r+") as f:
        f["label"][0] = 7
    with pytest.raises(InputError, match=r"l\.h5: dataset 'label' holds values outside 0\.\.1 \(e\.g\. 7\)"):
        SliceTable(store)


def test_original_layout_with_nan_is_refused(tmp_path):
    hu = np.full((4, 16, 16), 40.0)
    lab = np.zeros((4, 16, 16))
    path = tmp_path / "legacy.h5"
    write_legacy_file(str(path), hu, lab)
    assert len(SliceTable(path)) == 4
    with h5py.File(path, "r+") as f:
        f["Slice3"]["Slice"][0, 0] = np.nan
    with pytest.raises(InputError, match=r"legacy\.h5: dataset 'Slice\{i\}/Slice' holds NaN"):
        SliceTable(path)
