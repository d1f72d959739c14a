"""metrics.json and curves.png from a (tiny) Ignite run; the history survives a state_dict round trip."""

from __future__ import annotations

import json

from ignite.engine import Engine, Events

from sam_mix_monai.engines.handlers import MetricsHistory


def test_history_files_and_state(tmp_path):
    validator = Engine(lambda e, b: None)

    @validator.on(Events.EPOCH_COMPLETED)
    def _metrics(e):
        e.state.metrics = {"slice2d_dice": 0.5 + 0.1 * trainer.state.epoch, "slice2d_hd": 12.0}

    trainer = Engine(lambda e, b: {"loss": 1.0 / e.state.iteration, "seg_dice": 0.5})
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: validator.run([0]))
    history = MetricsHistory(tmp_path, validator, title="t")
    history.attach(trainer)
    trainer.run([0, 1], max_epochs=2)
    history.set_result("test", {"metrics": {"slice2d_dice": float("nan")}})
    doc = json.loads((tmp_path / "metrics.json").read_text())
    assert [r["epoch"] for r in doc["train"]] == [1, 2] and doc["train"][0]["loss"] == 0.75
    assert doc["best_val"]["epoch"] == 2 and doc["results"]["test"]["metrics"]["slice2d_dice"] is None
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    other = MetricsHistory(tmp_path)
    other.load_state_dict(history.state_dict())
    assert other.train == history.train and other.val == history.val
