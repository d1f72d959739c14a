"""Wide ResNet-38 liver-presence classifier (Wu, Shen & van den Hengel 2016, "Wider or Deeper").

This is the pre-activation, output-stride-8 ResNet-38 used for class activation maps in
weakly supervised segmentation (the ``resnet38d`` backbone of PSA/AffinityNet, Ahn & Kwak 2018):

=====  ======================================  ========  ======  ========
stage  unit (widths)                           units     stride  dilation
=====  ======================================  ========  ======  ========
B1     3x3 conv, 64                            1         1       1
B2     basic (128, 128)                        3         2       1
B3     basic (256, 256)                        3         2       1
B4     basic (512, 512)                        6         2       1
B5     basic (512, 1024)                       3         1       2
B6     bottleneck (512, 1024, 2048)            1         1       4
B7     bottleneck (1024, 2048, 4096)           1         1       4
=====  ======================================  ========  ======  ========

followed by BN + ReLU (the feature map ``A`` used for CAMs), global average pooling and one
linear layer (2 classes, index 1 = liver). The closed-form GradCAM in :mod:`.cam` relies on
exactly this GAP + linear head.

MONAI and torchvision have no wide ResNet-38 with this stage layout, hence the hand-written
blocks (they follow the PSA reference implementation).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LIVER", "ResNet38", "resnet38", "resnet38_compact", "build_classifier", "liver_probability"]

#: Index of the liver class in every (B, 2) class-logit tensor of the project (0: liver-free).
LIVER = 1


def liver_probability(class_logits: torch.Tensor) -> torch.Tensor:
    """(B, 2) class logits -> (B,) float32 softmax probability of :data:`LIVER`."""
    return torch.softmax(class_logits.float(), dim=1)[:, LIVER]


class ResBlock(nn.Module):
    """Pre-activation basic unit: BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus (projected) shortcut.

    Args:
        in_ch: input channels.
        mid_ch: channels of the first 3x3 conv.
        out_ch: output channels.
        stride: stride of the first conv (and of the projection shortcut).
        dilation: dilation of the second conv.
        first_dilation: dilation of the first conv (defaults to ``dilation``).
    """

    def __init__(
        self,
        in_ch: int,
        mid_ch: int,
        out_ch: int,
        stride: int = 1,
        dilation: int = 1,
        first_dilation: int | None = None,
    ) -> None:
        super().__init__()
        first_dilation = dilation if first_dilation is None else first_dilation
        self.same_shape = in_ch == out_ch and stride == 1
        self.bn_branch2a = nn.BatchNorm2d(in_ch)
        self.conv_branch2a = nn.Conv2d(
            in_ch, mid_ch, 3, stride, padding=first_dilation, dilation=first_dilation, bias=False
        )
        self.bn_branch2b1 = nn.BatchNorm2d(mid_ch)
        self.conv_branch2b1 = nn.Conv2d(mid_ch, out_ch, 3, padding=dilation, dilation=dilation, bias=False)
        self.conv_branch1 = None if self.same_shape else nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch2 = F.relu(self.bn_branch2a(x))
        branch1 = x if self.conv_branch1 is None else self.conv_branch1(branch2)
        branch2 = self.conv_branch2a(branch2)
        branch2 = self.conv_branch2b1(F.relu(self.bn_branch2b1(branch2)))
        return branch1 + branch2


class ResBlockBottleneck(nn.Module):
    """Pre-activation bottleneck unit (1x1 -> dilated 3x3 -> 1x1) with widths (out/4, out/2, out).

    Args:
        in_ch: input channels.
        out_ch: output channels.
        stride: stride of the first 1x1 conv.
        dilation: dilation of the 3x3 conv.
        dropout: channel dropout before the 3x3 and the last 1x1 conv (PSA uses 0.3 / 0.5).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.same_shape = in_ch == out_ch and stride == 1
        self.bn_branch2a = nn.BatchNorm2d(in_ch)
        self.conv_branch2a = nn.Conv2d(in_ch, out_ch // 4, 1, stride, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(out_ch // 4)
        self.dropout_2b1 = nn.Dropout2d(dropout)
        self.conv_branch2b1 = nn.Conv2d(
            out_ch // 4, out_ch // 2, 3, padding=dilation, dilation=dilation, bias=False
        )
        self.bn_branch2b2 = nn.BatchNorm2d(out_ch // 2)
        self.dropout_2b2 = nn.Dropout2d(dropout)
        self.conv_branch2b2 = nn.Conv2d(out_ch // 2, out_ch, 1, bias=False)
        self.conv_branch1 = None if self.same_shape else nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch2 = F.relu(self.bn_branch2a(x))
        branch1 = x if self.conv_branch1 is None else self.conv_branch1(branch2)
        branch2 = self.conv_branch2a(branch2)
        branch2 = self.conv_branch2b1(self.dropout_2b1(F.relu(self.bn_branch2b1(branch2))))
        branch2 = self.conv_branch2b2(self.dropout_2b2(F.relu(self.bn_branch2b2(branch2))))
        return branch1 + branch2


class ResNet38(nn.Module):
    """Wide ResNet-38 (output stride 8) with a GAP + linear classification head.

    Args:
        in_channels: image channels (1 for a CT slice in [0, 1]).
        num_classes: number of classes (2: index 0 = no liver, 1 = liver).
        width_div: divides every width of the reference network (1 = the real ResNet-38).
        units: residual units in B2..B5 (reference: 3, 3, 6, 3; B6 and B7 have one unit each).
        dropout: channel dropout inside B6 and B7 (reference: 0.3, 0.5).

    Example:
        >>> net = resnet38_compact()
        >>> logits, feats = net(torch.rand(2, 1, 64, 64))
        >>> logits.shape, feats.shape[-1]
        (torch.Size([2, 2]), 8)
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        width_div: int = 1,
        units: Sequence[int] = (3, 3, 6, 3),
        dropout: Sequence[float] = (0.3, 0.5),
    ) -> None:
        super().__init__()
        w = [c // width_div for c in (64, 128, 256, 512, 1024, 2048, 4096)]
        self.conv1a = nn.Conv2d(in_channels, w[0], 3, padding=1, bias=False)
        n2, n3, n4, n5 = units
        self.b2 = self._stage(w[0], w[1], w[1], n2, stride=2)
        self.b3 = self._stage(w[1], w[2], w[2], n3, stride=2)
        self.b4 = self._stage(w[2], w[3], w[3], n4, stride=2)
        self.b5 = self._stage(w[3], w[3], w[4], n5, stride=1, dilation=2, first_dilation=1)
        self.b6 = ResBlockBottleneck(w[4], w[5], dilation=4, dropout=dropout[0])
        self.b7 = ResBlockBottleneck(w[5], w[6], dilation=4, dropout=dropout[1])
        # BN + ReLU of the last units' sum: its output is the CAM feature map A (GradCAM target layer).
        self.final = nn.Sequential(nn.BatchNorm2d(w[6]), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w[6], num_classes)
        self.out_channels = w[6]
        self.output_stride = 8

    @staticmethod
    def _stage(
        in_ch: int, mid_ch: int, out_ch: int, n: int, stride: int, dilation: int = 1, first_dilation: int | None = None
    ) -> nn.Sequential:
        blocks = [ResBlock(in_ch, mid_ch, out_ch, stride, dilation, first_dilation)]
        blocks += [ResBlock(out_ch, mid_ch, out_ch, 1, dilation) for _ in range(n - 1)]
        return nn.Sequential(*blocks)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Last feature map ``A`` (B, C, H/8, W/8), non-negative."""
        x = self.conv1a(x)
        x = self.b7(self.b6(self.b5(self.b4(self.b3(self.b2(x))))))
        return self.final(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Classify a batch of slices.

        Args:
            x: (B, 1, H, W) CT slices in [0, 1]; H and W multiples of 8.

        Returns:
            ``(logits, features)``: (B, num_classes) logits and the (B, C, H/8, W/8) feature map.
        """
        feats = self.forward_features(x)
        return self.fc(self.pool(feats).flatten(1)), feats


def resnet38(in_channels: int = 1, num_classes: int = 2) -> ResNet38:
    """The reference wide ResNet-38 (about 104 M parameters, 4096 feature channels)."""
    return ResNet38(in_channels, num_classes)


def resnet38_compact(in_channels: int = 1, num_classes: int = 2) -> ResNet38:
    """ResNet-38 layout at 1/8 width and one unit per stage, no dropout (for CPU)."""
    return ResNet38(in_channels, num_classes, width_div=8, units=(1, 1, 1, 1), dropout=(0.0, 0.0))


def build_classifier(size: str, in_channels: int = 1, num_classes: int = 2) -> ResNet38:
    """Build the classifier by name.

    Args:
        size: ``"resnet38"`` (reference) or ``"compact"``.
        in_channels: image channels.
        num_classes: output classes.

    Returns:
        The classifier module.
    """
    if size == "resnet38":
        return resnet38(in_channels, num_classes)
    if size == "compact":
        return resnet38_compact(in_channels, num_classes)
    raise ValueError(f"unknown classifier size {size!r}; expected 'resnet38' or 'compact'")
