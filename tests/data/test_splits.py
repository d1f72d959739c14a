import pytest

import numpy as np

from sam_mix_monai.data.h5store import CaseSlices
from sam_mix_monai.data.splits import assign_splits, parse_slab, parse_split, split_slab
from sam_mix_monai.utils.errors import InputError


def test_parse_split_and_errors():
    assert parse_split("train=0.8,test=0.2") == {"train": 0.8, "test": 0.2}
    for bad in ("train=0.5", "foo=1", "train=x,test=1", "train"):
        with pytest.raises(InputError, match="--split"):
            parse_split(bad)


def test_assignment_is_by_case_seeded_and_covers_every_split():
    ids = [f"c{i}" for i in range(7)]
    a = assign_splits(ids, {"train": 0.7, "val": 0.1, "test": 0.2}, seed=1)
    assert set(a) == set(ids) and set(a.values()) == {"train", "val", "test"}
    assert a == assign_splits(ids, {"train": 0.7, "val": 0.1, "test": 0.2}, seed=1)
    assert a != assign_splits(ids, {"train": 0.7, "val": 0.1, "test": 0.2}, seed=2)


def _case(n: int = 20) -> CaseSlices:
    z = np.arange(n)
    return CaseSlices("c", "src", np.random.default_rng(0).random((n, 4, 4), np.float32), np.zeros((n, 4, 4), np.uint8),
                      (z % 2).astype(np.uint8), z, np.ones(3, np.float32), np.eye(4), (4, 4, n))


def test_split_slab_keeps_the_slab_apart_with_a_gap():
    case = _case()
    rest, slab = split_slab(case, 8, 12, gap=2)
    assert slab.case_id == "c_slab8-12" and slab.slice_index.tolist() == [8, 9, 10, 11]
    assert rest.case_id == "c" and rest.slice_index.tolist() == [*range(6), *range(14, 20)]
    assert np.array_equal(slab.image, case.image[8:12]) and np.array_equal(rest.label, case.label[rest.slice_index])
    assert slab.affine is case.affine and slab.shape == case.shape  # still the full volume's grid
    with pytest.raises(InputError, match="slab must hold"):
        split_slab(case, 30, 40)
    with pytest.raises(InputError, match="slab must hold"):
        split_slab(case, 0, 20)


def test_parse_slab():
    assert parse_slab("92:116") == (92, 116)
    for bad in ("92", "a:b", "10:5", "-1:3", "4:4"):
        with pytest.raises(InputError, match="--dev-slab"):
            parse_slab(bad)
