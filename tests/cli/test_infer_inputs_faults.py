"""``sam-mix infer`` round two (issue 22): flags, thin volumes, names that look like outputs,
``--skip-existing`` and long volumes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from sam_mix_monai.cli.main import main
from tests.faults import Snapshot, assert_clean_failure, leftovers
from tests.inference.tiny_model import phantom, save_case, tiny_checkpoint


def _infer(*args: str) -> int:
    return main(["-q", "infer", *args, "--checkpoint", str(tiny_checkpoint()), "--no-progress"])


def _case(folder: Path, name: str = "case0", cid: int = 0) -> Path:
    c = phantom(cid, "RAS")
    return save_case(folder / f"{name}.nii.gz", c.image, c.affine)


@pytest.mark.parametrize("box", ["1_4,2,3,20,30,10", "1,2,3,2_0,30,10", "0x4,2,3,20,30,10"])
def test_box_with_python_int_syntax_is_refused(tmp_path, capfd, box):
    src = _case(tmp_path / "in")
    inputs = Snapshot(tmp_path / "in")
    rc = _infer(str(src), "-o", str(tmp_path / "out"), "--box", box)
    assert_clean_failure(rc, capfd, [src, box], inputs, [tmp_path / "out"], "expected six integers")


@pytest.mark.parametrize("window, match", [(("nan", "400"), "finite"), (("40", "inf"), "finite"),
                                           (("40", "0"), "width must be positive"),
                                           (("40", "nan"), "finite")])
def test_window_must_be_finite_with_positive_width(tmp_path, capfd, window, match):
    src = _case(tmp_path / "in")
    inputs = Snapshot(tmp_path / "in")
    rc = _infer(str(src), "-o", str(tmp_path / "out"), "--window", *window)
    assert_clean_failure(rc, capfd, ["--window"], inputs, [tmp_path / "out"], match)


def test_convert_window_must_be_finite(tmp_path, capfd, lits_dir):
    inputs = Snapshot(lits_dir)
    rc = main(["-q", "convert", "--format", "lits", "--input", str(lits_dir), "--output", str(tmp_path / "o" / "s.h5"),
               "--window", "40", "inf", "--no-progress"])
    assert_clean_failure(rc, capfd, ["--window"], inputs, [tmp_path / "o"])


@pytest.mark.parametrize("shape", [(1, 64, 24), (64, 1, 24)])
def test_single_row_or_column_volume_is_refused(tmp_path, capfd, shape):
    src = save_case(tmp_path / "in" / "thin.nii.gz", np.full(shape, 40, np.int16) + np.arange(shape[2], dtype=np.int16) * 50,
                    np.diag([0.8, 0.8, 2.5, 1]))
    inputs = Snapshot(tmp_path / "in")
    rc = _infer(str(src), "-o", str(tmp_path / "out"))
    assert_clean_failure(rc, capfd, [src], inputs, [tmp_path / "out"], "single voxel along array axis")


def test_ct_named_like_an_output_is_segmented_and_skips_are_listed(tmp_path, capfd, caplog):
    _case(tmp_path / "in", "a")
    _case(tmp_path / "in", "b_liver", cid=1)  # a CT that happens to end in _liver: no b_liver.json beside it
    (tmp_path / "in" / "notes.txt").write_text("x")
    (tmp_path / "in" / "segmentation-0.nii").write_bytes(b"")
    with caplog.at_level(logging.INFO, logger="sam_mix_monai.inference.cases"):
        rc = main(["infer", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--checkpoint", str(tiny_checkpoint()),
                   "--no-progress"])
    assert rc == 0, capfd.readouterr().err
    assert {"a_liver.nii.gz", "b_liver_liver.nii.gz"} <= set(leftovers(tmp_path / "out"))
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert any("notes.txt: skipped, not a volume file" in m for m in skipped), skipped
    assert any("segmentation-0.nii: skipped, a LiTS label" in m for m in skipped), skipped


def test_infer_output_folder_as_input_skips_its_outputs_by_name(tmp_path, caplog):
    from sam_mix_monai.inference.cases import find_cases

    _case(tmp_path / "in", "a")
    (tmp_path / "in" / "a_liver.nii.gz").write_bytes(b"")
    (tmp_path / "in" / "a_liver.json").write_text("{}")
    with caplog.at_level(logging.INFO, logger="sam_mix_monai.inference.cases"):
        assert [c.name for c in find_cases([tmp_path / "in"])] == ["a"]
    assert any("a_liver.nii.gz: skipped, an output of sam-mix infer" in r.getMessage() for r in caplog.records)


def _complete_run(tmp_path: Path) -> tuple[Path, Path]:
    src = _case(tmp_path / "in")
    _case(tmp_path / "in", "case1", cid=1)
    assert _infer(str(tmp_path / "in"), "-o", str(tmp_path / "out")) == 0
    return src, tmp_path / "out"


def test_skip_existing_redoes_a_mask_without_its_json(tmp_path, capfd):
    _, out = _complete_run(tmp_path)
    (out / "case0_liver.json").unlink()
    (out / "case0_liver.nii.gz").write_bytes(b"half-written")
    capfd.readouterr()
    rc = _infer(str(tmp_path / "in"), "-o", str(out), "--skip-existing")
    text = capfd.readouterr().out
    assert rc == 0 and "case1: skipped" in text and "case0: skipped" not in text, text
    assert (out / "case0_liver.json").is_file()
    import nibabel as nib

    assert nib.load(str(out / "case0_liver.nii.gz")).shape == phantom(0, "RAS").image.shape


def test_skip_existing_redoes_a_json_that_does_not_match_its_mask(tmp_path, capfd, caplog):
    _, out = _complete_run(tmp_path)
    summary = json.loads((out / "case0_liver.json").read_text())
    true_volume = summary["liver_volume_ml"]
    summary["liver_volume_ml"] += 100.0
    (out / "case0_liver.json").write_text(json.dumps(summary))
    capfd.readouterr()
    rc = _infer(str(tmp_path / "in" / "case0.nii.gz"), "-o", str(out), "--skip-existing")
    res = capfd.readouterr()
    assert rc == 0, res
    assert "case0: skipped" not in res.out, res.out
    assert "do not agree" in caplog.text, caplog.text
    assert json.loads((out / "case0_liver.json").read_text())["liver_volume_ml"] == true_volume  # redone from the mask


def test_skip_existing_redoes_a_case_missing_its_preview(tmp_path, capfd):
    _, out = _complete_run(tmp_path)
    capfd.readouterr()
    rc = _infer(str(tmp_path / "in" / "case0.nii.gz"), "-o", str(out), "--skip-existing", "--preview")
    assert rc == 0 and (out / "case0_liver.png").is_file()
    rc = _infer(str(tmp_path / "in" / "case0.nii.gz"), "-o", str(out), "--skip-existing", "--preview")
    assert rc == 0 and "case0: skipped" in capfd.readouterr().out


def test_long_volume_warns_with_an_estimate(tmp_path, capfd, monkeypatch, caplog):
    from sam_mix_monai.inference import progress

    monkeypatch.setattr(progress, "LONG_VOLUME_SLICES", 5)
    src = _case(tmp_path / "in")
    rc = _infer(str(src), "-o", str(tmp_path / "out"))
    err = caplog.text
    assert rc == 0 and "slices (more than 5): about" in err and str(src) in err, err
    assert "remaining" in progress._FORMAT
