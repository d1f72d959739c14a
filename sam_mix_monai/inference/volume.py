"""Streaming slice-wise inference on a CT volume, with the mask mapped back onto the original grid.

For every axial slice (``keep_rate="all"``), in chunks of ``batch_size`` canonical slices:

1. read the slab from the original array and reorient it to display-convention RAS slices
   (:meth:`.geometry.AxialGeometry.read_slab`, identical to the training slicer);
2. :class:`~sam_mix_monai.transforms.HUWindow` and MONAI :class:`~monai.transforms.Resize` to the
   training slice size (bilinear), exactly as ``sam-mix convert`` prepares training slices;
3. run the network (:class:`.predictor.SlicePredictor`: classifier-gated logits, scores);
4. resize the logits back to the slice size (bilinear), threshold at logit 0, and write the mask into
   a ``uint8`` array of the input's shape (:meth:`.geometry.AxialGeometry.write_slab`).

Only one chunk is ever held as float: memory is the input array (memory-mapped for ``.nii``), the
``uint8`` output and one chunk, whatever the number of slices.

Example:
    >>> import numpy as np, torch
    >>> from monai.data import MetaTensor
    >>> class Bright(torch.nn.Module):  # "liver" = bright pixels
    ...     image_size = 32
    ...     def forward(self, x): return (x - 0.6) * 20
    >>> vol = MetaTensor(torch.full((1, 40, 30, 6), -1000.0), affine=torch.diag(torch.tensor([-1.0, -1, 2, 1])))
    >>> vol[0, 10:20, 5:15, 2:4] = 200.0
    >>> mask = VolumeSliceInferer(batch_size=4)(vol, Bright())
    >>> tuple(mask.shape), int(mask.sum()), torch.equal(mask.affine, vol.affine)
    ((1, 40, 30, 6), 200, True)
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.transforms import Resize
from torch import nn

from sam_mix_monai.inference.geometry import AxialGeometry
from sam_mix_monai.inference.predictor import SlicePredictor
from sam_mix_monai.inference.progress import SliceProgress
from sam_mix_monai.transforms import DEFAULT_WINDOW, HUWindow

__all__ = ["VolumeSliceInferer", "volume_array"]


def volume_array(volume: torch.Tensor | np.ndarray) -> np.ndarray:
    """The spatial ``(X, Y, Z)`` array of a channel-first volume, without copying (memory maps stay maps)."""
    arr = volume.as_tensor() if isinstance(volume, MetaTensor) else volume
    if isinstance(arr, torch.Tensor):
        arr = arr.detach().cpu().numpy()
    arr = np.asarray(arr)
    if arr.ndim != 4 or arr.shape[0] != 1:
        raise ValueError(f"expected a channel-first volume (1, X, Y, Z), got shape {arr.shape}")
    return arr[0]


class VolumeSliceInferer(Inferer):
    """MONAI inferer that segments a whole CT volume slice by slice on its own grid.

    Named apart from :class:`monai.inferers.SliceInferer` (which runs a 2D network over the slices
    of a tensor already in memory): this one reorients, windows, streams and gates the slices.

    ``inferer(volume, network)`` takes a ``(1, X, Y, Z)`` HU MetaTensor (any header orientation) and
    returns a ``(1, X, Y, Z)`` ``uint8`` MetaTensor mask with the same affine. Per canonical slice,
    ``meta["liver_prob"]`` and ``meta["chosen_iou"]`` hold the classifier probability and SAM's IoU
    prediction (``None`` for networks without them), ``meta["slice_axis"]`` the array axis along
    canonical z and ``meta["slice_flipped"]`` whether it runs inferior-wards.

    Args:
        image_size: side the slices are resized to: the training data's slice size (``sam-mix convert
            --image-size``); a network with another input size resizes them itself, as in training
            (``None``: the network's input size).
        batch_size: slices per forward pass (and per streamed chunk).
        window: HU window (centre, width) used in training (paper: 40, 400).
        threshold: logit threshold of the mask (0 = probability 0.5).
        cls_threshold: classifier gate (``None``: the network's own).
        device: device to run the network on (``None``: the network's).
        precision: ``fp32``, ``bf16`` or ``fp16`` (autocast; see :class:`.predictor.SlicePredictor`).
        progress: show a progress bar over slices.
        probabilities: also return the liver probability (sigmoid of the logits, resized like the
            mask) as a ``float16`` array on the input grid in ``meta["probabilities"]``.
        prompt_mode: a SAM-Mix's prompts: ``volume`` (one 3D prompt per volume, :mod:`.volume_mode`),
            ``slice`` (per slice, the steps above) or ``None`` (the predictor's / model's own).
        z_step_mm: volume prompt mode only: the networks run on slices about this far apart and the
            slices between are interpolated (:func:`.volume_mode.segment_volume_prompt`; ``0``: every slice).
    """

    def __init__(
        self,
        image_size: int | None = None,
        batch_size: int = 8,
        window: Sequence[float] = DEFAULT_WINDOW,
        threshold: float = 0.0,
        cls_threshold: float | None = None,
        device: torch.device | str | None = None,
        precision: str = "fp32",
        progress: bool = False,
        probabilities: bool = False,
        prompt_mode: str | None = None,
        z_step_mm: float = 0.0,
    ) -> None:
        super().__init__()
        if not float(z_step_mm) >= 0:
            raise ValueError(f"z_step_mm must be 0 or more, got {z_step_mm}")
        self.z_step_mm = float(z_step_mm)
        if prompt_mode not in (None, "volume", "slice"):
            raise ValueError(f"prompt_mode must be volume or slice, got {prompt_mode!r}")
        self.prompt_mode = prompt_mode
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.image_size = None if image_size is None else int(image_size)
        self.batch_size = int(batch_size)
        self.window = HUWindow(float(window[0]), float(window[1]))
        self.window_params = (float(window[0]), float(window[1]))
        self.threshold = float(threshold)
        self.cls_threshold = cls_threshold
        self.device = device
        self.precision = precision
        self.progress = progress
        self.probabilities = probabilities

    def predictor(self, network: nn.Module | SlicePredictor) -> SlicePredictor:
        """Wrap ``network`` (a no-op for a :class:`SlicePredictor`)."""
        if isinstance(network, SlicePredictor):
            return network
        return SlicePredictor(network, cls_threshold=self.cls_threshold, device=self.device, precision=self.precision,
                              prompt_mode=self.prompt_mode)

    def preprocess(self, slab: np.ndarray, size: int) -> torch.Tensor:
        """HU display slices ``(k, H, W)`` -> network input ``(k, 1, size, size)`` in [0, 1]."""
        x = self.window(torch.from_numpy(slab).float())
        if tuple(x.shape[-2:]) != (size, size):
            x = Resize(spatial_size=(size, size), mode="bilinear")(x)
        if isinstance(x, MetaTensor):  # a plain tensor: MetaTensor's __torch_function__ would slow every op
            x = x.as_tensor()
        return x.unsqueeze(1).contiguous()

    def postprocess(self, logits: torch.Tensor, slice_shape: tuple[int, int]) -> np.ndarray:
        """Network logits ``(k, 1, S, S)`` -> ``uint8`` display masks ``(k, H, W)`` at the slice size."""
        out = np.zeros((logits.shape[0], *slice_shape), dtype=np.uint8)
        live = torch.nonzero(logits.flatten(1).amax(1) > self.threshold).flatten()  # skip empty slices
        if live.numel():
            up = logits[live]
            if tuple(up.shape[-2:]) != tuple(slice_shape):
                up = F.interpolate(up, size=slice_shape, mode="bilinear", align_corners=False)
            out[live.numpy()] = (up[:, 0] > self.threshold).numpy()
        return out

    def probability(self, logits: torch.Tensor, slice_shape: tuple[int, int]) -> np.ndarray:
        """Network logits ``(k, 1, S, S)`` -> ``float16`` display probabilities ``(k, H, W)`` at the slice size."""
        up = logits.float()
        if tuple(up.shape[-2:]) != tuple(slice_shape):
            up = F.interpolate(up, size=slice_shape, mode="bilinear", align_corners=False)
        return torch.sigmoid(up[:, 0]).numpy().astype(np.float16)

    def _batch(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> MetaTensor:
        affine = inputs.affine if isinstance(inputs, MetaTensor) else torch.eye(4, dtype=torch.float64)
        plain = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        outs = []
        for b in range(plain.shape[0]):
            item_affine = affine[b] if affine.ndim == 3 else affine
            outs.append(self(MetaTensor(plain[b], affine=item_affine), network, *args, **kwargs))
        return MetaTensor(torch.stack([o.as_tensor() for o in outs]), affine=torch.stack([o.affine for o in outs]))

    def __call__(
        self,
        inputs: torch.Tensor,
        network: nn.Module | SlicePredictor | Callable[..., Any],
        *args: Any,
        **kwargs: Any,
    ) -> MetaTensor:
        """Segment ``inputs`` with ``network``.

        ``inputs`` is a ``(1, X, Y, Z)`` HU volume, or a batch ``(B, 1, X, Y, Z)`` of them (what MONAI
        Label and ``monai.bundle`` workflows pass); a batch gives a ``(B, 1, X, Y, Z)`` mask, each item on
        its own affine (a batched MetaTensor's ``(B, 4, 4)`` affine, or one shared ``(4, 4)``).
        """
        if inputs.ndim == 5:
            return self._batch(inputs, network, *args, **kwargs)
        predictor = self.predictor(network)
        mode = predictor.prompt_mode if self.prompt_mode is None or predictor.sam_mix is None else self.prompt_mode
        if mode == "volume":
            return self._volume_mode(inputs, predictor)
        size = self.image_size or predictor.image_size
        if size is None:
            raise ValueError("the network does not declare its input size: pass image_size to VolumeSliceInferer")
        arr = volume_array(inputs)
        affine = np.asarray(inputs.affine, dtype=np.float64) if isinstance(inputs, MetaTensor) else np.eye(4)
        geo = AxialGeometry(affine, arr.shape)
        mask = np.zeros(arr.shape, dtype=np.uint8, order="F")  # NIfTI's order: written without a copy
        prob = np.full(geo.depth, np.nan, dtype=np.float32) if predictor.has_scores else None
        iou = np.full(geo.depth, np.nan, dtype=np.float32) if predictor.has_scores else None
        probs = np.zeros(arr.shape, dtype=np.float16, order="F") if self.probabilities else None
        name = str(inputs.meta.get("filename_or_obj", "volume")) if isinstance(inputs, MetaTensor) else "volume"
        bar = SliceProgress(geo.depth, self.progress, name)  # remaining time; a warning above 1000 slices
        try:
            for z0 in range(0, geo.depth, self.batch_size):
                z1 = min(z0 + self.batch_size, geo.depth)
                x = self.preprocess(geo.read_slab(arr, z0, z1), size)
                out = predictor(x)
                geo.write_slab(mask, self.postprocess(out.logits, geo.slice_shape), z0, z1)
                if probs is not None:
                    geo.write_slab(probs, self.probability(out.logits, geo.slice_shape), z0, z1)
                if prob is not None and out.liver_prob is not None:
                    prob[z0:z1] = out.liver_prob.numpy()
                    iou[z0:z1] = out.chosen_iou.numpy()
                bar.update(z1 - z0)
        finally:
            bar.close()
        return self._output(inputs, mask, affine, geo, liver_prob=prob, chosen_iou=iou, probabilities=probs)

    @staticmethod
    def _output(inputs: torch.Tensor, mask: np.ndarray, affine: np.ndarray, geo: AxialGeometry, **meta: Any) -> MetaTensor:
        """The ``(1, X, Y, Z)`` mask MetaTensor with the input's meta data and ``meta``."""
        out = {k: v for k, v in inputs.meta.items() if k != "affine"} if isinstance(inputs, MetaTensor) else {}
        out.update(meta, slice_axis=geo.axis, slice_flipped=geo.flipped)
        return MetaTensor(torch.from_numpy(mask)[None], affine=torch.as_tensor(affine), meta=out)

    def _volume_mode(self, inputs: torch.Tensor, predictor: SlicePredictor) -> MetaTensor:
        """A SAM-Mix in volume prompt mode (:func:`.volume_mode.segment_volume_prompt`)."""
        from sam_mix_monai.inference.intensity_filter import IntensityFilterSettings
        from sam_mix_monai.inference.intensity_gate import IntensityGateSettings
        from sam_mix_monai.inference.volume_mode import segment_volume_prompt  # it builds on this module

        gate = IntensityGateSettings(enabled=bool(getattr(predictor.sam_mix, "intensity_gate", True)))
        mask_filter = IntensityFilterSettings(enabled=bool(getattr(predictor.sam_mix, "intensity_filter", True)))
        res = segment_volume_prompt(inputs, predictor.sam_mix, self, evidence=predictor.volume_evidence,
                                    precision=predictor.precision, probabilities=self.probabilities,
                                    cls_threshold=predictor.cls_threshold, z_step_mm=self.z_step_mm, gate=gate,
                                    mask_filter=mask_filter)
        affine = np.asarray(inputs.affine, dtype=np.float64) if isinstance(inputs, MetaTensor) else np.eye(4)
        return self._output(inputs, res.mask, affine, AxialGeometry(affine, res.mask.shape), liver_prob=res.liver_prob,
                            chosen_iou=res.chosen_iou, probabilities=res.probabilities, volume_prompt=res.prompt,
                            encoded_slices=res.encoded, prompt_mode="volume", evidence=res.evidence)
