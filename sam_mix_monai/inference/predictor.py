"""One interface over the networks inference can run: gated mask logits plus per-slice scores.

:class:`SlicePredictor` accepts

* :class:`~sam_mix_monai.networks.SAMMix` (dict output): logits of the chosen mask, gated by the
  classifier (liver-free slices get :data:`~sam_mix_monai.networks.GATED_LOGIT` and a NaN predicted
  IoU), with the liver probability and the predicted IoU of each slice;
* :class:`~sam_mix_monai.networks.SAMMixInference` (the bundle's ``network_def``): the same, read
  from its inner network with the wrapper's threshold;
* :class:`~sam_mix_monai.networks.UNetSeg` (dict with ``mask_logits`` only): logits, no scores;
* any module returning one ``(B, 1, S, S)`` tensor (TorchScript / exported models): logits only.

**Gate skipping.** For SAM-Mix the predictor runs the network's two stages itself:
:meth:`SAMMix.prompt <sam_mix_monai.networks.SAMMix.prompt>` (classifier, CAM, prompts) on the whole
batch, then :meth:`SAMMix.segment <sam_mix_monai.networks.SAMMix.segment>` (the SAM branch) only on
the slices whose liver probability reaches the threshold; when none does, SAM does not run at all.
The result equals the gated output of the full forward pass (up to float rounding of a smaller
batch). ``skip_gated=False`` runs SAM on every slice (the full forward pass, then the gate): the
worst case, what a network that passes every slice costs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sam_mix_monai.networks import SAMMix, SAMMixInference, gate_logits
from sam_mix_monai.networks.single_output import GATED_LOGIT
from sam_mix_monai.utils.precision import PRECISIONS, autocast, normalize_precision

__all__ = ["SlicePredictor", "SliceOutput", "PRECISIONS"]



@dataclass
class SliceOutput:
    """Predictions for a batch of slices.

    Attributes:
        logits: (B, 1, S, S) float mask logits (gated slices hold a large negative logit).
        liver_prob: (B,) classifier liver probability, or ``None``.
        chosen_iou: (B,) SAM's predicted IoU of the chosen mask (NaN on gated slices), or ``None``.
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
        skip_gated: SAM-Mix only: run the SAM branch only on slices that pass the classifier gate
            (``False``: on every slice, then gate; same output, the worst-case cost).
        prompt_mode: SAM-Mix only, whole-volume inference: ``volume`` (one 3D prompt per CT,
            :mod:`.volume_mode`), ``slice`` (the paper's per-slice prompts) or ``None`` (the model's
            own ``prompt_mode``, ``volume`` unless its config says otherwise).
        volume_evidence: the volume prompt's evidence (``auto``, ``head``, ``cam``; ``None``: the model's).
    """

    def __init__(
        self,
        network: nn.Module,
        cls_threshold: float | None = None,
        device: torch.device | str | None = None,
        precision: str = "fp32",
        skip_gated: bool = True,
        prompt_mode: str | None = None,
        volume_evidence: str | None = None,
    ) -> None:
        if prompt_mode not in (None, "volume", "slice"):
            raise ValueError(f"prompt_mode must be volume or slice, got {prompt_mode!r}")
        self.precision = normalize_precision(precision)
        self.skip_gated = bool(skip_gated)
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
        own = self.sam_mix if self.sam_mix is not None else None
        #: ``volume``, ``slice``, or ``None`` for a network without a SAM-Mix (per-slice only)
        self.prompt_mode = None if own is None else (prompt_mode or getattr(own, "prompt_mode", "volume"))
        self.volume_evidence = volume_evidence or getattr(own, "volume_evidence", "auto")
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
        with autocast(self.precision, self.device):
            if self.sam_mix is not None:
                return self._sam_mix(x) if self.skip_gated else self._sam_mix_full(x)
            out = self.network(x)
        if isinstance(out, dict):
            out = out["mask_logits"]
        return SliceOutput(out.float().cpu())

    def _sam_mix_full(self, x: torch.Tensor) -> SliceOutput:
        """Full forward pass (SAM on every slice), then the gate."""
        out = self.sam_mix(x)
        prob = out["liver_prob"].float()
        logits = gate_logits(out["mask_logits"].float(), prob, self.cls_threshold, GATED_LOGIT)
        iou = out["chosen_iou"].float().masked_fill(prob < self.cls_threshold, float("nan"))
        return SliceOutput(logits.cpu(), prob.cpu(), iou.cpu())

    def _sam_mix(self, x: torch.Tensor) -> SliceOutput:
        """Prompt stage on every slice, SAM stage only on the slices that pass the gate."""
        net = self.sam_mix
        prompts = net.prompt(x)
        prob = prompts["liver_prob"].float()
        keep = torch.nonzero(prob >= self.cls_threshold).flatten()
        b, size = x.shape[0], x.shape[-2:]
        logits = torch.full((b, 1, *size), GATED_LOGIT, dtype=torch.float32, device=x.device)
        iou = torch.full((b,), float("nan"), dtype=torch.float32, device=x.device)
        if keep.numel():
            if keep.numel() < b:
                prompts = {k: v[keep] for k, v in prompts.items()}
            out = net.segment(prompts["image"], prompts)
            mask = net.resize_outputs({"mask_logits": out["mask_logits"]}, size)["mask_logits"]  # as forward does
            logits[keep] = mask.float()
            iou[keep] = out["chosen_iou"].float()
        return SliceOutput(logits.cpu(), prob.cpu(), iou.cpu())
