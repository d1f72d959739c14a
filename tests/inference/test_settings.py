"""A run's options (``inference.settings``): checked in one place, built alike by the CLI, ``segment()`` and ``Segmenter``."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import sam_mix_monai
from sam_mix_monai.cli.main import build_parser, main
from sam_mix_monai.inference import segmenter as segmenter_module
from sam_mix_monai.inference.box3d import Box3D
from sam_mix_monai.inference.settings import (FAST_BATCH_SIZE, FAST_Z_STEP_MM, InferenceSettings, OutputSettings, split_options,
                                              to_box)
from sam_mix_monai.utils.errors import InputError
from tests.inference.tiny_model import phantom, save_case, tiny_checkpoint


@pytest.mark.parametrize("option, value, match", [
    ("batch_size", 0, "--batch-size must be at least 1 (got 0)"),
    ("window", (40, 0), "--window: width must be positive"),
    ("window", (math.nan, 400), "--window nan 400: centre and width must be finite"),
    ("window", ("a", 400), "--window: expected two numbers"),
    ("prompt_mode", "cube", "--prompt-mode 'cube': expected volume or slice"),
    ("precision", "fp8", "--precision 'fp8': expected one of fp32, fp16, bf16"),
    ("encoder_backend", "tensorrt", "--encoder-backend 'tensorrt': expected one of auto, torch, onnxruntime"),
    ("z_step_mm", -1.0, "--z-step-mm must be 0 or more (got -1.0)"),
    ("z_step_mm", math.nan, "--z-step-mm must be 0 or more (got nan)"),
])
def test_each_bad_model_option_is_named(option: str, value, match: str) -> None:
    with pytest.raises(InputError, match=match.replace("(", r"\(").replace(")", r"\)")):
        InferenceSettings(**{option: value})


@pytest.mark.parametrize("option, value, match", [
    ("output_types", ("rtstruct",), "--output-type rtstruct: expected nifti, dicom_seg or both"),
    ("output_types", (), r"--output-type \(none\)"),
    ("box", "1,2,3", "--box '1,2,3': expected six integers"),
    ("box", "0,0,9,5,5,1", "z1 = 9 > z2 = 1"),
])
def test_each_bad_output_option_is_named(option: str, value, match: str) -> None:
    with pytest.raises(InputError, match=match):
        OutputSettings(**{option: value})


def test_unknown_option_names_it() -> None:
    with pytest.raises(TypeError, match="'devise'"):
        InferenceSettings.build(devise="cpu")
    with pytest.raises(TypeError, match="'previw'"):
        OutputSettings.build(previw=True)
    with pytest.raises(TypeError, match="'batchsize'"):
        sam_mix_monai.Segmenter("best.pt", batchsize=4)  # before any file is read
    with pytest.raises(TypeError, match="'fastest'"):
        sam_mix_monai.segment("ct.nii.gz", checkpoint="best.pt", fastest=True)
    assert split_options({"fast": True, "preview": True, "bundle": "b"}, "bundle") == (
        {"fast": True}, {"preview": True}, {"bundle": "b"})


def test_values_are_normalised_and_frozen() -> None:
    s = InferenceSettings(window=[40, 400], batch_size="16", fast=1)
    assert s.window == (40.0, 400.0) and s.batch_size == 16 and s.fast is True
    assert s == InferenceSettings(window=(40.0, 400.0), batch_size=16, fast=True)
    with pytest.raises(Exception):
        s.fast = False  # type: ignore[misc]
    o = OutputSettings(output_types=["nifti", "dicom_seg", "nifti"], box="1,2,3,4,5,6")
    assert o.output_types == ("nifti", "dicom_seg") and o.box == Box3D((1, 2, 3), (4, 5, 6))
    assert OutputSettings(output_types="dicom_seg").output_types == ("dicom_seg",)
    assert to_box(None) is None and to_box(o.box) is o.box


def test_prompt_overrides_need_a_checkpoint() -> None:
    assert InferenceSettings(prompt_overrides={}).prompt_overrides is None
    assert InferenceSettings(prompt_overrides={"cam_threshold": 0.5}).prompt_overrides == {"cam_threshold": 0.5}
    with pytest.raises(InputError, match="prompt switches can only be changed on a training checkpoint"):
        sam_mix_monai.Segmenter(device="cpu", prompt_overrides={"cam_threshold": 0.5})  # before the default model loads


def test_precision_and_batch_follow_fast(monkeypatch) -> None:
    import sam_mix_monai.utils.precision as precision

    fast = InferenceSettings(fast=True)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda cpuinfo=None: True)
    assert [fast.autocast_precision(torch.device(d)) for d in ("cpu", "cuda", "mps")] == ["bf16", "fp16", "fp32"]
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda cpuinfo=None: False)  # emulated bf16: ~10x slower
    assert fast.autocast_precision(torch.device("cpu")) == "fp32"
    assert InferenceSettings().autocast_precision(torch.device("cpu")) == "fp32"
    with pytest.raises(InputError, match="--precision fp16 needs CUDA"):
        InferenceSettings(precision="fp16").autocast_precision(torch.device("cpu"))
    assert InferenceSettings().slices_per_pass() == 8 and InferenceSettings().slices_per_pass(4) == 4
    assert fast.slices_per_pass() == FAST_BATCH_SIZE and fast.slices_per_pass(64) == 64
    assert fast.slices_per_pass(4) == FAST_BATCH_SIZE  # fast raises a model's small batch ...
    assert InferenceSettings(fast=True, batch_size=4).slices_per_pass(64) == 4  # ... but not the user's
    assert fast.volume_z_step_mm() == FAST_Z_STEP_MM > 0 and InferenceSettings().volume_z_step_mm() == 0.0
    assert InferenceSettings(fast=True, z_step_mm=0).volume_z_step_mm() == 0.0  # the user's step wins
    assert InferenceSettings(z_step_mm=3).volume_z_step_mm() == 3.0


_ARGS = ["-d", "cpu", "--batch-size", "16", "--window", "50", "350", "--fast", "--no-lcc", "--prompt-mode", "slice",
         "--encoder-backend", "torch", "--z-step-mm", "3"]
_SAME = dict(device="cpu", batch_size=16, window=(50, 350), fast=True, largest_component=False, progress=True,
             prompt_mode="slice", encoder_backend="torch", z_step_mm=3.0)


def test_cli_arguments_build_the_settings() -> None:
    args = build_parser("infer").parse_args(["infer", "ct.nii.gz", "-o", "out", *_ARGS, "--preview", "-ot",
                                             "nifti,dicom_seg", "--skip-existing", "--box", "1,2,3,4,5,6"])
    assert InferenceSettings.from_args(args) == InferenceSettings(**_SAME)
    assert OutputSettings.from_args(args) == OutputSettings(preview=True, output_types=("nifti", "dicom_seg"),
                                                            skip_existing=True, box="1,2,3,4,5,6")
    args = build_parser("infer").parse_args(["infer", "ct.nii.gz", "-o", "out"])
    assert InferenceSettings.from_args(args) == InferenceSettings(progress=True)
    assert OutputSettings.from_args(args) == OutputSettings()


class _Built(Exception):
    """Raised by the recording Segmenter once it has seen its settings."""


def test_cli_segment_and_segmenter_build_the_same_settings(tmp_path: Path, monkeypatch) -> None:
    c = phantom(0, "LPS")
    src = save_case(tmp_path / "in" / "case0.nii.gz", c.image, c.affine)
    seen = []
    real = segmenter_module.Segmenter

    class Recording(real):  # type: ignore[misc, valid-type]
        def __init__(self, checkpoint=None, bundle=None, settings=None, **options):
            seen.append(InferenceSettings.build(settings, **options))
            raise _Built

    monkeypatch.setattr(segmenter_module, "Segmenter", Recording)
    ckpt = str(tiny_checkpoint())
    # the CLI builds them once (its Segmenter is made after the input was read)
    with pytest.raises(_Built):
        main(["--debug", "infer", str(src), "-o", str(tmp_path / "out"), "--checkpoint", ckpt, *_ARGS])
    with pytest.raises(_Built):
        sam_mix_monai.segment(src, checkpoint=ckpt, **_SAME)
    assert seen == [InferenceSettings(**_SAME)] * 2
    monkeypatch.setattr(segmenter_module, "Segmenter", real)
    options = {k: v for k, v in _SAME.items() if k != "progress"}
    direct = real(ckpt, **options, progress=True)
    built = real(ckpt, settings=InferenceSettings(**_SAME))
    assert direct.settings == built.settings == InferenceSettings(**_SAME)
    assert direct.inferer.batch_size == built.inferer.batch_size == 16
    from sam_mix_monai.utils.precision import cpu_has_native_bf16

    assert direct.inferer.window_params == (50.0, 350.0)
    assert direct.inferer.z_step_mm == built.inferer.z_step_mm == 3.0
    assert direct.precision == built.precision == ("bf16" if cpu_has_native_bf16() else "fp32")  # fast on this CPU
    replaced = real(ckpt, settings=InferenceSettings(**_SAME), batch_size=4)  # an option replaces the settings' value
    assert replaced.settings.batch_size == 4 and replaced.settings.fast
