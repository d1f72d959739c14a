"""Writing cohorts: layouts, determinism across workers, manifest, bad arguments."""

from __future__ import annotations

import filecmp
import json

import nibabel as nib
import numpy as np
import pytest

from sam_mix_monai.data.layouts import find_cases
from sam_mix_monai.data.phantom import MANIFEST, generate_case, generate_cohort
from sam_mix_monai.utils.errors import InputError

SMALL = {"matrix": 48, "slices": 20, "progress": False}


def load(path):
    img = nib.load(str(path))
    return np.asanyarray(img.dataobj), img.affine, img.header


def test_lits_layout_files_and_values(tmp_path):
    out = tmp_path / "lits"
    recs = generate_cohort(out, 2, "lits", "a", seed=4, start_id=5, workers=1, **SMALL)
    assert [r["id"] for r in recs] == [5, 6]
    names = sorted(p.name for p in out.iterdir())
    assert names == [MANIFEST, "segmentation-5.nii", "segmentation-6.nii", "volume-5.nii", "volume-6.nii"]
    for i in (5, 6):
        img, aff, hdr = load(out / f"volume-{i}.nii")
        lab, laff, lhdr = load(out / f"segmentation-{i}.nii")
        assert hdr.get_data_dtype() == np.int16 and lhdr.get_data_dtype() == np.uint8
        assert img.dtype == np.int16 and lab.dtype == np.uint8
        assert set(np.unique(lab)) <= {0, 1, 2} and (lab == 1).any()
        np.testing.assert_array_equal(aff, laff)
        assert int(hdr["qform_code"]) == 1 and int(hdr["sform_code"]) == 1
        ref = generate_case(4, i, "a", 48, 20)
        np.testing.assert_array_equal(img, ref.image)
        np.testing.assert_allclose(aff, ref.affine, atol=1e-5)
    assert [c.case_id for c in find_cases(out, "lits")] == ["volume-5", "volume-6"]


def test_totalseg_layout_files_and_values(tmp_path):
    out = tmp_path / "ts"
    generate_cohort(out, 2, "totalseg", "b", seed=4, workers=1, **SMALL)
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "s0000", "s0001"]
    for s in ("s0000", "s0001"):
        assert sorted(p.relative_to(out / s).as_posix() for p in (out / s).rglob("*")) == ["ct.nii.gz", "segmentations", "segmentations/liver.nii.gz"]
        img, aff, hdr = load(out / s / "ct.nii.gz")
        lab, laff, lhdr = load(out / s / "segmentations" / "liver.nii.gz")
        assert hdr.get_data_dtype() == np.int16 and lhdr.get_data_dtype() == np.uint8
        assert set(np.unique(lab)) == {0, 1}
        np.testing.assert_array_equal(aff, laff)
    assert [c.case_id for c in find_cases(out, "totalseg")] == ["s0000", "s0001"]


def test_same_result_for_any_worker_count(tmp_path):
    one = generate_cohort(tmp_path / "w1", 3, "lits", "b", seed=9, workers=1, **SMALL)
    two = generate_cohort(tmp_path / "w2", 3, "lits", "b", seed=9, workers=2, **SMALL)
    for r1, r2 in zip(one, two):
        for key in ("image", "label"):
            assert filecmp.cmp(tmp_path / "w1" / r1[key], tmp_path / "w2" / r2[key], shallow=False)
        assert {k: v for k, v in r1.items() if k != "seconds"} == {k: v for k, v in r2.items() if k != "seconds"}
    # a different seed gives different cases
    other = generate_cohort(tmp_path / "w3", 1, "lits", "b", seed=10, workers=1, **SMALL)
    assert not filecmp.cmp(tmp_path / "w1" / one[0]["image"], tmp_path / "w3" / other[0]["image"], shallow=False)


def test_manifest_and_extension_with_start_id(tmp_path):
    out = tmp_path / "c"
    generate_cohort(out, 2, "lits", "a", seed=1, workers=1, **SMALL)
    first = (out / "volume-1.nii").read_bytes()
    generate_cohort(out, 2, "lits", "a", seed=1, start_id=1, workers=1, **SMALL)
    assert (out / "volume-1.nii").read_bytes() == first  # case 1 depends on its id only
    doc = json.loads((out / MANIFEST).read_text())
    assert doc["layout"] == "lits"
    assert [c["id"] for c in doc["cases"]] == [0, 1, 2]
    rec = doc["cases"][0]
    for key in ("seed", "domain", "spacing_mm", "orientation", "liver_slices", "image", "label"):
        assert key in rec
    assert rec["liver_slices"] > 0 and len(rec["spacing_mm"]) == 3
    assert not [p for p in out.iterdir() if ".part" in p.name]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"cases": 0}, "cases"),
        ({"layout": "nifti"}, "layout"),
        ({"domain": "z"}, "domain"),
        ({"workers": 0}, "workers"),
        ({"slices": 5}, "slices"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    args = {"out_dir": tmp_path / "o", "cases": 1, "layout": "lits", "domain": "a", "seed": 0, **SMALL, **kwargs}
    with pytest.raises(InputError, match=match):
        generate_cohort(**args)


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(InputError) as e:
        generate_cohort(blocker / "sub", 1, **SMALL)
    assert e.value.path == str(blocker / "sub")
