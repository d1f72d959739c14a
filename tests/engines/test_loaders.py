"""Training streams depend only on (seed, epoch); K ranks together see the single-process batch."""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from sam_mix_monai.data import SliceDataset
from sam_mix_monai.engines.loaders import EpochStream, case_partition, training_stream


def _ids(stream: EpochStream, epoch: int) -> list[list[int]]:
    stream.set_epoch(epoch)
    return [b[0].tolist() for b in stream]


def test_stream_length_cycling_and_determinism():
    ds = TensorDataset(torch.arange(10))
    s = training_stream(ds, batch_size=4, length=7, seed=0)
    e1 = _ids(s, 1)
    assert len(s) == 7 and len(e1) == 7 and all(len(b) == 4 for b in e1)
    flat = [i for b in e1 for i in b]
    # a pass is a shuffled permutation (the 2 slices that do not fill a batch are dropped, differently each pass)
    assert len(set(flat[:8])) == 8 and len(set(flat[8:16])) == 8 and flat[:8] != sorted(flat[:8])
    assert _ids(training_stream(ds, 4, 7, seed=0), 1) == e1  # a fresh process repeats epoch 1
    assert _ids(s, 2) != e1
    small = training_stream(TensorDataset(torch.arange(3)), batch_size=8, length=2, seed=0)  # N < batch
    assert [len(b) for b in _ids(small, 1)] == [8, 8]


def test_ranks_share_the_global_batch():
    ds = TensorDataset(torch.arange(16))
    single = _ids(training_stream(ds, 4, 4, seed=3), 1)
    r0 = _ids(training_stream(ds, 2, 4, seed=3, rank=0, world_size=2), 1)
    r1 = _ids(training_stream(ds, 2, 4, seed=3, rank=1, world_size=2), 1)
    assert [sorted(a + b) for a, b in zip(r0, r1)] == [sorted(s) for s in single]


def test_case_partition_keeps_cases_whole(tiny_phantom):
    ds = SliceDataset(tiny_phantom[0], split="train")
    parts = [case_partition(ds, r, 2) for r in range(2)]
    cases = [{ds[i]["case_id"] for i in p.indices} for p in parts]
    assert cases[0] and cases[1] and not cases[0] & cases[1]
    assert sum(len(p) for p in parts) == len(ds)
    assert case_partition(ds, 0, 1) is ds
    assert case_partition(ds, 1, 50) is ds  # fewer cases than ranks: everyone gets all
