"""One interface over the networks inference can run: gated mask logits plus per-slice scores.

:class:`SlicePredictor` accepts

* :class:`~sam_mix_monai.networks.SAMMix` (dict output): logits of the chosen mask, gated by the
  classifier (liver-free slices get :data:`~sam_mix_monai.networks.GATED_LOGIT`), with the liver
  probability and the predicted IoU of each slice;
* :class:`~sam_mix_monai.networks.SAMMixInference` (the bundle's ``network_def``): the same, read
  from its inner network with the wrapper's threshold;
* :class:`~sam_mix_monai.networks.UNetSeg` (dict with ``mask_logits`` only): logits, no scores;
* any module returning one ``(B, 1, S, S)`` tensor (TorchScript / exported models): logits only.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from sam_mix_monai.networks import SAMMix, SAMMixInference, gate_logits
from sam_mix_monai.networks.inference import GATED_LOGIT

__all__ = ["SlicePredictor", "SliceOutput", "PRECISIONS"]

PRECISIONS = ("fp32", "bf16", "fp16")
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class SliceOutput:
    """Predictions for a batch of slices.

    Attributes:
        logits: (B, 1, S, S) float mask logits (gated slices hold a large negative logit).
        liver_prob: (B,) classifier liver probability, or ``None``.
        chosen_iou: (B,) SAM's predicted IoU of the chosen mask, or ``None``.
    """

    logits: torch.Tensor
    liver_prob: torch.Tensor | None = None
    chosen_iou: torch.Tensor | None = None


class SlicePredictor:
    """Run a segmentation network on ``(B, 1, S, S)`` slices in [0, 1].

    Args:
        network: one of the modules listed in the module docstring (put in eval mode here).
        cls_threshold: liver-probability gate for a bare :class:`SAMMix` (``None``: the network's own).
        device: device to run on (``None``: the network's).
        precision: ``fp32``, ``bf16`` (autocast; about 1.7-2x faster on CPUs with AVX-512 BF16 or AMX)
            or ``fp16`` (autocast, CUDA only).
    """

    def __init__(
        self,
        network: nn.Module,
        cls_threshold: float | None = None,
        device: torch.device | str | None = None,
        precision: str = "fp32",
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.precision = precision
        if device is not None:
            network = network.to(device)
        self.network = network.eval()
        inner = network.net if isinstance(network, SAMMixInference) else network
        self.sam_mix = inner if isinstance(inner, SAMMix) else None
        if isinstance(network, SAMMixInference):
            self.cls_threshold = network.cls_threshold if cls_threshold is None else float(cls_threshold)
        elif self.sam_mix is not None:
            self.cls_threshold = self.sam_mix.cls_threshold if cls_threshold is None else float(cls_threshold)
        else:
            self.cls_threshold = None
        try:
            self.device = next(self.network.parameters()).device
        except (StopIteration, AttributeError):
            self.device = torch.device(device or "cpu")

    @property
    def image_size(self) -> int | None:
        """Square input size of the network, when it declares one."""
        net = self.sam_mix if self.sam_mix is not None else self.network
        size = getattr(net, "image_size", None)
        return int(size) if size is not None else None

    @property
    def has_scores(self) -> bool:
        """Whether :meth:`__call__` returns liver probabilities and IoU predictions."""
        return self.sam_mix is not None

    @torch.no_grad()
    def __call__(self, image: torch.Tensor) -> SliceOutput:
        """Predict a batch of slices.

        Args:
            image: (B, 1, S, S) windowed slices in [0, 1].

        Returns:
            The predictions, on the CPU.
        """
        x = image.to(self.device, non_blocking=True)
        autocast = (torch.autocast(self.device.type, dtype=_AUTOCAST[self.precision]) if self.precision in _AUTOCAST
                    else contextlib.nullcontext())
        with autocast:
            if self.sam_mix is not None:
                out = self.sam_mix(x)
                logits = gate_logits(out["mask_logits"].float(), out["liver_prob"].float(), self.cls_threshold, GATED_LOGIT)
                return SliceOutput(logits.cpu(), out["liver_prob"].float().cpu(), out["chosen_iou"].float().cpu())
            out = self.network(x)
        if isinstance(out, dict):
            out = out["mask_logits"]
        return SliceOutput(out.float().cpu())
