"""Atomic checkpoint writing with Ignite's Checkpoint; the run record travels with the weights."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine, Events

from sam_mix_monai.engines.handlers import AtomicSaver, RunRecord, best_checkpoint, last_checkpoint


def _engine():
    e = Engine(lambda engine, batch: None)
    return e


def test_last_checkpoint_is_rewritten_under_one_name(tmp_path):
    net = torch.nn.Linear(2, 2)
    e = _engine()
    e.add_event_handler(Events.EPOCH_COMPLETED, last_checkpoint({"network": net, "trainer": e,
                                                                  "config": RunRecord({"name": "unet"})}, tmp_path))
    e.run([0, 1], max_epochs=3)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["last.pt"]
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ckpt["trainer"]["iteration"] == 6 and ckpt["config"]["model"] == {"name": "unet"}
    assert torch.equal(ckpt["network"]["weight"], net.weight)


def test_best_checkpoint_keeps_the_best_and_its_tracking_state(tmp_path):
    net = torch.nn.Linear(2, 2)
    scores = iter([0.5, 0.7, 0.6])
    e = _engine()
    e.add_event_handler(Events.EPOCH_STARTED, lambda eng: setattr(eng.state, "score", next(scores)))
    best = best_checkpoint({"network": net}, tmp_path, lambda eng: eng.state.score)
    e.add_event_handler(Events.EPOCH_COMPLETED, best)
    e.run([0], max_epochs=3)
    saved = torch.load(tmp_path / "best.pt", weights_only=True)
    assert [round(p, 2) for p, _ in saved["checkpointer"]["_saved"]] == [0.7]


def test_atomic_saver_leaves_the_old_file_when_writing_fails(tmp_path):
    saver = AtomicSaver(tmp_path, "last.pt")
    saver({"a": torch.ones(1)}, "ignored.pt")

    class Bad:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        saver({"a": Bad()}, "ignored.pt")
    assert torch.load(tmp_path / "last.pt", weights_only=True)["a"].item() == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary left behind


def test_saver_never_writes_non_finite_weights(tmp_path):
    import pytest
    import torch

    from sam_mix_monai.engines.handlers import AtomicSaver
    from sam_mix_monai.utils.errors import InputError

    saver = AtomicSaver(tmp_path, "best.pt")
    saver({"network": {"w": torch.ones(2)}}, "ignored.pt")
    good = (tmp_path / "best.pt").read_bytes()
    with pytest.raises(InputError, match=r"NaN or infinite values in 1 \(w\).*best.pt was not overwritten"):
        saver({"network": {"w": torch.tensor([1.0, float("nan")])}}, "ignored.pt")
    assert (tmp_path / "best.pt").read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]
