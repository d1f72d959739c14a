"""``sam-mix convert`` under bad input and faults: one line naming the file, exit 2, no store left, inputs unchanged.

Full disk: a real 1 MB tmpfs where ``mount`` is allowed (root), and always a monkeypatched HDF5
writer raising ``ENOSPC``.
"""

from __future__ import annotations

import numpy as np
import pytest

from sam_mix_monai.cli.main import main
from tests.conftest import make_case_arrays, save_nifti, write_lits_cases
from tests.faults import Snapshot, assert_clean_failure, enospc, nifti_with_header, small_disk, write_dicom_series  # noqa: F401

AFF = np.diag([0.8, 0.8, 2.5, 1.0])


def _convert(src, out, *extra: str) -> int:
    return main(["-q", "convert", "--no-progress", "--format", "lits", "--input", str(src), "--output", str(out),
                 "--image-size", "32", "--workers", "1", *extra])


def _zero_spacing(h) -> None:
    h["srow_z"][2] = 0


def _nan(h) -> None:
    h["srow_y"][1] = np.nan


def _lits_with_bad_case(root, kind: str):
    """Two good LiTS cases and volume-2 broken in one way; returns the file to blame and the words."""
    write_lits_cases(root, n=2)
    img, lab = make_case_arrays(seed=5)
    save_nifti(root / "segmentation-2.nii", lab, AFF)
    bad = root / "volume-2.nii"
    if kind == "zero_spacing":
        nifti_with_header(bad, img, AFF, _zero_spacing)
        return bad, "zero voxel spacing"
    if kind == "nan_sform":
        nifti_with_header(bad, img, AFF, _nan)
        return bad, "NaN or infinite values"
    if kind == "constant":
        save_nifti(bad, np.full_like(img, -1000), AFF)
        return bad, "blank or constant image"
    if kind == "truncated_dicom":  # volume-2 as a DICOM series folder with one truncated slice
        series = write_dicom_series(root / "volume-2", n=24, dz=2.5, size=48)
        f = series / "slice010.dcm"
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
        return f, "unreadable DICOM file"
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["zero_spacing", "nan_sform", "constant", "truncated_dicom"])
def test_bad_case_fails_the_conversion_cleanly(tmp_path, capfd, kind):
    root = tmp_path / "lits"
    culprit, match = _lits_with_bad_case(root, kind)
    inputs = Snapshot(root)
    out = tmp_path / "new" / "store.h5"
    assert_clean_failure(_convert(root, out), capfd, [culprit], inputs, [out, tmp_path / "new"], match)
    assert not (tmp_path / "new").exists()  # the folder this run created is gone again


def test_unexpected_error_names_file_and_stage(tmp_path, capfd, monkeypatch):
    root = write_lits_cases(tmp_path / "lits", n=2)
    inputs = Snapshot(root)
    from sam_mix_monai.data import converter

    def broken(cfg):
        def apply(data):
            raise ValueError("simulated bug")
        return apply

    monkeypatch.setattr(converter, "volume_to_slices_transform", broken)
    out = tmp_path / "o.h5"
    assert_clean_failure(_convert(root, out), capfd, [root / "volume-0.nii"], inputs, [out],
                         "slicing failed: ValueError: simulated bug")


def test_disk_full_while_writing_hdf5_monkeypatched(tmp_path, capfd, monkeypatch):
    root = write_lits_cases(tmp_path / "lits", n=2)
    inputs = Snapshot(root)
    from sam_mix_monai.data.h5store import SliceStoreWriter

    monkeypatch.setattr(SliceStoreWriter, "append", enospc)
    out = tmp_path / "out" / "o.h5"
    assert_clean_failure(_convert(root, out), capfd, [out], inputs, [tmp_path / "out"], "no space left on device")


def test_disk_full_on_a_real_small_tmpfs(tmp_path, capfd, small_disk):
    root = write_lits_cases(tmp_path / "lits", n=3, shape=(96, 96, 40))
    inputs = Snapshot(root)
    small_disk.fill(leave_kb=300)
    out = small_disk.where / "o.h5"
    line = assert_clean_failure(_convert(root, out, "--keep-rate", "all", "--image-size", "128"), capfd, [out],
                                inputs, [out], "no space left on device")
    assert sorted(p.name for p in small_disk.where.iterdir()) == [".filler"]
    assert "MB free" in line


def test_output_that_cannot_be_written(tmp_path, capfd):
    root = write_lits_cases(tmp_path / "lits", n=1)
    inputs = Snapshot(root)
    for bad in ("/proc/store.h5", "/proc/sam-mix/store.h5"):
        assert_clean_failure(_convert(root, bad), capfd, ["/proc"], inputs, [], "output folder")


def test_preview_failure_takes_the_store_with_it(tmp_path, capfd, monkeypatch):
    root = write_lits_cases(tmp_path / "lits", n=2)
    inputs = Snapshot(root)
    import matplotlib.figure

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", enospc)
    out = tmp_path / "out" / "o.h5"
    assert_clean_failure(_convert(root, out, "--preview"), capfd, ["o.h5.preview.png"], inputs, [tmp_path / "out"],
                         "no space left on device")
