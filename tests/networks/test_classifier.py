"""The wide ResNet-38 classifier."""

from __future__ import annotations

import pytest
import torch

from sam_mix_monai.networks import ResNet38, build_classifier, resnet38_compact
from tests.networks import one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def test_reference_layout() -> None:
    net = build_classifier("resnet38")
    assert isinstance(net, ResNet38)
    assert net.conv1a.out_channels == 64
    assert [len(s) for s in (net.b2, net.b3, net.b4, net.b5)] == [3, 3, 6, 3]
    assert net.b5[0].conv_branch2a.out_channels == 512 and net.b5[0].conv_branch2b1.out_channels == 1024
    assert net.b5[1].conv_branch2b1.dilation == (2, 2)
    for block, widths in ((net.b6, (512, 1024, 2048)), (net.b7, (1024, 2048, 4096))):
        convs = (block.conv_branch2a, block.conv_branch2b1, block.conv_branch2b2)
        assert tuple(c.out_channels for c in convs) == widths
    assert net.b7.conv_branch2b1.dilation == (4, 4)
    assert net.fc.in_features == 4096 and net.fc.out_features == 2
    assert 100e6 < sum(p.numel() for p in net.parameters()) < 110e6


def test_compact_outputs_stride_8() -> None:
    net = resnet38_compact()
    logits, feats = net(torch.rand(3, 1, 64, 48))
    assert logits.shape == (3, 2)
    assert feats.shape == (3, net.out_channels, 8, 6)
    assert bool((feats >= 0).all())  # after the final ReLU, as CAMs expect
    with pytest.raises(ValueError):
        build_classifier("resnet50")
