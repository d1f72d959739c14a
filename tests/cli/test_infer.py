"""``sam-mix infer``: outputs on the input grid, real DICOM, bad inputs, folders with bad cases, ranks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from sam_mix_monai.cli.main import main
from sam_mix_monai.data.io import check_same_grid, read_volume
from sam_mix_monai.networks import ModelConfig, build_model
from tests.inference.tiny_model import phantom, save_case, tiny_checkpoint


def _infer(*args: str) -> int:
    return main(["-q", "infer", *args, "--checkpoint", str(tiny_checkpoint()), "--no-progress"])


def _good_cases(folder: Path, n: int = 2) -> list[Path]:
    out = []
    for i, codes in enumerate(("LPS", "RAS")[:n]):
        c = phantom(i, codes)
        out.append(save_case(folder / f"case{i}.nii.gz", c.image, c.affine))
    return out


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_outputs_preview_and_summary(tmp_path: Path, capsys) -> None:
    (src,) = _good_cases(tmp_path / "in", 1)
    out = tmp_path / "out"
    assert _infer(str(src), "--output", str(out), "--preview", "--batch-size", "16") == 0
    assert _files(out) == ["case0_liver.json", "case0_liver.nii.gz", "case0_liver.png"]
    res, ref = nib.load(str(out / "case0_liver.nii.gz")), nib.load(str(src))
    assert res.shape == ref.shape and np.array_equal(res.affine, ref.affine)
    mask = np.asarray(res.dataobj)
    assert set(np.unique(mask)) <= {0, 1} and mask.sum() > 0
    s = json.loads((out / "case0_liver.json").read_text())
    voxel_ml = abs(np.linalg.det(ref.affine[:3, :3])) / 1000
    assert s["liver_volume_ml"] == pytest.approx(mask.sum() * voxel_ml, abs=0.01)
    assert s["slices"] == 40 and 0 < s["slices_with_liver"] < 40 and s["orientation"] == "LPS"
    assert 0.5 <= s["mean_classifier_confidence"] <= 1 and s["mean_predicted_iou"] is not None
    assert s["quality"] in ("ok", "check")
    assert "case0: liver" in capsys.readouterr().out


def test_real_dicom_end_to_end(tmp_path: Path, real_ct: Path) -> None:
    out = tmp_path / "out"
    assert _infer(str(real_ct / "dicom"), "--output", str(out)) == 0
    res = nib.load(str(out / "dicom_liver.nii.gz"))
    vol = read_volume(real_ct / "dicom")
    assert res.shape == tuple(vol.shape[1:]) == (512, 512, 20)
    np.testing.assert_allclose(res.affine, np.asarray(vol.affine), atol=1e-4)  # NIfTI stores float32
    # TotalSegmentator's own liver mask of this series lies on the same grid as ours.
    check_same_grid(read_volume(real_ct / "liver.nii.gz"), read_volume(out / "dicom_liver.nii.gz"), "ref", "ours")
    assert json.loads((out / "dicom_liver.json").read_text())["slices"] == 20


def _bad_input(kind: str, tmp_path: Path) -> Path:
    p = tmp_path / "in"
    p.mkdir(parents=True, exist_ok=True)
    if kind == "unreadable":
        f = p / "broken.nii.gz"
        f.write_bytes(b"\x1f\x8b\x08\x00garbage")
    elif kind == "2d":
        f = save_case(p / "flat.nii.gz", np.full((64, 64), -1000, np.int16), np.eye(4))
    elif kind == "mr":
        rng = np.random.default_rng(0)
        f = save_case(p / "mr.nii.gz", rng.integers(0, 1200, (32, 32, 20)).astype(np.int16), np.eye(4))
    else:
        raise ValueError(kind)
    return f


@pytest.mark.parametrize("kind, match", [("unreadable", "cannot read NIfTI"), ("2d", "3D"), ("mr", "CT")])
def test_bad_input_one_line_exit_2(tmp_path: Path, kind: str, match: str, capsys) -> None:
    f = _bad_input(kind, tmp_path)
    out = tmp_path / "out"
    assert _infer(str(f), "--output", str(out)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and match in err and str(f) in err
    assert _files(out) == []


def test_checkpoint_of_another_model(tmp_path: Path, capsys) -> None:
    (src,) = _good_cases(tmp_path / "in", 1)
    unet = ModelConfig(name="unet", size="compact")
    ckpt = tmp_path / "other.pt"
    torch.save({"model": build_model(unet).state_dict(),
                "model_config": ModelConfig(name="sam_mix", size="compact", image_size=64).model_dump()}, ckpt)
    out = tmp_path / "out"
    rc = main(["infer", str(src), "--checkpoint", str(ckpt), "--output", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "do not match the model" in err
    assert _files(out) == []


def test_unet_checkpoint(tmp_path: Path) -> None:
    (src,) = _good_cases(tmp_path / "in", 1)
    cfg = ModelConfig(name="unet", size="compact", image_size=64)
    ckpt = tmp_path / "unet.pt"
    torch.save({"network": build_model(cfg).state_dict(), "config": {"model": cfg.model_dump()}}, ckpt)
    out = tmp_path / "out"
    args = ["-q", "infer", str(src), "--checkpoint", str(ckpt), "--output", str(out), "--no-progress"]
    assert main(args) == 2  # a bare checkpoint records no slicing: the HU window is unknown, so refused
    assert main(args + ["--window", "40", "400"]) == 0
    s = json.loads((out / "case0_liver.json").read_text())
    assert s["mean_classifier_confidence"] is None and nib.load(str(out / "case0_liver.nii.gz")).shape == (96, 96, 40)


def test_output_not_writable(tmp_path: Path, capsys) -> None:
    (src,) = _good_cases(tmp_path / "in", 1)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert _infer(str(src), "--output", str(blocker / "out")) == 2
    assert "cannot create output folder" in capsys.readouterr().err
    if os.geteuid() != 0:  # root may write anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        assert _infer(str(src), "--output", str(ro)) == 2
        assert _files(ro) == []


def test_folder_with_bad_cases_runs_the_others(tmp_path: Path, capsys) -> None:
    _good_cases(tmp_path / "in", 2)
    _bad_input("unreadable", tmp_path)
    _bad_input("mr", tmp_path)
    out = tmp_path / "out"
    assert _infer(str(tmp_path / "in"), "--output", str(out)) == 2
    assert _files(out) == ["case0_liver.json", "case0_liver.nii.gz", "case1_liver.json", "case1_liver.nii.gz",
                           "statistics.csv"]
    rows = (out / "statistics.csv").read_text().splitlines()
    assert rows[0].startswith("case,volume_ml,hu_mean") and [r.split(",")[0] for r in rows[1:]] == ["case0", "case1"]
    cap = capsys.readouterr()
    assert "segmented 2 of 4 case(s)" in cap.out
    errors = cap.err.strip().splitlines()
    assert len(errors) == 2 and "broken.nii.gz" in errors[0] and "mr.nii.gz" in errors[1]


def test_ranks_split_the_cases(tmp_path: Path, monkeypatch, capsys) -> None:
    _good_cases(tmp_path / "in", 2)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    out = tmp_path / "out"
    assert _infer(str(tmp_path / "in"), "--output", str(out), "--device", "cpu") == 0
    assert _files(out) == ["case1_liver.json", "case1_liver.nii.gz", "statistics_rank1.csv"]
    assert "(rank 1 of 2)" in capsys.readouterr().out


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys

    torchrun = Path(sys.executable).with_name("torchrun")
    sam_mix = Path(sys.executable).with_name("sam-mix")
    if not torchrun.exists() or not sam_mix.exists() or shutil.which("true") is None:
        pytest.skip("torchrun / sam-mix entry points not installed")
    _good_cases(tmp_path / "in", 2)
    out = tmp_path / "out"
    res = subprocess.run([str(torchrun), "--nproc_per_node=2", "--no-python", str(sam_mix), "-q", "infer",
                          str(tmp_path / "in"), "--checkpoint", str(tiny_checkpoint()), "--output", str(out),
                          "--device", "cpu", "--no-progress"], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert _files(out) == ["case0_liver.json", "case0_liver.nii.gz", "case1_liver.json", "case1_liver.nii.gz",
                           "statistics_rank0.csv", "statistics_rank1.csv"]
    assert "(rank 0 of 2)" in res.stdout and "(rank 1 of 2)" in res.stdout


def test_flags_input_output_device_quiet_after_subcommand(tmp_path: Path, capsys) -> None:
    a, b = _good_cases(tmp_path / "in", 2)
    out = tmp_path / "out"
    rc = main(["infer", "-i", str(a), "-i", str(b), "-o", str(out), "-d", "cpu", "-q",
               "--checkpoint", str(tiny_checkpoint()), "--no-progress"])
    assert rc == 0 and {"case0_liver.nii.gz", "case1_liver.nii.gz", "statistics.csv"} <= set(_files(out))
    assert "segmented 2 of 2" in capsys.readouterr().out


@pytest.mark.parametrize("device, match", [("cuda:7", "cuda:7"), ("tpu", "expected auto, cpu, cuda, cuda:N or mps"),
                                           ("cuda:x", "expected auto")])
def test_bad_device_one_line(tmp_path: Path, device: str, match: str, capsys) -> None:
    (src,) = _good_cases(tmp_path / "in", 1)
    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    assert _infer(str(src), "-o", str(tmp_path / "out"), "-d", device) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and match in err
    assert _files(tmp_path / "out") == []


def test_skip_existing_probabilities_and_fast(tmp_path: Path, capsys) -> None:
    a, b = _good_cases(tmp_path / "in", 2)
    out = tmp_path / "out"
    assert _infer(str(a), "-o", str(out), "--save-probabilities", "--fast") == 0
    prob = nib.load(str(out / "case0_liver_probabilities.nii.gz"))
    mask = nib.load(str(out / "case0_liver.nii.gz"))
    assert prob.get_data_dtype() == np.uint16 and np.array_equal(prob.affine, mask.affine)
    p, m = prob.get_fdata(), np.asarray(mask.dataobj)  # scl_slope applied
    assert 0 <= p.min() and p.max() <= 1 and p[m == 1].mean() > 0.5 > p[m == 0].mean()
    before = (out / "case0_liver.nii.gz").stat().st_mtime_ns
    capsys.readouterr()
    assert _infer(str(tmp_path / "in"), "-o", str(out), "--skip-existing") == 0
    assert (out / "case0_liver.nii.gz").stat().st_mtime_ns == before  # not segmented again
    cap = capsys.readouterr().out
    assert "case0: skipped" in cap and "case1: liver" in cap
    rows = (out / "statistics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["case0", "case1"]  # the skipped case's row from its JSON


def test_no_input(tmp_path: Path, capsys) -> None:
    assert _infer("-o", str(tmp_path / "out")) == 2
    assert "no input" in capsys.readouterr().err


def test_help_constants_match_the_package() -> None:
    from sam_mix_monai.cli import infer
    from sam_mix_monai.inference.segmenter import FAST_BATCH_SIZE
    from sam_mix_monai.inference.settings import FAST_Z_STEP_MM
    from sam_mix_monai.transforms import DEFAULT_WINDOW

    assert infer.FAST_BATCH_SIZE == FAST_BATCH_SIZE and tuple(infer.DEFAULT_WINDOW) == tuple(DEFAULT_WINDOW)
    assert infer.FAST_Z_STEP_MM == FAST_Z_STEP_MM


def test_dicom_seg_output(tmp_path: Path, dcmqi_liver_seg: Path, capsys) -> None:
    from sam_mix_monai.data.dicom_seg import read_dicom_seg

    out = tmp_path / "out"
    assert _infer(str(dcmqi_liver_seg / "ct-3slice"), "-o", str(out), "-ot", "nifti,dicom_seg") == 0
    assert _files(out) == ["ct-3slice_liver.dcm", "ct-3slice_liver.json", "ct-3slice_liver.nii.gz"]
    seg, nii = read_dicom_seg(out / "ct-3slice_liver.dcm"), read_volume(out / "ct-3slice_liver.nii.gz")
    check_same_grid(nii, seg, "nifti", "seg")
    from tests.data.test_dicom_seg import _ras

    np.testing.assert_array_equal(_ras(seg), _ras(nii))
    # a NIfTI input has no DICOM UIDs: refused in one line, nothing written
    (src,) = _good_cases(tmp_path / "in", 1)
    capsys.readouterr()
    assert _infer(str(src), "-o", str(tmp_path / "out2"), "--output-type", "dicom_seg") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "needs a DICOM series input" in err and str(src) in err
    assert _files(tmp_path / "out2") == []
    with pytest.raises(SystemExit) as e:  # argparse: one error line (cli.main.OneLineParser)
        _infer(str(src), "-o", str(tmp_path / "out3"), "-ot", "rtstruct")
    assert e.value.code == 2 and "expected nifti, dicom_seg" in capsys.readouterr().err


def test_output_types_match_the_package() -> None:
    from sam_mix_monai.cli import infer
    from sam_mix_monai.inference.outputs import OUTPUT_TYPES

    assert infer._OUTPUT_TYPES == OUTPUT_TYPES


@pytest.mark.parametrize("box, match", [("0,0,0,95,95,40", "z range [0, 40] lies outside the volume"),
                                        ("0,0,30,95,95,10", "z1 = 30 > z2 = 10"),
                                        ("1,2,3", "six integers")])
def test_bad_box_one_line(tmp_path: Path, box: str, match: str, capsys) -> None:
    (src,) = _good_cases(tmp_path / "in", 1)
    assert _infer(str(src), "-o", str(tmp_path / "out"), "--box", box) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and match in err and str(src) in err
    assert _files(tmp_path / "out") == []


def test_box_replaces_the_cam_prompt(tmp_path: Path) -> None:
    c = phantom(0, "LPS")
    src = save_case(tmp_path / "in" / "case0.nii.gz", c.image, c.affine)
    out = tmp_path / "out"
    assert _infer(str(src), "-o", str(out), "--box", "20,20,10,75,75,30") == 0
    mask = np.asarray(nib.load(str(out / "case0_liver.nii.gz")).dataobj)
    assert mask.any() and not mask[:, :, :10].any() and not mask[:, :, 31:].any() and not mask[:19].any()
    s = json.loads((out / "case0_liver.json").read_text())
    assert s["mean_classifier_confidence"] is None  # no classifier ran: the box replaced the CAM prompt


def test_one_path_loads_the_model_only_for_a_case_to_segment(tmp_path: Path, monkeypatch, capsys) -> None:
    """Finished outputs and a bad input never wait for the model; a model that fails to load is one error, not one per case."""
    (src,) = _good_cases(tmp_path / "in", 1)
    out = tmp_path / "out"
    assert _infer(str(src), "-o", str(out)) == 0
    from sam_mix_monai.inference import segmenter

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(segmenter, "Segmenter", no_model)
    capsys.readouterr()
    assert _infer(str(src), "-o", str(out), "--skip-existing") == 0
    assert capsys.readouterr().out.strip() == f"case0: skipped, {out / 'case0_liver.nii.gz'} exists"
    bad = _bad_input("mr", tmp_path)
    assert _infer(str(bad), "-o", str(tmp_path / "out2")) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "CT" in err and str(bad) in err
    monkeypatch.undo()
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    _good_cases(tmp_path / "two", 2)
    rc = main(["-q", "infer", str(tmp_path / "two"), "-o", str(tmp_path / "out3"), "--checkpoint", str(broken),
               "--no-progress"])
    cap = capsys.readouterr()
    assert rc == 2 and cap.err.strip().count("\n") == 0 and str(broken) in cap.err and "segmented" not in cap.out
    assert _files(tmp_path / "out3") == []
