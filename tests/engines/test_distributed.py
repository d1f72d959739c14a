"""``engines.distributed.launch``: spawned ranks run the worker, leave cleanly, and report errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.multiprocessing.spawn import ProcessRaisedException

from sam_mix_monai.engines.distributed import backend_for, launch, rank, world_size


def _write_rank(local_rank: int, out: str) -> None:
    """Each rank sums its rank over the group and writes what it saw."""
    import ignite.distributed as idist

    total = idist.all_reduce(torch.tensor([float(rank())]))
    Path(out, f"rank{rank()}.json").write_text(json.dumps(
        {"local_rank": local_rank, "rank": rank(), "world": world_size(), "sum": float(total)}))


def _fail_on_rank_1(local_rank: int) -> None:
    if rank() == 1:
        raise ValueError("rank 1 found a bad case")


def test_backend_follows_the_device():
    assert backend_for("cpu") == "gloo"
    assert backend_for("cuda") == "nccl"


def test_two_spawned_ranks_run_the_worker_and_exit_cleanly(tmp_path):
    launch(_write_rank, str(tmp_path), nproc_per_node=2, device="cpu")
    seen = sorted(json.loads(p.read_text())["rank"] for p in tmp_path.glob("rank*.json"))
    assert seen == [0, 1]
    for p in tmp_path.glob("rank*.json"):
        d = json.loads(p.read_text())
        assert d["world"] == 2 and d["sum"] == 1.0 and d["local_rank"] == d["rank"]


def test_an_exception_in_a_spawned_rank_reaches_the_parent():
    with pytest.raises(ProcessRaisedException, match="rank 1 found a bad case"):
        launch(_fail_on_rank_1, nproc_per_node=2, device="cpu")


def test_one_process_runs_in_place(tmp_path):
    launch(_write_rank, str(tmp_path), device="cpu")
    assert json.loads((tmp_path / "rank0.json").read_text())["world"] == 1
