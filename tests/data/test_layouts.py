import pytest

from sam_mix_monai.data.layouts import find_cases
from sam_mix_monai.utils.errors import InputError
from tests.conftest import write_lits_cases


def test_lits_pairs_by_id_not_listing_order(tmp_path):
    root = tmp_path / "lits"
    write_lits_cases(root / "Training Batch 2", ids=[10, 2])
    write_lits_cases(root / "Training Batch 1", ids=[1])
    cases = find_cases(root, "lits")
    assert [c.case_id for c in cases] == ["volume-1", "volume-2", "volume-10"]
    for c in cases:
        assert c.image.name.replace("volume", "segmentation") == c.label.name


def test_missing_label_names_the_image(tmp_path):
    root = write_lits_cases(tmp_path / "lits", ids=[0, 1])
    (root / "segmentation-1.nii").unlink()
    with pytest.raises(InputError, match="volume-1.nii.*no label"):
        find_cases(root, "lits")


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no lits cases"):
        find_cases(tmp_path / "empty", "lits")
    with pytest.raises(InputError, match="not found"):
        find_cases(tmp_path / "absent", "totalseg")


def test_totalseg_layout(tmp_path):
    root = write_lits_cases(tmp_path / "src", ids=[0, 1])
    for i in (0, 1):
        s = tmp_path / "ts" / f"s000{i}"
        (s / "segmentations").mkdir(parents=True)
        (s / "ct.nii.gz").write_bytes((root / f"volume-{i}.nii").read_bytes())
        (s / "segmentations" / "liver.nii.gz").write_bytes((root / f"segmentation-{i}.nii").read_bytes())
    (tmp_path / "ts" / "s0002").mkdir()
    (tmp_path / "ts" / "s0002" / "ct.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match="s0002"):
        find_cases(tmp_path / "ts", "totalseg")
    (tmp_path / "ts" / "s0002" / "ct.nii.gz").unlink()
    assert [c.case_id for c in find_cases(tmp_path / "ts", "totalseg")] == ["s0000", "s0001"]


def _msd(root, nnunet: bool, channels: dict | None = None):
    import json

    import numpy as np

    from tests.conftest import make_case_arrays, save_nifti

    aff = np.diag([0.8, 0.8, 2.5, 1.0])
    for i in (10, 2):
        img, lab = make_case_arrays((48, 40, 24), seed=i)
        name = f"liver_{i}"
        save_nifti(root / "imagesTr" / (f"{name}_0000.nii.gz" if nnunet else f"{name}.nii.gz"), img, aff)
        save_nifti(root / "labelsTr" / f"{name}.nii.gz", lab, aff)
    if nnunet:
        save_nifti(root / "imagesTr" / "liver_2_0001.nii.gz", img, aff)  # a second channel: not used
    (root / "imagesTr" / "._liver_2.nii.gz").write_bytes(b"macOS resource fork")
    meta = {"channel_names" if nnunet else "modality": channels or {"0": "CT"}, "labels": {"0": "background", "1": "liver", "2": "cancer"}}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


@pytest.mark.parametrize("nnunet", [False, True])
def test_msd_and_nnunet_raw_layouts(tmp_path, nnunet):
    cases = find_cases(_msd(tmp_path, nnunet), "msd")
    assert [c.case_id for c in cases] == ["liver_2", "liver_10"]  # natural order, by case id
    assert cases[0].image.name == ("liver_2_0000.nii.gz" if nnunet else "liver_2.nii.gz")
    assert cases[0].label.name == "liver_2.nii.gz"


def test_msd_errors(tmp_path):
    root = _msd(tmp_path / "a", False)
    (root / "dataset.json").unlink()
    with pytest.raises(InputError, match="dataset.json not found") as e:
        find_cases(root, "msd")
    assert str(root) in str(e.value)
    mr = _msd(tmp_path / "b", True, {"0": "T2"})
    with pytest.raises(InputError, match="channel 0 is 'T2', not CT"):
        find_cases(mr, "msd")
    lone = _msd(tmp_path / "c", False)
    (lone / "labelsTr" / "liver_10.nii.gz").unlink()
    with pytest.raises(InputError, match="no label labelsTr/liver_10.nii.gz"):
        find_cases(lone, "msd")


def test_convert_msd_cli(tmp_path, capsys):
    import h5py

    from sam_mix_monai.cli.main import main

    root = _msd(tmp_path / "msd", True)
    out = tmp_path / "msd.h5"
    assert main(["-q", "convert", "--format", "msd", "--input", str(root), "--output", str(out), "--image-size", "32",
                 "--split", "train=1.0"]) == 0
    with h5py.File(out, "r") as f:
        assert sorted({c.decode() if isinstance(c, bytes) else c for c in f["case_id"][:]}) == ["liver_10", "liver_2"]
    (root / "dataset.json").unlink()
    capsys.readouterr()
    assert main(["convert", "--format", "msd", "--input", str(root), "--output", str(tmp_path / "x.h5")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "dataset.json not found" in err and not (tmp_path / "x.h5").exists()
