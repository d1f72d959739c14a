"""``sam-mix evaluate --protocol volume3d``: a volume-mode SAM-Mix scored by the infer path; ``--prompt-mode slice``."""

from __future__ import annotations

import json

import pytest

from sam_mix_monai.cli.main import main
from sam_mix_monai.engines.evaluate import evaluate_checkpoint
from tests.faults import Snapshot, assert_clean_failure
from tests.inference.tiny_model import case_store, tiny_checkpoint


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return case_store(tmp_path_factory.mktemp("store"), "all", case_ids=(5, 6))[0]


def _evaluate(tmp_path, store, *extra) -> tuple[int, dict]:
    out = tmp_path / "eval.json"
    rc = main(["-q", "evaluate", "--checkpoint", str(tiny_checkpoint()), "--data", str(store), "--protocol", "volume3d",
               "--device", "cpu", "--output", str(out), *extra])
    return rc, json.loads(out.read_text())


def test_volume3d_by_prompt_mode(tmp_path, store, capsys):
    rc, res = _evaluate(tmp_path, store)
    printed = capsys.readouterr().out
    assert rc == 0 and res["volume3d_prompt_mode"] == "volume"  # the tiny SAM-Mix's model.prompt_mode
    assert "test: volume3d scored in volume prompt mode (the sam-mix infer volume path)" in printed
    assert [r["case_id"] for r in res["volume3d_cases"]] == ["5", "6"]
    assert {"case_id", "slices", "dice", "hd95_mm"} <= set(res["volume3d_cases"][0])
    assert f"Dice {res['volume3d_cases'][0]['dice']:.4f}" in printed and "3D Dice" in printed
    # --prompt-mode slice: the former protocol, the same numbers to the last bit
    rc, sliced = _evaluate(tmp_path, store, "--prompt-mode", "slice")
    former = evaluate_checkpoint(tiny_checkpoint(), store, ["volume3d"], "test", "cpu")
    assert rc == 0 and sliced["volume3d_prompt_mode"] == "slice"
    assert sliced["metrics"] == former["metrics"] and sliced["volume3d_cases"] == former["volume3d_cases"]
    assert "volume3d scored in slice prompt mode" in capsys.readouterr().out
    assert sliced["metrics"]["volume3d_dice"] != res["metrics"]["volume3d_dice"]


def test_volume3d_refused_on_a_slab_store(tmp_path, capfd):
    slab, _ = case_store(tmp_path / "data", 0.5)
    inputs = Snapshot(tmp_path / "data")
    out = tmp_path / "out" / "eval.json"
    rc = main(["-q", "evaluate", "--checkpoint", str(tiny_checkpoint()), "--data", str(slab), "--protocol", "volume3d",
               "--device", "cpu", "--output", str(out)])
    assert_clean_failure(rc, capfd, [slab], inputs, [out.parent], "keep_rate 0.5")
    rc = main(["-q", "evaluate", "--zero-shot", "oracle_box", "--data", str(slab), "--prompt-mode", "slice"])
    assert_clean_failure(rc, capfd, [], inputs, [], "--prompt-mode")
