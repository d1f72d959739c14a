"""The demo's config, planning and report rendering (fast; the end-to-end run is in tests/cli/test_demo.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from sam_mix_monai.experiments.demo import _plan, _stale, _with_warm_cache
from sam_mix_monai.experiments.demo_config import load_demo_config
from tests.experiments.test_demo_config import write_demo_yaml
from sam_mix_monai.experiments.report import DemoSummary, InferenceOutcome, ModelRun, render_report
from sam_mix_monai.experiments.table import PAPER_RESULTS, parse_markdown_table, parse_mean_sd
from sam_mix_monai.utils.errors import InputError

ROOT = Path(__file__).resolve().parents[2]


def report_sections(text: str) -> dict[str, str]:
    """Markdown sections by heading (``## x`` / ``### y``), each with the text up to the next heading."""
    out, head, buf = {}, None, []
    for line in text.splitlines():
        if line.startswith("#"):
            if head is not None:
                out[head] = "\n".join(buf)
            head, buf = line.lstrip("#").strip(), []
        else:
            buf.append(line)
    if head is not None:
        out[head] = "\n".join(buf)
    return out


def section_table(sections: dict[str, str], starts: str) -> list[dict[str, str]]:
    key = next(k for k in sections if k.startswith(starts))
    return parse_markdown_table(sections[key])


def _run_cfg(tmp_path: Path, name: str, phantom_seed: int | None = 0) -> Path:
    raw = yaml.safe_load((ROOT / "configs" / "phantom_demo_unet.yaml").read_text())
    if phantom_seed is None:
        raw.pop("phantom")
    else:
        raw["phantom"]["seed"] = phantom_seed
        raw["phantom"]["root"] = str(tmp_path / "phantom")
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_plan_checks_data_and_points_runs_at_the_demo_data(tmp_path):
    from sam_mix_monai.engines.config import dump_config

    out = tmp_path / "out"
    a, b = _run_cfg(tmp_path, "a"), _run_cfg(tmp_path, "b")
    demo_path = write_demo_yaml(tmp_path, [{"label": "Model A", "config": a.name}, {"label": "B", "config": str(b)}])
    plans = _plan(load_demo_config(demo_path), demo_path, out, ["train.epochs=3"])
    (_, cfg, job), (_, _, job_b) = plans
    assert job.name == "model_a" and job.run_dir == (out / "runs" / "model_a").resolve()
    assert cfg.train.epochs == 3 and cfg.data.path == (tmp_path / "phantom" / "phantom_a.h5").resolve()
    assert [(c.name, c.path) for c in cfg.evaluate.cross_domain] == [("phantom_b", (tmp_path / "phantom" / "phantom_b.h5").resolve())]
    assert "train.epochs=3" in job.overrides and job_b.config == b.resolve()
    # A complete run of the same settings is kept (the job skips it); other settings start afresh.
    job.run_dir.mkdir(parents=True)
    (job.run_dir / "metrics.json").write_text('{"results": {"test": {}}}')
    (job.run_dir / "config.yaml").write_text(dump_config(cfg))
    assert not _stale(job.run_dir, cfg)
    _plan(load_demo_config(demo_path), demo_path, out, ["train.epochs=3"])
    assert job.run_dir.is_dir()
    _plan(load_demo_config(demo_path), demo_path, out, ["train.epochs=4"])
    assert not job.run_dir.exists()

    c = _run_cfg(tmp_path, "c", phantom_seed=1)
    bad = write_demo_yaml(tmp_path, [{"label": "A", "config": a.name}, {"label": "C", "config": c.name}], "bad")
    with pytest.raises(InputError, match="phantom: differs"):
        _plan(load_demo_config(bad), bad, out, [])
    d = _run_cfg(tmp_path, "d", phantom_seed=None)
    bad = write_demo_yaml(tmp_path, [{"label": "D", "config": d.name}], "bad")
    with pytest.raises(InputError, match="needs a phantom: section"):
        _plan(load_demo_config(bad), bad, out, [])
    bad = write_demo_yaml(tmp_path, [{"label": "A", "config": a.name}, {"label": "a", "config": a.name}], "bad")
    with pytest.raises(InputError, match="labels must be distinct"):
        _plan(load_demo_config(bad), bad, out, [])
    with pytest.raises(InputError, match="train.lr: Input should be a valid number"):
        _plan(load_demo_config(demo_path), demo_path, out, ["train.lr=fast"])


def test_the_unet_worker_warms_sam_mix_embedding_cache_before_its_training(tmp_path):
    sam = tmp_path / "sam.yaml"
    raw = yaml.safe_load((ROOT / "configs" / "phantom_demo.yaml").read_text())
    raw["phantom"]["root"] = str(tmp_path / "phantom")
    sam.write_text(yaml.safe_dump(raw))
    unet = _run_cfg(tmp_path, "unet")
    runs = [{"label": "SAM-Mix-50", "config": sam.name}, {"label": "U-Net-50", "config": unet.name}]
    path = write_demo_yaml(tmp_path, runs, infer_model="SAM-Mix-50", threads=1)
    demo = load_demo_config(path)
    plans = _with_warm_cache(_plan(demo, path, tmp_path / "out", []), demo.infer_model, demo.threads)
    (_, sam_cfg, sam_job), (_, _, unet_job) = plans
    cache = (tmp_path / "phantom" / "embedding_cache").resolve()
    assert sam_cfg.model.embedding_cache_dir == str(cache) and sam_job.prelude == ()
    cmd = list(unet_job.prelude)
    assert cmd[1:3] == ["-m", "sam_mix_monai.engines.warm_cache"] and cmd[cmd.index("--config") + 1] == str(sam_job.config)
    assert f"model.embedding_cache_dir={cache}" in cmd and "train.num_threads=1" in cmd
    assert cmd[cmd.index("--unless-done") + 1] == str(sam_job.run_dir)
    # Switched off: no cache folder, no follow-up.
    off = write_demo_yaml(tmp_path, runs, "off", infer_model="SAM-Mix-50", warm_cache=False)
    (_, cfg, job), (_, _, other) = _plan(load_demo_config(off), off, tmp_path / "out2", [])
    assert cfg.model.embedding_cache_dir is None and job.prelude == other.prelude == ()


def _metrics(dice: float, cls: bool) -> dict:
    m = {"slice2d_dice": dice, "slice2d_hd": 10.0, "slice2d_hd_predicted": 8.0, "slice2d_missed": 2.0,
         "volume3d_dice": dice + 0.01, "volume3d_hd95": 5.0}
    if cls:
        m.update(cls_accuracy=0.9, cls_f1=0.8, cls_auc=0.95)
    cross = {k: v * 0.5 for k, v in m.items()}
    return {"train": [{"epoch": 1, "loss": 1.0}], "val": [{"epoch": 1, "slice2d_dice": dice}],
            "best_val": {"epoch": 1, "slice2d_dice": dice},
            "results": {"test": {"metrics": m}, "cross_domain:phantom_b": {"metrics": cross},
                        "timing": {"train_seconds": 12.0}}}


def test_render_report_tables_parse(tmp_path):
    runs = [ModelRun("SAM-Mix-50", "sam", 50, "done", 30.0, tmp_path / "a", tmp_path / "a.log", _metrics(0.9, True), 14, 40),
            ModelRun("U-Net-50", "unet", 50, "skipped", 0.0, tmp_path / "b", tmp_path / "b.log", _metrics(0.8, False), 12, 20),
            ModelRun("Broken", "x", 5, "failed", 3.0, tmp_path / "c", tmp_path / "c.log", None, 1, 1)]
    inf = InferenceOutcome("SAM-Mix-50", "volume-1", tmp_path / "v.nii", tmp_path / "s.nii", tmp_path / "m.nii.gz",
                           {"liver_volume_ml": 1500.0, "slices_with_liver": 30, "slices": 48, "quality": "ok"},
                           0.91, 7.5, 0.9, 2.0)
    summary = DemoSummary(tmp_path, ["phantom"], runs, inference=inf, figures=[("Overlays", "figures/o.png")],
                          timings={"total": 100.0}, notes=["Broken: training failed"])
    text = render_report(summary)
    sections = report_sections(text)
    s2d = section_table(sections, "Paper protocol")
    assert [r["model"] for r in s2d] == ["SAM-Mix-50", "U-Net-50"]  # the failed run has no row
    assert parse_mean_sd(s2d[0]["in-domain Dice"]) == (0.9, None)
    assert parse_mean_sd(s2d[1]["cross-domain HD (px)"]) == (5.0, None)
    v3d = section_table(sections, "Clinical protocol")
    assert parse_mean_sd(v3d[1]["in-domain 3D Dice"])[0] == pytest.approx(0.81)
    cls = section_table(sections, "Liver-present classifier")
    assert cls[0]["in-domain AUC"] == "0.950" and cls[1]["in-domain AUC"] == "-"
    models = section_table(sections, "Models")
    assert [m["status"] for m in models] == ["done", "skipped", "failed"]
    paper = section_table(sections, "Reference")
    assert {r["model"]: parse_mean_sd(r["LiTS Dice"])[0] for r in paper} == {k: v[0] for k, v in PAPER_RESULTS.items()}
    assert "not comparable" in sections["Reference: the paper's table (LiTS in-domain, TotalSegmentator cross-domain)"]
    assert "0.910" in sections["Volume inference on a held-out case"]
    assert "![Overlays](figures/o.png)" in text and "> Broken: training failed" in text
    assert not any(math.isnan(parse_mean_sd(r[k])[0]) for r in s2d for k in r if k != "model")
