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
