import pytest

from sam_mix_monai.data.splits import assign_splits, parse_split
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
