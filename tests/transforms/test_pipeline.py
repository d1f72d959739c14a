import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from sam_mix_monai.transforms import SlicingConfig, volume_to_slices_transform
from tests.conftest import make_case_arrays


def _mt(arr, affine):
    return MetaTensor(torch.as_tensor(np.ascontiguousarray(arr))[None], affine=torch.as_tensor(affine, dtype=torch.float64))


def test_pipeline_outputs():
    img, lab = make_case_arrays((40, 32, 20))
    aff = np.diag([0.7, 0.7, 3.0, 1.0])
    out = volume_to_slices_transform(SlicingConfig(keep_rate="all", image_size=32))({"image": _mt(img, aff), "label": _mt(lab, aff)})
    assert out["image"].shape == (20, 32, 32) and out["label"].shape == (20, 32, 32)
    assert float(out["image"].min()) >= 0 and float(out["image"].max()) <= 1
    assert set(torch.unique(torch.as_tensor(out["label"])).tolist()) <= {0, 1}
    assert np.array_equal(np.asarray(out["slice_label"]), (np.asarray(out["label"]).reshape(20, -1).max(1) > 0).astype(np.uint8))


@pytest.mark.parametrize("codes", [("L", "P", "S"), ("L", "A", "S"), ("P", "S", "R"), ("A", "I", "L")])
def test_non_ras_headers_give_the_same_slices(codes):
    img, lab = make_case_arrays((40, 32, 20), seed=3)
    aff = np.diag([0.7, 0.8, 3.0, 1.0])
    aff[:3, 3] = [-10, 20, 30]
    ras_img, ras_lab = nib.Nifti1Image(img, aff), nib.Nifti1Image(lab, aff)
    ornt = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt(("R", "A", "S")), nib.orientations.axcodes2ornt(codes))
    o_img, o_lab = ras_img.as_reoriented(ornt), ras_lab.as_reoriented(ornt)
    assert nib.aff2axcodes(o_img.affine) == codes
    t = volume_to_slices_transform(SlicingConfig(keep_rate=0.5, image_size=24))
    ref = t({"image": _mt(img, aff), "label": _mt(lab, aff)})
    got = t({"image": _mt(np.asanyarray(o_img.dataobj), o_img.affine), "label": _mt(np.asanyarray(o_lab.dataobj), o_lab.affine)})
    assert torch.equal(torch.as_tensor(ref["image"]), torch.as_tensor(got["image"]))
    assert torch.equal(torch.as_tensor(ref["label"]), torch.as_tensor(got["label"]))
    assert np.array_equal(ref["slice_index"], got["slice_index"])
