"""``sam-mix infer`` under bad input and faults: one line naming the file, exit 2, nothing left, inputs unchanged.

Full disk: a real 1 MB tmpfs where the machine allows ``mount`` (root), and always a monkeypatched
writer raising ``ENOSPC`` / ``EROFS``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sam_mix_monai.cli.main import main
from tests.faults import (Snapshot, assert_clean_failure, enospc, erofs, error_line, leftovers, nifti_with_header,
                          small_disk, write_dicom_series)  # noqa: F401 (fixture)
from tests.inference.tiny_model import phantom, save_case, tiny_checkpoint

OUTS = ["case0_liver.json", "case0_liver.nii.gz"]


def _infer(*args: str, ckpt: Path | None = None, debug: bool = False) -> int:
    return main([*(["--debug"] if debug else []), "-q", "infer", *args, "--checkpoint", str(ckpt or tiny_checkpoint()),
                 "--no-progress"])


def _case(folder: Path, name: str = "case0", cid: int = 0, edit=None) -> Path:
    c = phantom(cid, "RAS")
    return nifti_with_header(folder / f"{name}.nii.gz", c.image, c.affine, edit)


def _zero_z(h) -> None:
    h["srow_z"][2] = 0


def _all_zero(h) -> None:
    for row in ("srow_x", "srow_y", "srow_z"):
        h[row][:] = 0


def _nan(h) -> None:
    h["srow_x"][0] = np.nan


def _rank2(h) -> None:  # the third voxel axis repeats the first
    for row in ("srow_x", "srow_y", "srow_z"):
        h[row][2] = h[row][0]


@pytest.mark.parametrize("edit, match", [(_zero_z, "zero voxel spacing along array axis 2"),
                                         (_all_zero, "zero voxel spacing along array axis 0"),
                                         (_nan, "NaN or infinite"), (_rank2, "do not span 3D space")])
def test_bad_geometry(tmp_path, capfd, edit, match):
    src = _case(tmp_path / "in", edit=edit)
    inputs = Snapshot(tmp_path / "in")
    rc = _infer(str(src), "--output", str(tmp_path / "out"))
    assert_clean_failure(rc, capfd, [src], inputs, [tmp_path / "out"], match)
    assert not (tmp_path / "out").exists()  # the folder this run created is gone again


def _constant(folder: Path) -> Path:
    return save_case(folder / "blank.nii.gz", np.full((32, 32, 12), -1000, np.int16), np.diag([1.0, 1, 2.5, 1]))


def _truncated_nii(folder: Path) -> Path:
    src = _case(folder, "trunc")
    raw = folder / "trunc.nii"
    import nibabel as nib

    nib.save(nib.load(str(src)), str(raw))
    src.unlink()
    raw.write_bytes(raw.read_bytes()[: raw.stat().st_size // 2])
    return raw


def test_constant_image_and_truncated_nifti(tmp_path, capfd):
    for make, match in ((_constant, "blank or constant image"), (_truncated_nii, "corrupt or truncated")):
        folder = tmp_path / make.__name__
        src = make(folder)
        inputs = Snapshot(folder)
        rc = _infer(str(src), "--output", str(tmp_path / "out"))
        assert_clean_failure(rc, capfd, [src], inputs, [tmp_path / "out"], match)


def _dicom(kind: str, root: Path) -> tuple[Path, Path | None, str]:
    folder = root / kind
    if kind == "truncated":
        write_dicom_series(folder)
        f = folder / "slice005.dcm"
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
        return folder, f, "unreadable DICOM file"
    if kind == "missing":
        write_dicom_series(folder)
        (folder / "slice005.dcm").unlink()
        return folder, None, "1 slice(s) missing"
    if kind == "uneven":
        write_dicom_series(folder, positions=[0, 2.5, 5, 7.5, 10, 13, 15.5, 18, 20.5, 23, 25.5, 28])
        return folder, None, "uneven slice spacing"
    if kind == "duplicate":
        write_dicom_series(folder, positions=[0, 2.5, 5, 7.5, 10, 10, 12.5, 15, 17.5, 20, 22.5, 25])
        return folder, None, "repeat the position"
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["truncated", "missing", "uneven", "duplicate"])
def test_bad_dicom_series(tmp_path, capfd, kind):
    folder, culprit, match = _dicom(kind, tmp_path / "in")
    inputs = Snapshot(folder)
    rc = _infer(str(folder), "--output", str(tmp_path / "out"))
    assert_clean_failure(rc, capfd, [culprit or folder], inputs, [tmp_path / "out"], match)


def test_good_dicom_series_still_reads(tmp_path, capfd):
    folder = write_dicom_series(tmp_path / "in" / "series", n=12)
    from sam_mix_monai.data.io import read_volume

    vol = read_volume(folder)
    assert tuple(vol.shape) == (1, 32, 32, 12)
    assert float(vol.affine[2, 2]) == pytest.approx(2.5)
    assert capfd.readouterr().err.strip() == ""


def test_batch_survives_bad_cases_and_lists_them(tmp_path, capfd, monkeypatch):
    src = tmp_path / "in"
    _case(src, "a_good", 0)
    zero = _case(src, "b_zero", 1, _zero_z)
    _case(src, "c_good", 2)
    boom = _case(src, "d_boom", 3)
    inputs = Snapshot(src)
    from sam_mix_monai.inference import runner

    real = runner.VolumeSliceInferer.__call__

    def flaky(self, vol, predictor):  # an unexpected bug on one case
        if "d_boom" in str(vol.meta["filename_or_obj"]):
            raise RuntimeError("simulated bug")
        return real(self, vol, predictor)

    monkeypatch.setattr(runner.VolumeSliceInferer, "__call__", flaky)
    out = tmp_path / "out"
    assert _infer(str(src), "--output", str(out)) == 2
    assert leftovers(out) == ["a_good_liver.json", "a_good_liver.nii.gz", "c_good_liver.json", "c_good_liver.nii.gz",
                              "statistics.csv"]
    assert [r.split(",")[0] for r in (out / "statistics.csv").read_text().splitlines()[1:]] == ["a_good", "c_good"]
    cap = capfd.readouterr()
    assert "segmented 2 of 4 case(s)" in cap.out
    err = cap.err.strip().splitlines()
    assert len(err) == 2 and "Traceback" not in cap.err
    assert str(zero) in err[0] and "zero voxel spacing" in err[0]
    assert str(boom) in err[1] and "inference failed: RuntimeError: simulated bug" in err[1]
    assert inputs.unchanged()


def test_unexpected_error_one_line_and_debug_traceback(tmp_path, capfd, monkeypatch):
    src = _case(tmp_path / "in")
    inputs = Snapshot(tmp_path / "in")
    from sam_mix_monai.inference import runner

    monkeypatch.setattr(runner, "keep_largest_component", lambda m: 1 / 0)
    rc = _infer(str(src), "--output", str(tmp_path / "out"))
    assert_clean_failure(rc, capfd, [src], inputs, [tmp_path / "out"], "postprocess failed: ZeroDivisionError")
    with pytest.raises(Exception) as err:  # --debug: the traceback, down to the original exception
        _infer(str(src), "--output", str(tmp_path / "out"), debug=True)
    assert isinstance(err.value.__cause__ or err.value, ZeroDivisionError)


@pytest.mark.parametrize("fail, match", [(enospc, "no space left on device"), (erofs, "read-only file system")])
def test_disk_full_or_read_only_while_writing_the_preview(tmp_path, capfd, monkeypatch, fail, match):
    """Monkeypatched: the preview (the last-but-one file of the set) fails; the mask must not stay."""
    src = _case(tmp_path / "in")
    inputs = Snapshot(tmp_path / "in")
    import matplotlib.figure

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", fail)
    out = tmp_path / "out"
    rc = _infer(str(src), "--output", str(out), "--preview")
    assert_clean_failure(rc, capfd, [out / "case0_liver.png"], inputs, [out], match)


@pytest.mark.parametrize("free_kb", [8, 40])
def test_disk_full_on_a_real_small_tmpfs(tmp_path, capfd, small_disk, free_kb):
    """A real 1 MB tmpfs with 8 KB (nothing fits) or 40 KB free (the mask fits, the preview not): nothing may stay."""
    src = _case(tmp_path / "in")
    inputs = Snapshot(tmp_path / "in")
    out = small_disk.where / "out"
    small_disk.fill(leave_kb=free_kb)
    rc = _infer(str(src), "--output", str(out), "--preview")
    assert_clean_failure(rc, capfd, [out], inputs, [out], "no space left on device")


def test_output_that_cannot_be_created(tmp_path, capfd):
    src = _case(tmp_path / "in")
    inputs = Snapshot(tmp_path / "in")
    for bad in ("/proc/sam-mix-out", "/proc"):
        rc = _infer(str(src), "--output", bad)
        assert_clean_failure(rc, capfd, [bad], inputs, [], "output folder")


def test_stale_parts_cleaned_and_modes_follow_umask(tmp_path, capfd):
    src = _case(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".case0_liver.nii.gz.abcd1234.part.nii.gz"
    other = out / ".someone_else.nii.gz.abcd1234.part.nii.gz"
    for f in (stale, other):
        f.write_bytes(b"half")
        os.utime(f, (time.time() - 3600, time.time() - 3600))
    old = os.umask(0o022)
    try:
        assert _infer(str(src), "--output", str(out)) == 0
    finally:
        os.umask(old)
    assert leftovers(out) == sorted([other.name, *OUTS])  # another run's leftovers are not ours to remove
    for name in OUTS:
        assert (out / name).stat().st_mode & 0o777 == 0o644, name


def _bad_checkpoint(kind: str, path: Path) -> tuple[Path, str]:
    ckpt = torch.load(tiny_checkpoint(), weights_only=True)
    if kind == "all_nan":
        ckpt["network"] = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                           for k, v in ckpt["network"].items()}
        match = "NaN or infinite"
    elif kind == "nan_iou_head":
        key = next(k for k in ckpt["network"] if "iou_prediction_head" in k and k.endswith("weight"))
        ckpt["network"][key] = ckpt["network"][key].clone()
        ckpt["network"][key][0, 0] = float("nan")
        match = "iou_prediction_head"
    elif kind == "runs_code":
        class Evil:
            def __reduce__(self):
                return (os.system, ("echo PWNED",))

        ckpt["payload"] = Evil()
        match = "refused: it would run code"
    elif kind == "truncated":
        torch.save(ckpt, path)
        path.write_bytes(path.read_bytes()[:4096])
        return path, "corrupt or truncated"
    else:
        raise ValueError(kind)
    torch.save(ckpt, path)
    return path, match


@pytest.mark.parametrize("kind", ["all_nan", "nan_iou_head", "runs_code", "truncated"])
def test_bad_checkpoints(tmp_path, capfd, kind):
    src = _case(tmp_path / "in")
    ckpt, match = _bad_checkpoint(kind, tmp_path / "ck" / "model.pt") if (tmp_path / "ck").mkdir() is None else None
    inputs = Snapshot(tmp_path / "in", tmp_path / "ck")
    rc = _infer(str(src), "--output", str(tmp_path / "out"), ckpt=ckpt)
    line = assert_clean_failure(rc, capfd, [ckpt], inputs, [tmp_path / "out"], match)
    assert "PWNED" not in line
