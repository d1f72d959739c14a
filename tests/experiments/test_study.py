"""The study: config validation (errors name the key), grid expansion, aggregation of run directories
(full and partial grids) into study.md / study.json / dice_vs_n.png, resume (done cells skipped)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import yaml

from sam_mix_monai.experiments import jobs, study as study_mod
from sam_mix_monai.experiments.study import aggregate, config_differences, run_study, select_cells
from sam_mix_monai.experiments.study_config import cell_config, expand_cells, load_study, validate_cells
from sam_mix_monai.experiments.table import parse_markdown_table, parse_mean_sd
from sam_mix_monai.utils.errors import InputError

BASE = {
    "name": "base",
    "model": {"name": "sam_mix", "size": "compact", "image_size": 64},
    "data": {"path": "data/none.h5", "n_labelled": 50},
    "train": {"epochs": 2, "iterations_per_epoch": 3, "progress": False},
    "evaluate": {"cross_domain": [{"name": "b", "path": "data/none_b.h5"}]},
}
MODELS = [
    {"label": "SAM-Mix", "set": {"model.name": "sam_mix"}, "n_labelled": [5, 50]},
    {"label": "U-Net", "set": {"model": {"name": "unet"}, "unlabelled.enabled": False}, "n_labelled": [5, 50]},
    {"label": "SAM-PP", "set": {"model.name": "sam_pp"}, "n_labelled": [0, 50]},
    {"label": "SAM-Mix-box", "title": "SAM-Mix-{n}, box only", "set": {"model.prompts": "box"}, "n_labelled": [50]},
]


def write_study(tmp_path: Path, **changes) -> Path:
    (tmp_path / "cfg").mkdir(exist_ok=True)
    (tmp_path / "cfg" / "base.yaml").write_text(yaml.safe_dump(BASE))
    raw = {"name": "test study", "base": "base.yaml", "models": MODELS, "seeds": [0, 1],
           "output": {"dir": str(tmp_path / "out")}, **changes}
    path = tmp_path / "cfg" / "study.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"workerz": 2}, "workerz: Extra inputs are not permitted"),
        ({"workers": 0}, "workers: Input should be greater than or equal to 1"),
        ({"models": [{"label": "A", "n_labelled": [-1]}]}, "models.0.n_labelled: Value error, labelled-slice counts"),
        ({"models": [{"label": "A"}, {"label": "B b"}]}, "models.1.label: String should match pattern"),
        ({"models": [{"label": "A"}, {"label": "A"}]}, "models: Value error, model label 'A' appears twice"),
        ({"models": [{"label": "A", "n_labelled": [5], "colour": 1}]}, "models.0.colour: Extra inputs are not permitted"),
        ({"seeds": [1, 1]}, "seeds: Value error, repeated seed"),
        ({"base": "nowhere.yaml"}, "base: experiment config not found"),
    ],
)
def test_bad_study_config_names_the_key(tmp_path, changes, expected):
    path = write_study(tmp_path, **changes)
    with pytest.raises(InputError) as e:
        load_study(path)
    assert e.value.path == str(path)
    assert e.value.problem.startswith(expected), e.value.problem


def test_bad_cell_config_names_the_cell_and_key(tmp_path):
    path = write_study(tmp_path, set={"train.lr": "fast"})
    study = load_study(path)
    with pytest.raises(InputError) as e:
        validate_cells(study, expand_cells(study))
    assert "cell SAM-Mix-5/seed0" in e.value.problem and "train.lr: Input should be a valid number" in e.value.problem
    with pytest.raises(InputError, match="expected key=value"):
        load_study(write_study(tmp_path), ["seeds"])


def test_grid_expansion_order_overrides_and_run_dirs(tmp_path):
    study = load_study(write_study(tmp_path))
    assert study.base_path == tmp_path / "cfg" / "base.yaml"  # relative to the study file
    cells = expand_cells(study)
    assert len(cells) == 7 * 2
    assert [c.name for c in cells[:7]] == ["SAM-Mix-5/seed0", "SAM-Mix-50/seed0", "U-Net-5/seed0", "U-Net-50/seed0",
                                           "SAM-PP-0/seed0", "SAM-PP-50/seed0", "SAM-Mix-box-50/seed0"]
    assert {c.seed for c in cells[7:]} == {1}  # seed by seed
    assert cells[6].row == "SAM-Mix-50, box only" and cells[0].row == "SAM-Mix-5"
    assert cells[9].run_dir == tmp_path / "out" / "runs" / "U-Net-5" / "seed1"
    cfgs = validate_cells(study, cells)
    unet = cfgs["U-Net-5/seed1"]
    assert (unet.model.name, unet.data.n_labelled, unet.train.seed, unet.data.label_seed) == ("unet", 5, 1, 1)
    assert unet.unlabelled.enabled is False and Path(unet.output.dir) == cells[9].run_dir
    pp0 = cfgs["SAM-PP-0/seed0"]
    assert (pp0.model.name, pp0.data.n_labelled, pp0.train.epochs) == ("sam_pp", 0, 0)  # evaluation only
    assert cfgs["SAM-PP-50/seed0"].train.epochs == 2
    assert cfgs["SAM-Mix-box-50/seed0"].model.prompts == "box"


def test_cli_overrides_go_to_the_study_or_to_every_cell(tmp_path):
    path = write_study(tmp_path, set={"train.lr": 0.01, "model.prompts": "mask"})
    study = load_study(path, ["seeds=[7]", "workers=3", "train.epochs=5", "model.checkpoint=/x/sam.pth"])
    assert study.seeds == [7] and study.workers == 3
    cells = expand_cells(study)
    cfg = cell_config(study, cells[0])
    assert (cfg.train.epochs, cfg.train.lr, cfg.model.checkpoint, cfg.train.seed) == (5, 0.01, "/x/sam.pth", 7)
    assert cfg.name == "SAM-Mix-5/seed7" and cfg.model.prompts == "mask"  # the study's set
    box = next(c for c in cells if c.model == "SAM-Mix-box")
    assert cell_config(study, box).model.prompts == "box"  # the model's set wins over the study's
    cli = load_study(path, ["model.prompts=box+mask"])
    box = next(c for c in expand_cells(cli) if c.model == "SAM-Mix-box")
    assert cell_config(cli, box).model.prompts == "box+mask"  # the command line wins over the model's set
    assert cell_config(study, next(c for c in cells if c.n_labelled == 0)).train.epochs == 0  # N = 0 stays eval-only
    assert [c.name for c in select_cells(cells, ["U-Net-*"])] == ["U-Net-5/seed7", "U-Net-50/seed7"]
    assert [c.name for c in select_cells(cells, ["SAM-Mix-50, box only"])] == ["SAM-Mix-box-50/seed7"]
    with pytest.raises(InputError, match="matches no cell"):
        select_cells(cells, ["nothing*"])


def _fake_results(dice: float, cls: bool = True) -> dict:
    m = {"slice2d_dice": dice, "slice2d_hd": 100 * (1 - dice), "volume3d_dice": dice + 0.01, "volume3d_hd95": 5.0}
    if cls:
        m.update(cls_accuracy=0.9, cls_f1=0.8, cls_auc=0.95, box_iou=dice - 0.1, box_iou50=0.75, box_centroid=0.5)
    cross = {k: (v - 0.2 if "dice" in k else v) for k, v in m.items()}
    return {"test": {"metrics": m}, "cross_domain:b": {"metrics": cross},
            "timing": {"train_seconds": 10.0 + dice, "total_seconds": 12.0}}


def _write_run(run_dir: Path, results: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.json").write_text(json.dumps({"train": [], "results": results}))


def test_aggregate_partial_grid_into_tables_json_and_plot(tmp_path):
    study = load_study(write_study(tmp_path))
    cells = expand_cells(study)
    dice = {"SAM-Mix-5": 0.80, "SAM-Mix-50": 0.90, "U-Net-5": 0.60, "SAM-PP-0": 0.10, "SAM-PP-50": 0.70}
    for c in cells:
        if c.row in dice and not (c.row == "SAM-Mix-50" and c.seed == 1):
            _write_run(c.run_dir, _fake_results(dice[c.row] + 0.02 * c.seed, cls=c.model.startswith("SAM-Mix")))
    (cells[3].run_dir).mkdir(parents=True)
    (cells[3].run_dir / "last.pt").write_bytes(b"x")  # U-Net-50/seed0: interrupted
    report = aggregate(study, cells)
    md = report.files["md"].read_text()
    rows = {r["model"]: r for r in parse_markdown_table(md)}  # the first table: slice2d
    assert list(rows) == ["SAM-Mix-5", "SAM-Mix-50", "U-Net-5", "U-Net-50", "SAM-PP-0", "SAM-PP-50", "SAM-Mix-50, box only"]
    m, sd = parse_mean_sd(rows["SAM-Mix-5"]["in-domain Dice"])
    assert m == pytest.approx(0.81) and sd == pytest.approx(0.0141, abs=1e-3)
    assert parse_mean_sd(rows["SAM-Mix-5"]["cross-domain Dice"])[0] == pytest.approx(0.61)
    assert rows["SAM-Mix-50"]["in-domain Dice"] == "0.900"  # one seed: no sd
    assert rows["U-Net-50"]["in-domain Dice"] == "-" and rows["SAM-Mix-50, box only"]["cross-domain HD (px)"] == "-"
    vol = parse_markdown_table(md.split("## Segmentation, volume3d")[1])
    assert parse_mean_sd(vol[0]["in-domain 3D Dice"])[0] == pytest.approx(0.82)
    cls_rows = {r["model"]: r for r in parse_markdown_table(md.split("## Liver-present classifier")[1])}
    assert "U-Net-5" not in cls_rows and cls_rows["SAM-Mix-5"]["in-domain AUC"] == "0.950 ± 0.000"
    box_rows = {r["model"]: r for r in parse_markdown_table(md.split("## Box prompt quality")[1])}
    assert "U-Net-5" not in box_rows and parse_mean_sd(box_rows["SAM-Mix-5"]["in-domain box IoU"])[0] == pytest.approx(0.71)
    assert box_rows["SAM-Mix-50"]["cross-domain centroid in box"] == "0.500"
    assert "U-Net-50/seed0 (partial)" in md and "SAM-Mix-50/seed1 (new)" in md
    assert "Synthetic data" not in md  # the base config has no phantom section
    paper = {r["model"]: r for r in parse_markdown_table(md.split("## The paper's table")[1])}
    assert paper["SAM-Mix-50"]["LiTS Dice"] == "0.948"
    png = report.files["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    doc = json.loads(report.files["json"].read_text())
    states = {c["cell"]: c["state"] for c in doc["cells"]}
    assert states["SAM-Mix-5/seed1"] == "done" and states["U-Net-50/seed0"] == "partial" and states["U-Net-50/seed1"] == "new"
    assert doc["summary"]["SAM-Mix-5"]["in/slice2d_dice"]["n"] == 2
    assert doc["summary"]["SAM-Mix-5"]["timing/train_seconds"]["mean"] == pytest.approx(10.81)
    assert doc["summary"]["U-Net-50"] == {}
    assert len(report.missing) == 14 - 9 and not report.failed


def test_aggregate_flags_runs_with_another_config(tmp_path):
    study = load_study(write_study(tmp_path))
    cells = expand_cells(study)
    cfg = cell_config(study, cells[0])
    _write_run(cells[0].run_dir, _fake_results(0.8))
    stored = cfg.model_dump(mode="json")
    stored["train"]["num_threads"] = 4  # ignored
    stored["output"]["overwrite"] = True  # ignored
    (cells[0].run_dir / "config.yaml").write_text(yaml.safe_dump(stored))
    assert config_differences(cfg, cells[0].run_dir) == []
    stored["train"]["epochs"] = 9
    (cells[0].run_dir / "config.yaml").write_text(yaml.safe_dump(stored))
    assert config_differences(cfg, cells[0].run_dir) == ["train.epochs"]
    del stored["loss"]["cam_mask"]  # a key added since the run, at its default: no difference
    (cells[0].run_dir / "config.yaml").write_text(yaml.safe_dump(stored))
    assert config_differences(cfg, cells[0].run_dir) == ["train.epochs"]
    stored["loss"]["cam_mask"] = 1.0
    (cells[0].run_dir / "config.yaml").write_text(yaml.safe_dump(stored))
    assert config_differences(cfg, cells[0].run_dir) == ["loss.cam_mask", "train.epochs"]
    stored["loss"]["cam_mask"] = 0.0
    (cells[0].run_dir / "config.yaml").write_text(yaml.safe_dump(stored))
    report = aggregate(study, cells)
    assert [o.cell.name for o in report.stale] == ["SAM-Mix-5/seed0"]
    assert "SAM-Mix-5/seed0 (train.epochs)" in report.files["md"].read_text()


FAKE_TRAIN = """
import json, sys
from pathlib import Path
run, log, fail = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
with open(log, "a") as fh:
    fh.write(str(run) + "\\n")
if fail:
    print("boom"); sys.exit(3)
run.mkdir(parents=True, exist_ok=True)
m = {"slice2d_dice": 0.5, "slice2d_hd": 9.0}
(run / "metrics.json").write_text(json.dumps({"results": {"test": {"metrics": m}, "timing": {"train_seconds": 1.0}}}))
"""


def test_run_study_runs_missing_cells_then_skips_done_ones(tmp_path, monkeypatch):
    """Real job runner, fake children (a few lines of Python instead of ``sam-mix train``)."""
    study = load_study(write_study(tmp_path, seeds=[0]))
    calls = tmp_path / "calls.txt"
    fail = {"value": "U-Net-50"}

    def fake_command(job, threads=1):
        return [sys.executable, "-c", FAKE_TRAIN, str(job.run_dir), str(calls), "1" if fail["value"] in job.name else "0"]

    monkeypatch.setattr(jobs, "train_command", fake_command)
    monkeypatch.setattr(study_mod, "_prepare_data", lambda *a: None)
    report = run_study(study, workers=2, stream=False, progress=False)
    assert [o.cell.name for o in report.failed] == ["U-Net-50/seed0"]
    assert {o.status for o in report.outcomes if o.cell.name != "U-Net-50/seed0"} == {"done"}
    assert len(calls.read_text().splitlines()) == 7
    md = report.files["md"].read_text()
    assert "Failed: U-Net-50/seed0 (log " in md
    assert parse_markdown_table(md)[0]["in-domain Dice"] == "0.500"
    fail["value"] = "nothing"
    again = run_study(study, workers=2, stream=False, progress=False)  # resume: only the failed cell runs
    assert len(calls.read_text().splitlines()) == 8
    assert [o.status for o in again.outcomes].count("skipped") == 6 and not again.failed and not again.missing
    only = run_study(study, only=["SAM-PP-*"], aggregate_only=True)
    assert len(calls.read_text().splitlines()) == 8 and only.files["md"].is_file()
    assert math.isclose(json.loads(only.files["json"].read_text())["summary"]["U-Net-50"]["in/slice2d_dice"]["mean"], 0.5)


def test_sam_pp_oracle_point_is_its_own_study_row(tmp_path):
    study = load_study(write_study(tmp_path))
    cells = expand_cells(study)
    for c in cells:
        res = _fake_results(0.7 + 0.02 * c.seed, cls=False)
        if c.row == "SAM-PP-50":
            res["test (oracle point)"] = {"metrics": {"slice2d_dice": 0.9}}
            res["cross_domain:b (oracle point)"] = {"metrics": {"slice2d_dice": 0.8}}
        _write_run(c.run_dir, res)
    rows = {r["model"]: r for r in parse_markdown_table(aggregate(study, cells).files["md"].read_text())}
    assert list(rows)[-1] == "SAM-PP-50, oracle point"
    assert parse_mean_sd(rows["SAM-PP-50, oracle point"]["in-domain Dice"])[0] == pytest.approx(0.9)
    assert parse_mean_sd(rows["SAM-PP-50"]["in-domain Dice"])[0] == pytest.approx(0.71)
