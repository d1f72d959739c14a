"""Training benchmark (``make bench-train``): compact SAM-Mix on CPU.

Runs SAM-Mix-50 (compact, the demo's settings: 128-pixel network input, 256-pixel phantom slices,
labelled + unlabelled step) for a few iterations and reports

* training throughput: labelled slices/s and all slices/s (labelled + unlabelled);
* the share of step time spent waiting for data: the labelled batch (Ignite's ``GET_BATCH``
  events, :class:`ignite.handlers.BasicTimeProfiler`) plus the unlabelled batch (fetched inside
  the iteration, timed by the trainer). Goal: at most 10 %.

Uses the demo's phantom store (``data/phantom/phantom_a.h5``) when it exists, else generates a
small one in a temporary folder. Writes ``runs/bench/bench_train.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from ignite.engine import Events
from ignite.handlers import BasicTimeProfiler

from sam_mix_monai.engines.config import PhantomDataConfig, load_config
from sam_mix_monai.engines.phantom_data import ensure_phantom_data
from sam_mix_monai.engines.run import build_training
from _meta import run_meta  # noqa: E402 (benchmarks/ is on sys.path when run as a script)

ROOT = Path(__file__).resolve().parents[1]


def bench(store: Path, run_dir: Path, iterations: int, workers: int, threads: int) -> dict:
    """Time ``iterations`` training iterations (after 2 warm-up iterations)."""
    torch.set_num_threads(threads)
    cfg = load_config(ROOT / "configs" / "phantom_demo.yaml", [
        # the dataflow benchmark keeps the compact SAM at 128 px (the demo's LiteMedSAM is timed per encoder mode
        # in bench_encoder_modes): its short steps show the data wait share most clearly
        "model.size=compact", "model.image_size=128", "model.encoder_mode=auto", "train.precision=fp32",
        "augment.labelled=true",
        # the demo's LiteMedSAM config trains only the prompt path (segmentation weights 0); this benchmark times
        # the full SAM-Mix step (labelled SAM forward + unlabelled step), as the paper trains it
        "model.prompts=box+mask", "model.box_refine=0", "loss.seg_dice=1.0", "loss.seg_bce=1.0", "loss.iou=1.0",
        "unlabelled.batch_size=4", "train.batch_size=8",
        f"data.path={store}", f"data.num_workers={workers}", f"train.num_threads={threads}",
        f"train.iterations_per_epoch={iterations + 2}", "train.epochs=1", "train.progress=false",
        "data.val_split=null", "output.tensorboard=false", f"output.dir={run_dir}", "evaluate.cross_domain=[]",
    ])
    job = build_training(cfg, run_dir)
    trainer = job.trainer
    profiler = BasicTimeProfiler()
    profiler.attach(trainer)
    marks: dict[str, float] = {}

    @trainer.on(Events.ITERATION_COMPLETED(once=2))
    def _start(engine) -> None:  # after warm-up
        marks["t0"], marks["unl0"] = time.perf_counter(), trainer.unlabelled_wait

    @trainer.on(Events.GET_BATCH_STARTED)
    def _get_started(engine) -> None:
        marks["g"] = time.perf_counter()

    @trainer.on(Events.GET_BATCH_COMPLETED)
    def _get_done(engine) -> None:
        if "t0" in marks:
            marks["labelled_wait"] = marks.get("labelled_wait", 0.0) + time.perf_counter() - marks["g"]

    @trainer.on(Events.ITERATION_COMPLETED(once=iterations + 2))
    def _stop(engine) -> None:
        marks["t1"], marks["unl1"] = time.perf_counter(), trainer.unlabelled_wait

    trainer.run()
    seconds = marks["t1"] - marks["t0"]
    lab_wait = marks.get("labelled_wait", 0.0)
    unl_wait = marks["unl1"] - marks["unl0"]
    lab_bs, unl_bs = cfg.train.batch_size, cfg.unlabelled.batch_size
    dataflow = profiler.get_results()["dataflow_stats"]
    return {
        "model": f"SAM-Mix {cfg.model.size}, {cfg.model.image_size} px input, batch {lab_bs} labelled + {unl_bs} unlabelled",
        "iterations": iterations,
        "data_workers": workers,
        "threads": threads,
        "seconds_per_iteration": seconds / iterations,
        "labelled_slices_per_s": lab_bs * iterations / seconds,
        "all_slices_per_s": (lab_bs + unl_bs) * iterations / seconds,
        "data_wait_share": (lab_wait + unl_wait) / seconds,
        "labelled_wait_s": lab_wait,
        "unlabelled_wait_s": unl_wait,
        "ignite_dataflow_mean_s": float(dataflow["mean"]) if dataflow else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=12)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core machine)")
    p.add_argument("--out", default=str(ROOT / "runs" / "bench" / "bench_train.json"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = ROOT / "data" / "phantom" / "phantom_a.h5"
        if not store.is_file():
            store, _ = ensure_phantom_data(PhantomDataConfig(root=Path(tmp) / "phantom", cases_a=6, cases_b=1),
                                           progress=False)
        results = {"meta": run_meta(args.threads),
                   "runs": [bench(store, Path(tmp) / f"run{w}", args.iterations, w, args.threads) for w in (0, 1)]}
    for r in results["runs"]:
        print(f"compact SAM-Mix, CPU, {r['threads']} thread(s), {r['data_workers']} data worker(s): "
              f"{r['labelled_slices_per_s']:.1f} labelled slices/s ({r['all_slices_per_s']:.1f} slices/s with the "
              f"unlabelled step), {r['seconds_per_iteration']:.3f} s/iteration, data wait {100 * r['data_wait_share']:.1f}% "
              f"of step time")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
