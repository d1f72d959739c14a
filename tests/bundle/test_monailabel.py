"""MONAI Label serves the bundle for real: a server on 127.0.0.1, one inference over HTTP, the same mask as `sam-mix infer`.

MONAI Label is not a dependency (its full requirement set does not resolve beside the pinned numpy and pydicom, see
docs/bundle.md), so this test is skipped where ``monailabel`` cannot be imported. It starts the server of
``examples/monailabel_app`` on a free loopback port with a bundle holding the tests' tiny checkpoint and a studies folder
holding the committed example CT (as NIfTI), asks for an inference, and stops the server itself.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from sam_mix_monai.cli.main import main
from sam_mix_monai.inference import bundle_network, read_checkpoint
from tests.inference.tiny_model import IMAGE_SIZE, tiny_checkpoint

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "examples" / "monailabel_app"
BUNDLE = ROOT / "bundles" / "sam_mix_liver_ct"
EXAMPLE = ROOT / "examples" / "totalseg_example_dicom" / "dicom"
MODEL = "sam_mix_liver_ct"
START_TIMEOUT_S = 240  # importing MONAI Label, torch and the bundle on 2 busy cores
INFER_TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bundle(root: Path) -> Path:
    """The bundle copied with models/model.pt from the tiny checkpoint, and its model_config sized to it."""
    dst = root / MODEL
    shutil.copytree(BUNDLE, dst)
    state, cfg, _ = read_checkpoint(tiny_checkpoint())
    net = bundle_network(cfg)
    net.load_state_dict(state)
    torch.save(net.state_dict(), dst / "models" / "model.pt")
    infer = dst / "configs" / "inference.yaml"
    text = infer.read_text()
    assert "  image_size: 256\n" in text
    infer.write_text(text.replace("  image_size: 256\n", f"  image_size: {IMAGE_SIZE}\n"))
    return dst


def _example_nifti(studies: Path) -> Path:
    import SimpleITK as sitk

    studies.mkdir(parents=True)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(EXAMPLE)))
    path = studies / "example_ct.nii.gz"
    sitk.WriteImage(reader.Execute(), str(path))
    return path


def _get(url: str, timeout: float, data: bytes | None = None) -> bytes:
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=timeout) as r:  # noqa: S310 - loopback
        assert r.status == 200, r.status
        return r.read()


def _wait_for_server(proc: subprocess.Popen, url: str, log: Path) -> dict:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"MONAI Label exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            return json.loads(_get(f"{url}/info/", timeout=5))
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(2)
    pytest.fail(f"MONAI Label did not answer within {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: only the server and its children
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("monailabel") is None,
                    reason="monailabel not installed (optional; docs/bundle.md says how and why not by default)")
def test_monailabel_serves_the_bundle_like_sam_mix_infer(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path / "bundle")
    app = tmp_path / "app"  # MONAI Label writes logs/ into its app folder: a copy, not the repository's
    shutil.copytree(APP, app, ignore=shutil.ignore_patterns("logs", "__pycache__"))
    ct = _example_nifti(tmp_path / "studies")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join([str(app / "compat"), str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "MONAI_LABEL_SESSION_PATH": str(tmp_path / "sessions"), "MONAI_LABEL_DATASTORE_AUTO_RELOAD": "false"}
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "monailabel.main", "start_server", "--app", str(app),
                                 "--studies", str(ct.parent), "--conf", "bundle", str(bundle),
                                 "--host", "127.0.0.1", "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True)
    try:
        info = _wait_for_server(proc, url, log)
        assert info["models"][MODEL]["labels"] == {"liver": 1}, info["models"]
        label = _get(f"{url}/infer/{MODEL}?image=example_ct&output=image", timeout=INFER_TIMEOUT_S, data=b"")
    finally:
        _stop(proc)
    assert proc.returncode is not None
    with socket.socket() as s:  # nothing left listening on the port
        assert s.connect_ex(("127.0.0.1", port)) != 0
    served_path = tmp_path / "served_liver.nii.gz"
    served_path.write_bytes(label)
    served = nib.load(str(served_path))

    assert main(["-q", "infer", str(ct), "--bundle", str(bundle), "-o", str(tmp_path / "cli"), "--no-progress"]) == 0
    cli = nib.load(str(tmp_path / "cli" / "example_ct_liver.nii.gz"))
    a, b = np.asarray(served.dataobj), np.asarray(cli.dataobj)
    assert a.shape == b.shape == nib.load(str(ct)).shape
    assert b.sum() > 0  # a mask to compare, not two empty volumes
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(served.affine, cli.affine, atol=1e-4)
