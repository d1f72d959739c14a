"""The single-output inference wrapper: gating, TorchScript trace and ONNX export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sam_mix_monai.networks import GATED_LOGIT, ModelConfig, SAMMixInference, build_model
from tests.networks import mixed_batch, one_thread  # noqa: F401

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")]

SIZE = 64


@pytest.fixture(scope="module", params=["area", "peak"])
def wrapper(request: pytest.FixtureRequest) -> SAMMixInference:
    torch.manual_seed(0)
    net = build_model(ModelConfig(name="sam_mix", size="compact", image_size=SIZE, encoder_mode="lora",
                                  cam_component=request.param))
    # Non-zero LoRA updates, so that the export really carries the adapters.
    with torch.no_grad():
        for name, p in net.named_parameters():
            if ".lora_" in name and name.endswith("_b.weight"):
                p.normal_(0, 0.02)
    return SAMMixInference(net).eval()


def _inputs(b: int, seed: int) -> torch.Tensor:
    return mixed_batch(b, SIZE, seed=seed)[0]


def test_gating(wrapper: SAMMixInference) -> None:
    x = _inputs(3, 0)
    with torch.no_grad():
        out = wrapper.net(x)
    probs = out["liver_prob"].sort().values
    gate = SAMMixInference(wrapper.net, cls_threshold=float(probs[:2].mean())).eval()  # gates exactly one slice
    with torch.no_grad():
        logits = gate(x)
    assert logits.shape == (3, 1, SIZE, SIZE)
    gated = out["liver_prob"] < gate.cls_threshold
    assert int(gated.sum()) == 1
    for i in range(3):
        if bool(gated[i]):
            assert bool((logits[i] == GATED_LOGIT).all())
        else:
            assert torch.equal(logits[i], out["mask_logits"][i])
    assert wrapper.cls_threshold == 0.5  # the config's default


def test_torchscript_trace_matches_eager_on_other_batch(wrapper: SAMMixInference, tmp_path: Path) -> None:
    with torch.no_grad():
        traced = torch.jit.trace(wrapper, _inputs(2, 0))
        path = tmp_path / "model.ts"
        traced.save(str(path))
        loaded = torch.jit.load(str(path))
        x3 = _inputs(3, 1)
        torch.testing.assert_close(loaded(x3), wrapper(x3), rtol=0, atol=1e-4)


@pytest.mark.parametrize("dynamo", [pytest.param(True, marks=pytest.mark.slow), False], ids=["dynamo", "torchscript"])  # dynamo: about 25 s
def test_onnx_export_matches_eager_on_other_batch(wrapper: SAMMixInference, tmp_path: Path, dynamo: bool) -> None:
    ort = pytest.importorskip("onnxruntime")
    if dynamo and wrapper.net.cam_component != "area":
        pytest.skip("the slow dynamo export runs once (area rule); the peak rule's ops are checked by the other exporter")
    path = tmp_path / "model.onnx"
    x2 = _inputs(2, 0)
    if dynamo:  # torch >= 2.9 default, and what MONAI's onnx_export uses there
        kwargs = {"dynamic_shapes": {"image": {0: torch.export.Dim("batch")}}, "external_data": False}
    else:
        kwargs = {"dynamic_axes": {"image": {0: "batch"}, "mask_logits": {0: "batch"}}}
    with torch.no_grad():
        torch.onnx.export(
            wrapper, (x2,), str(path), input_names=["image"], output_names=["mask_logits"], dynamo=dynamo, **kwargs
        )
    assert not wrapper.training and not wrapper.net.training
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x3 = _inputs(3, 1)
    (onnx_out,) = sess.run(None, {"image": x3.numpy()})
    with torch.no_grad():
        eager = wrapper(x3).numpy()
    assert onnx_out.shape == (3, 1, SIZE, SIZE)
    np.testing.assert_allclose(onnx_out, eager, rtol=0, atol=1e-4)
