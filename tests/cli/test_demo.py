"""``sam-mix demo`` end to end on a tiny phantom, and its one-line errors."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import nibabel as nib

from sam_mix_monai.cli.main import main
from sam_mix_monai.experiments.figures import PNG_SIGNATURE
from sam_mix_monai.experiments.table import parse_mean_sd
from tests.experiments.test_demo import report_sections, section_table

ROOT = Path(__file__).resolve().parents[2]

# A tiny phantom (6 + 2 cases of 64 x 64 x 24) and a few iterations at 64 px: the whole demo in well under a minute.
# The compact SAM replaces the demo's LiteMedSAM (256 px only; its path is tested in tests/networks).
TINY = ["model.size=compact", "model.encoder_mode=auto", "train.precision=fp32", "phantom.cases_a=6", "phantom.cases_b=2", "phantom.matrix=64", "phantom.slices=24", "phantom.image_size=64",
        "phantom.split={train: 0.5, val: 0.17, test: 0.33}", "model.image_size=64", "data.n_labelled=12",
        "train.epochs=1", "train.iterations_per_epoch=2", "train.batch_size=4", "unlabelled.batch_size=4",
        "output.tensorboard=false"]
MODELS = ["SAM-Mix-50", "U-Net-50"]


def _demo_yaml(tmp_path: Path, real_ct: bool = True) -> Path:
    """configs/demo.yaml with absolute run configs and without the zero-shot LiteMedSAM rows (tested in
    tests/experiments/test_real_ct.py): the trained models still segment the real CT example."""
    import yaml

    raw = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    for run in raw["runs"]:
        run["config"] = str(ROOT / "configs" / run["config"])
    raw["real_ct_zero_shot"] = False
    raw["real_ct"] = real_ct
    path = tmp_path / f"demo_{real_ct}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _sets(phantom_root: Path) -> list[str]:
    return [a for kv in [f"phantom.root={phantom_root}", *TINY] for a in ("--set", kv)]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def _check_report(report: Path, real_ct: bool = True) -> dict[str, str]:
    text = report.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) >= 5, links  # overlays, CAM, infer preview, combined curves, per-run curves
    for rel in links:
        png = report.parent / rel
        assert png.is_file(), rel
        data = png.read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 5000, rel
    assert {"figures/predictions.png", "figures/cam_prompts.png", "figures/infer_preview.png",
            "figures/training_curves.png", *(["figures/real_ct.png"] if real_ct else [])} <= set(links)
    sections = report_sections(text)
    for title in ("Paper protocol", "Clinical protocol"):
        rows = section_table(sections, title)
        assert [r["model"] for r in rows] == MODELS
        for row in rows:
            cells = [v for k, v in row.items() if k != "model"]
            # slice2d also reports HD over predicted slices and missed slices per domain (issue 12)
            assert len(cells) == (8 if title == "Paper protocol" else 4), row
            assert all(math.isfinite(parse_mean_sd(c)[0]) for c in cells), row
    cls = section_table(sections, "Liver-present classifier")
    assert all(math.isfinite(parse_mean_sd(v)[0]) for k, v in cls[0].items() if k != "model")
    assert [r["model"] for r in section_table(sections, "Reference")][-2:] == ["SAM-Mix-50", "SAM-Mix-100"]
    assert "not comparable" in text.lower()
    if real_ct:
        real = section_table(sections, "Real CT")
        # SAM-Mix in both prompt modes (volume: the default; slice: the paper's), then the U-Net
        assert [r["model"] for r in real] == ["SAM-Mix-50, volume prompt", "SAM-Mix-50, slice prompts", "U-Net-50"], real
        assert all(0 <= float(r["3D Dice"]) <= 1 for r in real), real
    return sections


def test_demo_end_to_end_then_reuse(tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO)
    out = tmp_path / "demo"
    demo_yaml = _demo_yaml(tmp_path)
    assert main(["demo", "--out", str(out), "--config", str(demo_yaml), "--no-progress", *_sets(tmp_path / "phantom")]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().splitlines()[-1].startswith(f"report: {out / 'report.md'}")
    assert "[sam_mix_50] epoch 1/1" in captured.out and "[u_net_50] epoch 1/1" in captured.out  # streamed children
    steps = [m for m in caplog.messages if re.match(r"\[\d/6\]", m)]
    assert [s[:5] for s in steps] == [f"[{k}/6]" for k in range(1, 7)]
    sections = _check_report(out / "report.md")
    assert [r["status"] for r in section_table(sections, "Models")] == ["done", "done"]
    # the held-out volume went through the infer path: a mask on the input grid and a numeric 3D Dice
    infer = sections["Volume inference on a held-out case"]
    case = re.search(r"`(volume-\d+)`", infer).group(1)
    mask = nib.load(str(out / "infer" / f"{case}_liver.nii.gz"))
    image = nib.load(str(out / "infer" / "input" / f"{case}.nii"))
    assert mask.shape == image.shape
    assert re.search(r"3D Dice against `segmentation-\d+\.nii`: \d\.\d{3}", infer), infer
    assert (out / "infer" / f"{case}_liver.json").is_file()

    # A second run with the same settings reuses both trainings and rewrites the report (real CT off: it was just run).
    caplog.clear()
    assert main(["demo", "--out", str(out), "--config", str(_demo_yaml(tmp_path, real_ct=False)), "--no-progress",
                 "--no-stream", *_sets(tmp_path / "phantom")]) == 0
    sections = _check_report(out / "report.md", real_ct=False)
    assert "Not run (`real_ct: false`)" in sections["Real CT: the TotalSegmentator example"]
    assert [r["status"] for r in section_table(sections, "Models")] == ["skipped", "skipped"]
    assert "epoch 1/1" not in capsys.readouterr().out


def test_demo_errors_are_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["demo", "--out", str(blocker / "demo"), *_sets(tmp_path / "phantom")]) == 2
    assert re.match(r"sam-mix demo: error: .*demo: cannot create output folder", _error_line(capsys))
    assert main(["demo", "--out", str(tmp_path / "out"), "--set", "train.lr=fast"]) == 2
    assert "train.lr: Input should be a valid number" in _error_line(capsys)
    assert main(["demo", "--out", str(tmp_path / "out"), "--config", str(tmp_path / "none.yaml")]) == 2
    assert _error_line(capsys) == f"sam-mix demo: error: {tmp_path / 'none.yaml'}: demo config not found"
    assert not (tmp_path / "phantom").exists()  # nothing generated before the configs were checked
