"""``sam-mix export`` refuses non-finite weights and outputs: one line naming the file, exit 2, no file written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from sam_mix_monai.cli.main import main
from tests.faults import Snapshot, assert_clean_failure
from tests.inference.tiny_model import tiny_checkpoint


def _export(ckpt: Path, out: Path) -> int:
    return main(["-q", "export", "--checkpoint", str(ckpt), "--format", "torchscript", "--output", str(out)])


def _write(tmp_path: Path, kind: str) -> tuple[Path, str]:
    ckpt = torch.load(tiny_checkpoint(), weights_only=True)
    path = tmp_path / "ck" / "best.pt"
    path.parent.mkdir()
    if kind == "all_nan":
        ckpt["network"] = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                           for k, v in ckpt["network"].items()}
        match = "weights hold NaN or infinite values"
    elif kind == "inf_one_tensor":
        key = next(k for k in ckpt["network"] if k.endswith("bias") and ckpt["network"][k].is_floating_point())
        ckpt["network"][key] = ckpt["network"][key].clone().fill_(float("inf"))
        match = key
    elif kind == "runs_code":
        class Evil:
            def __reduce__(self):
                return (os.system, ("echo PWNED",))

        ckpt["extra"] = Evil()
        match = "refused: it would run code"
    else:
        raise ValueError(kind)
    torch.save(ckpt, path)
    return path, match


@pytest.mark.parametrize("kind", ["all_nan", "inf_one_tensor", "runs_code"])
def test_export_refuses_bad_weights(tmp_path, capfd, kind):
    ckpt, match = _write(tmp_path, kind)
    inputs = Snapshot(ckpt.parent)
    out = tmp_path / "out" / "model.ts"
    line = assert_clean_failure(_export(ckpt, out), capfd, [ckpt], inputs, [out.parent], match)
    assert "PWNED" not in line
    assert not out.parent.exists()  # the folder this run created is gone again


def test_export_refuses_non_finite_outputs_before_writing(tmp_path, capfd, monkeypatch):
    from sam_mix_monai.networks import SAMMixInference

    real = SAMMixInference.forward
    monkeypatch.setattr(SAMMixInference, "forward", lambda self, x: real(self, x) * float("nan"))
    inputs = Snapshot(tiny_checkpoint())
    out = tmp_path / "model.ts"
    assert_clean_failure(_export(tiny_checkpoint(), out), capfd, [tiny_checkpoint()], inputs, [out],
                         "NaN or infinite outputs on the check batch")
    assert list(tmp_path.iterdir()) == []


def test_exported_file_with_non_finite_outputs_is_not_left(tmp_path, capfd, monkeypatch):
    from sam_mix_monai.inference import export

    real = export.run_exported
    monkeypatch.setattr(export, "run_exported", lambda path, fmt, image: real(path, fmt, image) * float("nan"))
    inputs = Snapshot(tiny_checkpoint())
    out = tmp_path / "model.ts"
    assert_clean_failure(_export(tiny_checkpoint(), out), capfd, ["model.ts"], inputs, [out],
                         "the exported model gives NaN or infinite outputs")
    assert list(tmp_path.iterdir()) == []


def test_full_disk_while_writing_torchscript_is_one_line_and_leaves_nothing(tmp_path, capfd, monkeypatch):
    """Issue 22 #10: torch's C++ writer aborted the process (SIGABRT) and left a .part file."""
    from sam_mix_monai.inference import export
    from tests.faults import enospc

    monkeypatch.setattr(export, "_write_bytes", enospc)
    inputs = Snapshot(tiny_checkpoint())
    out = tmp_path / "out" / "model.ts"
    line = assert_clean_failure(_export(tiny_checkpoint(), out), capfd, [out], inputs, [tmp_path / "out"],
                                "No space left on device")
    assert "TorchScript" in line


def test_export_refused_before_tracing_when_the_disk_cannot_hold_it(tmp_path, capfd, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage(1 << 30, (1 << 30) - 4096, 4096))
    inputs = Snapshot(tiny_checkpoint())
    out = tmp_path / "model.onnx"
    rc = main(["-q", "export", "--checkpoint", str(tiny_checkpoint()), "--format", "onnx", "--output", str(out)])
    assert_clean_failure(rc, capfd, [out], inputs, [out], "no space left on device")
