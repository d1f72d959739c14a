import os
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest

from sam_mix_monai.cli.main import main
from sam_mix_monai.data.converter import convert
from sam_mix_monai.transforms import SlicingConfig, central_slice_range
from tests.conftest import make_case_arrays, save_nifti, write_lits_cases


def _run(capsys, *argv):
    code = main(["convert", "--no-progress", *map(str, argv)])
    return code, capsys.readouterr()


def test_convert_counts_labels_ranges_and_provenance(tmp_path, lits_dir):
    out = tmp_path / "o.h5"
    s = convert(lits_dir, out, "lits", SlicingConfig(keep_rate=0.5, image_size=32), {"train": 1.0}, workers=2, progress=False)
    assert s.cases["train"] == 3 and s.slices["train"] == 3 * len(central_slice_range(24, 0.5))
    with h5py.File(out) as f:
        img, mask, label = f["image"][()], f["mask"][()], f["label"][()]
        assert img.shape == (36, 32, 32) and img.min() >= 0 and img.max() <= 1
        assert set(np.unique(mask)) <= {0, 1}
        assert np.array_equal(label, (mask.reshape(len(mask), -1).max(1) > 0).astype(np.uint8))
        assert list(f["case_id"].asstr()[:12]) == ["volume-0"] * 12
        assert f["slice_index"][:12].tolist() == list(central_slice_range(24, 0.5))
        assert np.allclose(f["spacing"][0], [0.8 * 40 / 32, 0.8 * 48 / 32, 2.5])
        assert f.attrs["keep_rate"] == 0.5 and f.attrs["format_version"] == 1
        assert f["cases/n_rows"][()].tolist() == [12, 12, 12]


def test_workers_do_not_change_the_output(tmp_path, lits_dir):
    cfg = SlicingConfig(keep_rate="all", image_size=32)
    convert(lits_dir, tmp_path / "a.h5", "lits", cfg, workers=1, progress=False)
    convert(lits_dir, tmp_path / "b.h5", "lits", cfg, workers=2, progress=False)
    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "b.h5") as b:
        for k in ("image", "mask", "split", "slice_index"):
            assert np.array_equal(a[k][()], b[k][()])


def test_split_is_by_case(tmp_path):
    root = write_lits_cases(tmp_path / "l", n=10, shape=(16, 16, 8))
    convert(root, tmp_path / "o.h5", "lits", SlicingConfig(keep_rate="all", image_size=16), seed=3, progress=False)
    with h5py.File(tmp_path / "o.h5") as f:
        split, cases = f["split"][()], f["case_id"].asstr()[()]
    for c in set(cases):
        assert len(set(split[cases == c])) == 1
    assert sorted(np.bincount(split, minlength=3).tolist()) == [8, 16, 56]


def _mean_hu_inside(out: Path) -> float:
    with h5py.File(out) as f:
        img, mask = f["image"][()].astype(np.float64), f["mask"][()] > 0
    return float(img[mask].mean() * 400 - 160)


def _totalseg_from_real(root: Path, real_ct: Path, label: Path) -> Path:
    (root / "s0000" / "segmentations").mkdir(parents=True)
    os.symlink(real_ct / "dicom", root / "s0000" / "ct")
    os.symlink(label, root / "s0000" / "segmentations" / "liver.nii.gz")
    return root


def test_real_dicom_with_liver_mask_gives_portal_venous_liver(tmp_path, real_ct):
    root = _totalseg_from_real(tmp_path / "ts", real_ct, real_ct / "liver.nii.gz")
    s = convert(root, tmp_path / "real.h5", "totalseg", SlicingConfig(keep_rate="all"), {"train": 1.0}, progress=False)
    assert s.slices["train"] == 20 and s.positive["train"] == 20
    assert abs(_mean_hu_inside(tmp_path / "real.h5") - 89) < 5


def test_a_flipped_mask_fails_the_hu_check(tmp_path, real_ct):
    m = nib.load(real_ct / "liver.nii.gz")
    flipped = save_nifti(tmp_path / "flipped.nii.gz", np.asanyarray(m.dataobj)[::-1].copy(), m.affine)
    root = _totalseg_from_real(tmp_path / "ts", real_ct, flipped)
    convert(root, tmp_path / "f.h5", "totalseg", SlicingConfig(keep_rate="all"), {"train": 1.0}, progress=False)
    assert abs(_mean_hu_inside(tmp_path / "f.h5") - 89) > 15


def test_cli_prints_summary(tmp_path, lits_dir, capsys):
    code, cap = _run(capsys, "--format", "lits", "--input", lits_dir, "--output", tmp_path / "o.h5",
                     "--keep-rate", "all", "--image-size", "32", "--window", "50", "350", "--preview")
    assert code == 0 and "total" in cap.out and (tmp_path / "o.h5").exists()
    png = tmp_path / "o.h5.preview.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    with h5py.File(tmp_path / "o.h5") as f:
        assert f.attrs["window_center"] == 50 and f.attrs["window_width"] == 350


def _break(root: Path, how: str) -> str:
    """Damage case 1 of a LiTS folder; return a fragment the error line must contain."""
    img, lab = make_case_arrays()
    aff = np.diag([0.8, 0.8, 2.5, 1.0])
    if how == "missing_label":
        (root / "segmentation-1.nii").unlink()
        return "volume-1.nii: no label"
    if how == "shape":
        save_nifti(root / "segmentation-1.nii", lab[:, :, :-1], aff)
        return "segmentation-1.nii: label shape"
    if how == "geometry":
        aff2 = aff.copy(); aff2[0, 3] = 7.0
        save_nifti(root / "segmentation-1.nii", lab, aff2)
        return "segmentation-1.nii: label geometry"
    if how == "truncated":
        data = (root / "volume-1.nii").read_bytes()
        (root / "volume-1.nii").write_bytes(data[: len(data) // 3])
        return "volume-1.nii: cannot read NIfTI"
    if how == "2d":
        save_nifti(root / "volume-1.nii", img[:, :, 0], aff)
        return "volume-1.nii: expected a 3D volume"
    if how == "4d":
        save_nifti(root / "volume-1.nii", np.stack([img, img], -1), aff)
        return "volume-1.nii: expected a 3D volume"
    if how == "nan":
        f = img.astype(np.float32); f[3, 3, 3] = np.nan
        save_nifti(root / "volume-1.nii", f, aff)
        return "volume-1.nii: image contains NaN"
    if how == "labels":
        lab = lab.copy(); lab[0, 0, 0] = 7
        save_nifti(root / "segmentation-1.nii", lab, aff)
        return "segmentation-1.nii: label values [7]"
    raise ValueError(how)


@pytest.mark.parametrize("how", ["missing_label", "shape", "geometry", "truncated", "2d", "4d", "nan", "labels"])
def test_bad_input_one_line_exit_2_no_output(tmp_path, capsys, how):
    root = write_lits_cases(tmp_path / "lits", n=3)
    before = {p.name: p.read_bytes() for p in root.iterdir()}
    fragment = _break(root, how)
    before = {p.name: p.read_bytes() for p in root.iterdir()}
    out = tmp_path / "out" / "o.h5"
    code, cap = _run(capsys, "--format", "lits", "--input", root, "--output", out, "--workers", "2")
    assert code == 2
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in cap.err, cap.err
    assert not out.exists() and not any(out.parent.glob("*"))
    assert {p.name: p.read_bytes() for p in root.iterdir()} == before  # inputs untouched


def test_empty_folder_and_unwritable_output(tmp_path, capsys, lits_dir):
    (tmp_path / "empty").mkdir()
    code, cap = _run(capsys, "--format", "lits", "--input", tmp_path / "empty", "--output", tmp_path / "o.h5")
    assert code == 2 and "no lits cases found" in cap.err and not (tmp_path / "o.h5").exists()
    (tmp_path / "blocker").write_text("a file, not a folder")
    code, cap = _run(capsys, "--format", "lits", "--input", lits_dir, "--output", tmp_path / "blocker" / "o.h5")
    assert code == 2 and "blocker" in cap.err and len(cap.err.strip().splitlines()) == 1
    code, cap = _run(capsys, "--format", "lits", "--input", lits_dir, "--output", tmp_path / "o.h5", "--keep-rate", "2")
    assert code == 2 and "--keep-rate" in cap.err


def test_dev_slab_becomes_a_val_case_and_training_loses_its_neighbours(tmp_path, lits_dir, capsys):
    out = tmp_path / "s.h5"
    code, cap = _run(capsys, "--format", "lits", "--input", lits_dir, "--output", out, "--keep-rate", "all",
                     "--image-size", "32", "--split", "train=1", "--dev-slab", "8:14", "--slab-gap", "1")
    assert code == 0, cap.err
    with h5py.File(out) as f:
        ids, z, split = f["case_id"].asstr()[()], f["slice_index"][()], f["split"][()]
        slab = ids == "volume-0_slab8-14"
        assert z[slab].tolist() == list(range(8, 14)) and set(split[slab].tolist()) == {1}  # val
        rest = ids == "volume-0"
        assert not np.isin(z[rest], range(7, 15)).any() and len(z[rest]) == 24 - 8
        slabs = np.char.endswith(ids.astype(str), "_slab8-14")
        assert set(split[slabs].tolist()) == {1} and set(split[~slabs].tolist()) == {0}
        assert f["cases/n_rows"][()].tolist() == [16, 6] * 3
        assert f.attrs["dev_slab"] == "8:14 gap 1 -> val"
    code, cap = _run(capsys, "--format", "lits", "--input", lits_dir, "--output", tmp_path / "bad.h5", "--dev-slab", "9")
    assert code == 2 and "--dev-slab" in cap.err and len(cap.err.strip().splitlines()) == 1
    assert not (tmp_path / "bad.h5").exists()
