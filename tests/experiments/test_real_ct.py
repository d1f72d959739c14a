"""The demo's real-CT table: the committed example, its reference on the CT grid, the rows and the report section."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from sam_mix_monai.data.io import read_volume
from sam_mix_monai.experiments.real_ct import RealCtOutcome, RealCtRow, example_ct, reference_on_grid, run_real_ct, score_masks
from sam_mix_monai.experiments.report import _real_ct_section
from sam_mix_monai.experiments.table import parse_markdown_table

ROOT = Path(__file__).resolve().parents[2]


def test_the_example_ships_and_its_reference_lands_on_the_liver():
    image, label = example_ct()
    assert image.is_relative_to(ROOT / "examples") and (image.parent / "NOTICE").is_file()
    assert "Apache License, Version 2.0" in (image.parent / "NOTICE").read_text()
    if (ROOT / ".git").exists() and shutil.which("git"):
        ignored = subprocess.run(["git", "check-ignore", "-q", str(label)], cwd=ROOT).returncode
        assert ignored == 1, ".gitignore drops the example's liver.nii.gz"
    ct = read_volume(image)
    ref = reference_on_grid(ct, label)
    assert ref.shape == tuple(ct.shape[1:]) and int(ref.sum()) == 366_708
    hu = np.asarray(ct.as_tensor()[0])
    assert 84 < hu[ref > 0].mean() < 94  # README: about 89 HU once on the CT's geometry
    # The header orientations differ (LAS vs LPS): comparing array indices instead would miss the liver.
    import nibabel as nib

    raw = np.asarray(nib.load(str(label)).dataobj) > 0
    assert hu[raw].mean() < hu[ref > 0].mean() - 15


def test_score_masks():
    ref = np.zeros((20, 20, 5), np.uint8)
    ref[5:15, 5:15, 1:4] = 1
    pred = ref.copy()
    pred[5:10] = 0
    dice, hd = score_masks(pred, ref, (1.0, 1.0, 2.0))
    assert dice == pytest.approx(2 * 150 / (150 + 300)) and hd == pytest.approx(5.0)
    dice, hd = score_masks(np.zeros_like(ref), ref, (1.0, 1.0, 1.0))
    assert dice == 0.0 and np.isnan(hd)


def test_a_trained_model_row_goes_through_the_infer_path(tmp_path):
    from tests.inference.tiny_model import tiny_checkpoint

    run = tmp_path / "run"
    run.mkdir()
    shutil.copyfile(tiny_checkpoint(), run / "best.pt")
    out = run_real_ct([("Tiny SAM-Mix", run), ("Missing", tmp_path / "none")], tmp_path / "demo", prompted=False)
    ok, missing = out.rows
    assert 0.0 <= ok.dice <= 1.0 and ok.quality in ("ok", "check") and ok.volume_ml is not None
    assert ok.prompt.startswith("automatic") and not ok.oracle
    assert missing.dice is None and "best.pt" in missing.error
    assert out.reference_ml == pytest.approx(366_708 * 0.9765625**2 * 2 / 1000, rel=1e-3) and out.slices == 20
    assert out.figure is not None and out.figure.read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "demo" / "real_ct" / "tiny_sam_mix").is_dir()
    rows = parse_markdown_table("\n".join(_real_ct_section(out)))
    assert [r["model"] for r in rows] == ["Tiny SAM-Mix", "Missing"]
    assert rows[0]["3D Dice"] == f"{ok.dice:.3f}" and rows[1]["3D Dice"].startswith("not run")


def test_report_section_marks_oracle_rows():
    rows = [RealCtRow("SAM-Mix-50", "automatic", 0.9, 8.0, 700.0, "check", ["liver volume 70 mL outside 300-5000 mL"], 3.0),
            RealCtRow("SAM, oracle box", "box", 0.95, 4.0, 710.0, oracle=True)]
    text = "\n".join(_real_ct_section(RealCtOutcome(Path("ct"), Path("liver.nii.gz"), 716.2, 20, rows)))
    table = parse_markdown_table(text)
    assert [r["model"] for r in table] == ["SAM-Mix-50", "SAM, oracle box (oracle prompt)"]
    assert table[0]["quality flag"].startswith("check (liver volume") and table[1]["quality flag"] == "-"
    assert "upper bound, never a result" in text and "716.2 mL" in text


def test_zero_shot_lite_medsam_rows_on_three_slices():
    """The oracle box with the packaged LiteMedSAM (0.973 on all 20 slices, measured) and SAM-PP-0's centre point."""
    import torch

    from sam_mix_monai.data.io import voxel_spacing
    from sam_mix_monai.experiments.real_ct import _prompted_rows

    image, label = example_ct()
    ct = read_volume(image)
    ref = reference_on_grid(ct, label)
    crop = ct[..., 9:12]  # 3 mid slices; the affine's orientation and spacing are all the rows use
    torch.set_num_threads(1)
    rows = _prompted_rows(crop, np.ascontiguousarray(ref[..., 9:12]), voxel_spacing(np.asarray(ct.affine)))
    (pp, pp_mask), (box, box_mask) = rows
    assert box.oracle and box.dice > 0.9 and box.quality is None
    assert not pp.oracle and 0.0 <= pp.dice <= 1.0 and pp.quality in ("ok", "check")
    assert box_mask.shape == pp_mask.shape == ref[..., 9:12].shape


@pytest.mark.parametrize("model, expected", [
    ({"prompts": "box", "box_refine": 1}, "CAM box prompt, box refined 1x from SAM's mask"),
    ({"prompts": "box", "box_refine": 1, "box_clip_body": True}, "CAM box prompt, cut to the body, box refined 1x from SAM's mask"),
    ({"prompts": "box+mask", "box_refine": 0}, "CAM box + mask prompt"),
    ({"prompts": "mask", "box_refine": 2}, "CAM mask prompt"),
])
def test_the_automatic_row_names_the_run_s_own_prompts(tmp_path, model, expected):
    import yaml

    from sam_mix_monai.experiments.real_ct import _cam_prompt_text

    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"model": model}), encoding="utf-8")
    assert _cam_prompt_text(tmp_path) == expected
