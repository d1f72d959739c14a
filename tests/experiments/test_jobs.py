"""Training jobs in child processes: run, skip when done, continue when partial, failures isolated."""

from __future__ import annotations

import json

from sam_mix_monai.experiments.jobs import TrainJob, job_state, run_training_jobs, train_command
from tests.engines.conftest import tiny_config, tiny_phantom, write_config  # noqa: F401 (fixture)


def test_job_state_and_command(tmp_path):
    run = tmp_path / "run"
    job = TrainJob("a", tmp_path / "c.yaml", run, ("train.lr=0.1",))
    assert job_state(run) == "new"
    cmd = train_command(job, threads=3)
    assert "--config" in cmd and f"output.dir={run}" in cmd and "train.lr=0.1" in cmd and "train.num_threads=3" in cmd
    run.mkdir()
    (run / "last.pt").write_bytes(b"x")
    assert job_state(run) == "partial"
    cmd = train_command(job)
    assert cmd[cmd.index("--resume") + 1] == str(run) and "--config" not in cmd
    (run / "metrics.json").write_text(json.dumps({"results": {"test": {"metrics": {}}}}))
    assert job_state(run) == "done"


def test_jobs_run_in_parallel_skip_when_done_and_isolate_failures(tmp_path, tiny_phantom, capsys):
    store_a, store_b = tiny_phantom
    cfg = write_config(tmp_path / "tiny.yaml", tiny_config(store_a, tmp_path / "unused", cross=store_b,
                                                           train={"epochs": 1, "iterations_per_epoch": 2}))
    good = [TrainJob(f"m{k}", cfg, tmp_path / "runs" / f"m{k}", (f"train.seed={k}",)) for k in range(2)]
    bad = TrainJob("bad", cfg, tmp_path / "runs" / "bad", ("data.n_labelled=100000",))
    res = run_training_jobs([*good, bad], workers=2, progress=False)
    assert [r.status for r in res] == ["done", "done", "failed"]
    assert res[2].returncode == 2 and res[2].results is None
    assert "n_labelled" in res[2].log.read_text()
    for r in res[:2]:
        assert 0.0 <= r.results["test"]["metrics"]["slice2d_dice"] <= 1.0
        assert "cross_domain:b" in r.results
    out = capsys.readouterr().out
    assert "[m0]" in out and "[m1]" in out  # streamed, prefixed child output
    again = run_training_jobs(good, workers=2, progress=False, stream=False)
    assert [r.status for r in again] == ["skipped", "skipped"] and again[0].results == res[0].results


def test_a_prelude_runs_in_the_jobs_worker_first_and_its_failure_is_not_the_jobs(tmp_path, capsys):
    import sys

    run = tmp_path / "done"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"results": {"test": {"metrics": {}}}}))
    ok = TrainJob("a", tmp_path / "c.yaml", run, prelude=(sys.executable, "-c", "print('warmed the cache')"))
    bad = TrainJob("b", tmp_path / "c.yaml", run, prelude=(sys.executable, "-c", "import sys; sys.exit(3)"))
    res = run_training_jobs([ok, bad], workers=1, progress=False)
    assert [r.status for r in res] == ["skipped", "skipped"]  # the training's outcome stands
    assert "warmed the cache" in res[0].log.read_text()
    assert "[a] warmed the cache" in capsys.readouterr().out
