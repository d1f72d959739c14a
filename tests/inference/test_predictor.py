"""SlicePredictor on SAM-Mix: the SAM branch runs only on slices that pass the classifier gate."""

from __future__ import annotations

from typing import Iterator

import pytest
import torch

from sam_mix_monai.inference import SlicePredictor
from sam_mix_monai.networks import GATED_LOGIT, ModelConfig, SAMMix, SAMMixInference, build_model, gate_logits
from tests.networks import mixed_batch

SIZE = 64
BATCH = 6


@pytest.fixture(scope="module")
def net() -> SAMMix:
    torch.manual_seed(0)
    net = build_model(ModelConfig(name="sam_mix", size="compact", image_size=SIZE)).eval()
    with torch.no_grad():  # spread the random classifier's liver probabilities (about 0.49 +- 1e-6 otherwise)
        net.classifier.fc.weight.mul_(1000.0)  # the CAM is min-max normalised: unchanged
    return net


class EncoderCalls:
    """Forward hook on the SAM image encoder: records the batch each call sees."""

    def __init__(self, net: SAMMix) -> None:
        self.inputs: list[torch.Tensor] = []
        self.handle = net.sam.image_encoder.register_forward_hook(lambda m, args, out: self.inputs.append(args[0]))

    @property
    def slices(self) -> int:
        return sum(int(x.shape[0]) for x in self.inputs)


@pytest.fixture()
def encoder_calls(net: SAMMix) -> Iterator[EncoderCalls]:
    calls = EncoderCalls(net)
    try:
        yield calls
    finally:
        calls.handle.remove()


def _batch(size: int = SIZE) -> torch.Tensor:
    return mixed_batch(BATCH, size, seed=3)[0]


def _middle_threshold(prob: torch.Tensor, n_pass: int) -> float:
    """A threshold that lets exactly the ``n_pass`` most liver-like slices through."""
    p = prob.sort(descending=True).values
    assert float(p[n_pass - 1] - p[n_pass]) > 1e-4, "untied probabilities needed to force the gate"
    return float((p[n_pass - 1] + p[n_pass]) / 2)


def _full(net: SAMMix, x: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return net(x)


@pytest.mark.parametrize("size", [SIZE, 96], ids=["network-size", "resized"])
def test_gated_output_equals_gated_full_forward(net: SAMMix, encoder_calls: EncoderCalls, size: int) -> None:
    x = _batch(size)
    full = _full(net, x)
    full_encoder_input = encoder_calls.inputs.pop()
    thr = _middle_threshold(full["liver_prob"], 2)
    passing = full["liver_prob"] >= thr
    assert int(passing.sum()) == 2

    out = SlicePredictor(net, cls_threshold=thr)(x)

    assert out.logits.shape == (BATCH, 1, size, size)
    ref = gate_logits(full["mask_logits"], full["liver_prob"], thr, GATED_LOGIT)
    torch.testing.assert_close(out.logits[passing], ref[passing], rtol=0, atol=1e-5)
    assert bool((out.logits[~passing] == GATED_LOGIT).all())
    torch.testing.assert_close(out.liver_prob, full["liver_prob"], rtol=0, atol=1e-6)
    torch.testing.assert_close(out.chosen_iou[passing], full["chosen_iou"][passing], rtol=0, atol=1e-5)
    assert bool(out.chosen_iou[~passing].isnan().all())
    # Only the passing slices reached SAM, in one call.
    assert len(encoder_calls.inputs) == 1 and encoder_calls.slices == 2
    torch.testing.assert_close(encoder_calls.inputs[0], full_encoder_input[passing], rtol=0, atol=1e-6)


def test_all_gated_batch_never_runs_sam(net: SAMMix, encoder_calls: EncoderCalls) -> None:
    x = _batch()
    prob = _full(net, x)["liver_prob"]
    encoder_calls.inputs.clear()
    out = SlicePredictor(net, cls_threshold=float(prob.max()) + 1e-3)(x)
    assert encoder_calls.slices == 0
    assert bool((out.logits == GATED_LOGIT).all()) and out.logits.shape == (BATCH, 1, SIZE, SIZE)
    assert bool(out.chosen_iou.isnan().all()) and bool(torch.isfinite(out.liver_prob).all())


def test_no_gated_slice_runs_the_whole_batch(net: SAMMix, encoder_calls: EncoderCalls) -> None:
    x = _batch()
    full = _full(net, x)
    encoder_calls.inputs.clear()
    out = SlicePredictor(net, cls_threshold=0.0)(x)
    assert encoder_calls.slices == BATCH
    torch.testing.assert_close(out.logits, full["mask_logits"], rtol=0, atol=1e-5)
    assert not bool(out.chosen_iou.isnan().any())


def test_skip_gated_false_runs_sam_on_every_slice_same_output(net: SAMMix, encoder_calls: EncoderCalls) -> None:
    x = _batch()
    thr = _middle_threshold(_full(net, x)["liver_prob"], 3)
    encoder_calls.inputs.clear()
    skipped = SlicePredictor(net, cls_threshold=thr)(x)
    assert encoder_calls.slices == 3
    encoder_calls.inputs.clear()
    every = SlicePredictor(net, cls_threshold=thr, skip_gated=False)(x)
    assert encoder_calls.slices == BATCH
    torch.testing.assert_close(every.logits, skipped.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(every.chosen_iou, skipped.chosen_iou, rtol=0, atol=1e-5, equal_nan=True)


def test_inference_wrapper_threshold_and_skipping(net: SAMMix, encoder_calls: EncoderCalls) -> None:
    x = _batch()
    full = _full(net, x)
    thr = _middle_threshold(full["liver_prob"], 4)
    wrapper = SAMMixInference(net, cls_threshold=thr).eval()
    encoder_calls.inputs.clear()
    pred = SlicePredictor(wrapper)
    assert pred.cls_threshold == thr and pred.has_scores
    out = pred(x)
    assert encoder_calls.slices == 4
    with torch.no_grad():
        ref = wrapper(x)  # the export wrapper: full forward, then the gate
    torch.testing.assert_close(out.logits, ref, rtol=0, atol=1e-5)
