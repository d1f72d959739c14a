"""The Python API: ``sam_mix_monai.segment`` and ``Segmenter`` (path or Nifti1Image in, Nifti1Image out)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import sam_mix_monai
from sam_mix_monai.cli.main import main
from sam_mix_monai.utils.errors import InputError
from tests.inference.tiny_model import phantom, save_case, tiny_checkpoint


@pytest.fixture(scope="module")
def segmenter():
    return sam_mix_monai.Segmenter(tiny_checkpoint(), device="cpu")


def test_path_and_image_give_the_cli_mask(tmp_path: Path, segmenter, capsys) -> None:
    c = phantom(0, "LPS")
    src = save_case(tmp_path / "case0.nii.gz", c.image, c.affine)
    by_path = segmenter.segment(src)
    by_image = segmenter.segment(nib.load(str(src)))
    assert isinstance(by_path, nib.Nifti1Image) and by_path.shape == c.image.shape
    np.testing.assert_array_equal(by_path.affine, nib.load(str(src)).affine)
    assert np.asarray(by_path.dataobj).sum() > 0
    np.testing.assert_array_equal(np.asarray(by_path.dataobj), np.asarray(by_image.dataobj))
    assert main(["-q", "infer", str(src), "-o", str(tmp_path / "cli"), "--checkpoint", str(tiny_checkpoint()),
                 "--no-progress", "-d", "cpu"]) == 0
    cli = nib.load(str(tmp_path / "cli" / "case0_liver.nii.gz"))
    np.testing.assert_array_equal(np.asarray(cli.dataobj), np.asarray(by_path.dataobj))
    np.testing.assert_array_equal(cli.affine, by_path.affine)


def test_outputs_file_and_folder(tmp_path: Path, segmenter) -> None:
    c = phantom(1, "RAS")
    src = save_case(tmp_path / "in" / "case1.nii.gz", c.image, c.affine)
    img = sam_mix_monai.segment(src, tmp_path / "one.nii.gz", checkpoint=tiny_checkpoint(), device="cpu")
    assert np.array_equal(np.asarray(nib.load(str(tmp_path / "one.nii.gz")).dataobj), np.asarray(img.dataobj))
    segmenter.segment(src, tmp_path / "folder", save_probabilities=True)
    assert sorted(p.name for p in (tmp_path / "folder").iterdir()) == [
        "case1_liver.json", "case1_liver.nii.gz", "case1_liver_probabilities.nii.gz"]
    seg = segmenter.predict(src, probabilities=True)
    assert seg.statistics["volume_ml"] > 0 and seg.probabilities.get_fdata().max() <= 1


def test_real_dicom_round_trip_matches_cli(tmp_path: Path, real_ct: Path, segmenter) -> None:
    dicom = real_ct / "dicom"
    img = segmenter.segment(dicom)
    assert main(["-q", "infer", "-i", str(dicom), "-o", str(tmp_path), "--checkpoint", str(tiny_checkpoint()),
                 "--no-progress", "-d", "cpu"]) == 0
    cli = nib.load(str(tmp_path / "dicom_liver.nii.gz"))
    assert img.shape == cli.shape == (512, 512, 20)
    np.testing.assert_allclose(img.affine, cli.affine, atol=1e-4)  # NIfTI on disk stores float32
    np.testing.assert_array_equal(np.asarray(img.dataobj), np.asarray(cli.dataobj))


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not look like CT"):  # no checkpoint: the packaged default model
        sam_mix_monai.Segmenter().segment(nib.Nifti1Image(np.zeros((8, 8, 4), np.int16), np.eye(4)))
    with pytest.raises(InputError, match="expected auto, cpu"):
        sam_mix_monai.Segmenter(tiny_checkpoint(), device="gpu")
    with pytest.raises(InputError, match="3D volume"):
        sam_mix_monai.segment(nib.Nifti1Image(np.zeros((8, 8), np.int16), np.eye(4)), checkpoint=tiny_checkpoint())


def test_import_is_lazy() -> None:
    code = "import sys, sam_mix_monai; print('torch' in sys.modules, 'monai' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stdout.split() == ["False", "False"], res.stderr


def test_box_sam_runs_lite_medsam_through_onnx_runtime_on_cpu_by_default() -> None:
    from sam_mix_monai.networks.onnx_encoder import OnnxEncoder

    plain = sam_mix_monai.Segmenter(device="cpu")
    assert isinstance(plain.box_sam.image_encoder, OnnxEncoder) and plain.encoder_backend == "onnxruntime"
    assert plain.precision == "fp32"
    eager = sam_mix_monai.Segmenter(device="cpu", encoder_backend="torch")
    assert not isinstance(eager.box_sam.image_encoder, OnnxEncoder) and eager.encoder_backend == "torch"
    fast = sam_mix_monai.Segmenter(device="cpu", fast=True)
    assert isinstance(fast.box_sam.image_encoder, OnnxEncoder) and fast.encoder_backend == "onnxruntime"
    from sam_mix_monai.utils.precision import cpu_has_native_bf16

    assert fast.precision == ("bf16" if cpu_has_native_bf16() else "fp32")  # bf16 only where the CPU has it
    # the export is shared: the second and third Segmenters reuse the first one's session
    assert fast.box_sam.image_encoder.session is plain.box_sam.image_encoder.session
    with pytest.raises(InputError, match="encoder-backend"):
        sam_mix_monai.Segmenter(device="cpu", encoder_backend="tensorrt")
