import numpy as np
import pytest
import torch

from sam_mix_monai.data import SliceDataset
from sam_mix_monai.data.converter import convert
from sam_mix_monai.data.legacy import legacy_to_unit, write_legacy_file
from sam_mix_monai.transforms import SlicingConfig
from sam_mix_monai.utils.errors import InputError
from tests.conftest import write_lits_cases


@pytest.fixture()
def store(tmp_path):
    root = write_lits_cases(tmp_path / "l", n=4, shape=(32, 32, 16))
    out = tmp_path / "s.h5"
    convert(root, out, "lits", SlicingConfig(keep_rate="all", image_size=32), {"train": 0.75, "test": 0.25}, progress=False)
    return out


def test_items_and_loader(store):
    ds = SliceDataset(store, split="train")
    assert len(ds) == 48
    item = ds[0]
    assert item["image"].shape == (1, 32, 32) and item["image"].dtype == torch.float32
    assert item["mask"].shape == (1, 32, 32) and item["labelled"] is True
    assert item["case_id"].startswith("volume-") and item["spacing"].shape == (3,)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=5, num_workers=2)))
    assert batch["image"].shape == (5, 1, 32, 32) and len(batch["case_id"]) == 5


def test_n_labelled_selection_is_seeded_and_positive(store):
    lab = SliceDataset(store, "train", n_labelled=7, subset="labelled", seed=1)
    unl = SliceDataset(store, "train", n_labelled=7, subset="unlabelled", seed=1)
    assert len(lab) == 7 and len(unl) == 48 - 7
    assert all(lab[i]["label"] == 1 and lab[i]["mask"].sum() > 0 for i in range(7))
    assert all(unl[i]["mask"].sum() == 0 and not unl[i]["labelled"] for i in range(len(unl)))
    assert set(lab.rows) == set(SliceDataset(store, "train", n_labelled=7, subset="labelled", seed=1).rows)
    assert set(lab.rows) != set(SliceDataset(store, "train", n_labelled=7, subset="labelled", seed=2).rows)
    assert not set(lab.rows) & set(unl.rows)


def test_withheld_image_labels(store):
    ds = SliceDataset(store, "train", n_labelled=5, subset="unlabelled", withhold_label_fraction=1.0)
    assert all(ds[i]["label"] == -1 for i in range(len(ds)))
    ds = SliceDataset(store, "train", n_labelled=5, subset="unlabelled", withhold_label_fraction=0.0)
    assert all(ds[i]["label"] in (0, 1) for i in range(len(ds)))


def test_too_many_labelled_slices_is_a_clear_error(store):
    with pytest.raises(InputError, match="only 24 liver-positive"):
        SliceDataset(store, "train", n_labelled=1000)


def test_bad_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        SliceDataset(tmp_path / "none.h5")
    (tmp_path / "x.h5").write_text("nope")
    with pytest.raises(InputError, match="HDF5"):
        SliceDataset(tmp_path / "x.h5")


def test_original_sam_mix_layout_reads_back_windowed(tmp_path):
    rng = np.random.default_rng(0)
    hu = rng.uniform(-1000, 1000, (12, 16, 16)).astype(np.float32)
    labels = np.zeros((12, 16, 16), np.int16)
    labels[3:9, 4:10, 4:10] = 1
    labels[5, 6:8, 6:8] = 2
    path = tmp_path / "orig.h5"
    write_legacy_file(str(path), hu, labels)
    ds = SliceDataset(path, split=None)
    assert len(ds) == 12
    expected = np.clip((hu + 160) / 400, 0, 1)
    for i in range(12):
        item = ds[i]
        assert item["slice_index"] == i  # Slice{i} order is numeric, not listing order (Slice10 < Slice2 in text)
        assert float(item["image"].min()) >= 0 and float(item["image"].max()) <= 1
        # float16 of the squeezed original range resolves about 2 HU: 0.01 of the window
        assert np.abs(item["image"][0].numpy() - expected[i]).max() < 0.01
        assert set(torch.unique(item["mask"]).tolist()) <= {0.0, 1.0}
        assert torch.equal(item["mask"][0], torch.as_tensor(labels[i] > 0, dtype=torch.float32))
        assert int(item["label"]) == int((labels[i] > 0).any())


def test_legacy_normalisation_inverse():
    hu = np.array([-160.0, 40.0, 240.0])
    stored = (hu + 3055) / (5811 + 3055)
    assert np.allclose(legacy_to_unit(stored), [0, 0.5, 1], atol=1e-6)
    assert stored.min() > 0.32 and stored.max() < 0.38  # the squeeze the original script produces


def test_chunk_offset_reads_equal_h5py_reads(store):
    import h5py

    from sam_mix_monai.data.dataset import SliceTable

    table = SliceTable(store)
    table.read(0)
    assert table._map is not None  # the fast path is in use for our own files
    with h5py.File(store) as f:
        for row in (0, 17, len(table) - 1):
            img, mask = table.read(row)
            assert np.array_equal(img.numpy(), f["image"][row].astype(np.float32))
            assert np.array_equal(mask.numpy(), f["mask"][row])


def _legacy(tmp_path):
    hu = np.full((6, 16, 16), -100.0, np.float32)
    labels = np.zeros((6, 16, 16), np.int16)
    labels[1:4, 4:10, 4:10] = 1
    path = tmp_path / "orig.h5"
    write_legacy_file(str(path), hu, labels)
    return path, labels


def test_original_layout_refuses_a_named_split(tmp_path):
    path, _ = _legacy(tmp_path)
    for split in ("train", "val", "test"):
        with pytest.raises(InputError, match="one split"):
            SliceDataset(path, split=split)
    assert len(SliceDataset(path, split=None)) == 6


def test_original_layout_label_comes_from_the_mask(tmp_path):
    import h5py

    path, labels = _legacy(tmp_path)
    with h5py.File(path, "a") as f:
        f["Slice1"].attrs["ImageLabel"] = 0  # a wrong attribute on a liver slice
        del f["Slice2"].attrs["ImageLabel"]  # a missing one
        f["Slice5"].attrs["ImageLabel"] = 1  # and a liver-free slice marked as liver
    ds = SliceDataset(path, split=None)
    assert [int(ds[i]["label"]) for i in range(6)] == [int((labels[i] > 0).any()) for i in range(6)] == [0, 1, 1, 1, 0, 0]


def test_known_empty_slices_join_the_labelled_set(store):
    base = SliceDataset(store, "train", n_labelled=5, subset="labelled", seed=3)
    lab = SliceDataset(store, "train", n_labelled=5, subset="labelled", seed=3, n_empty=4)
    unl = SliceDataset(store, "train", n_labelled=5, subset="unlabelled", seed=3, n_empty=4)
    labels = lab.table.labels
    assert len(lab) == 9 and set(base.rows) <= set(lab.rows)  # the 5 positives are the same with or without
    extra = sorted(set(lab.rows) - set(base.rows))
    assert len(extra) == 4 and all(labels[r] == 0 for r in extra)
    assert not set(lab.rows) & set(unl.rows)
    items = [lab[i] for i in range(len(lab))]
    for it in items:  # an empty slice is supervised with its (known, empty) mask
        assert it["labelled"] and int(it["label"]) == int(it["mask"].amax() > 0)
    assert sum(int(it["label"]) == 0 for it in items) == 4
