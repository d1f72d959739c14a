"""The Python API checks what it is given at the boundary (issue 22 #8): clear TypeError / ValueError
naming the accepted types, before any model loads; arrays with an affine and MetaTensors are scans."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from sam_mix_monai.inference.segmenter import Segmenter, segment
from tests.inference.tiny_model import phantom, tiny_checkpoint


@pytest.fixture(scope="module")
def segmenter():
    return Segmenter(tiny_checkpoint(), device="cpu")


@pytest.mark.parametrize("bad", [5, None, 3.5, True, b"ct.nii.gz", ["ct.nii.gz"], {"image": "x"}])
def test_segment_refuses_other_types_before_loading_the_model(bad, monkeypatch):
    def no_model(*_a, **_k):  # the check must come first
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(Segmenter, "__init__", no_model)
    with pytest.raises(TypeError, match="a path .* Nifti1Image, a MONAI MetaTensor, or a NumPy array"):
        segment(bad)


def test_array_without_affine_is_a_value_error(monkeypatch):
    monkeypatch.setattr(Segmenter, "__init__", lambda *_a, **_k: (_ for _ in ()).throw(AssertionError("loaded")))
    with pytest.raises(ValueError, match=r"shape \(64, 64, 24\) needs affine="):
        segment(np.zeros((64, 64, 24)))


@pytest.mark.parametrize("image, affine, match", [
    (np.zeros((64, 64)), np.eye(4), "expected a 3D array"),
    (np.zeros((64, 64, 24)), np.eye(3), "4x4"),
    (np.zeros((64, 64, 24), bool), np.eye(4), "dtype"),
])
def test_bad_arrays_are_value_errors(segmenter, image, affine, match):
    with pytest.raises(ValueError, match=match):
        segmenter.predict(image, affine=affine)


def test_affine_with_a_file_is_refused(segmenter, tmp_path):
    with pytest.raises(ValueError, match="with an array only"):
        segmenter.segment(str(tmp_path / "ct.nii.gz"), affine=np.eye(4))


def test_array_with_affine_and_metatensor_give_the_nifti_mask(segmenter):
    c = phantom(0, "RAS")
    expected = np.asarray(segmenter.segment(nib.Nifti1Image(c.image, c.affine)).dataobj)
    from_array = segmenter.segment(c.image, affine=c.affine)
    from_tensor = segmenter.segment(torch.from_numpy(np.ascontiguousarray(c.image)), affine=torch.as_tensor(c.affine))
    meta = MetaTensor(torch.from_numpy(np.ascontiguousarray(c.image))[None], affine=torch.as_tensor(c.affine))
    from_meta = segmenter.segment(meta)
    for img in (from_array, from_tensor, from_meta):
        assert np.array_equal(np.asarray(img.dataobj), expected)
        assert np.allclose(img.affine, c.affine)
