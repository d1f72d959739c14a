"""SAM-Mix on a whole CT in volume prompt mode: one consistent 3D prompt, the SAM on every slice of it.

The per-slice mode (the paper's; :class:`.volume.VolumeSliceInferer`) prompts each slice with its own
CAM box. Here (:func:`segment_volume_prompt`):

1. **classifier pass** over every slice (cheap: the compact ResNet-38 at the training slice size):
   each slice's liver probability and, for ``cam`` evidence, its GradCAM;
2. **encoder**, only where needed, each slice at most once: with ``head`` evidence (the liver head on
   the SAM embedding, :mod:`sam_mix_monai.networks.liver_head`) the slices of the classifier's liver
   run grown by ``search_mm`` on each side, grown again while the head's liver touches an end of the
   encoded range; with ``cam`` evidence only the slices of the prompt's range;
3. **3D prompt** from the evidence, first gated by the scan's own liver intensity
   (:func:`.intensity_gate.intensity_gate`: the HU of the strongest evidence), then
   :func:`.volume_prompt.volume_prompt` (longest run, 3D largest component, smooth edges in mm, margin);
4. **decoder** per slice of the range on the cached embeddings with that slice's box (LiteMedSAM's
   single-mask output, as its official box inference), the logits resized back to the slice;
5. **intensity filter** on the masks (:func:`.intensity_filter.intensity_filter`: the masked pixels
   outside the HU window of the whole mask are taken out, enclosed holes kept).

With ``z_step_mm`` (``sam-mix infer --fast`` on thin slices) steps 2 to 4 run only on every ``k``-th
slice (``k`` the most whole slices within ``z_step_mm``), plus the ends of each range: the head
evidence and SAM's logits of the slices between are interpolated linearly in z. This changes the
masks (``docs/benchmarks.md`` gives the measured Dice change); ``0`` runs every slice.

Slices are prepared exactly as in training and in the per-slice mode (HU window, bilinear resize to
the training slice size): boxes live in that frame and are mapped to slice pixels by its scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from sam_mix_monai.inference.geometry import AxialGeometry
from sam_mix_monai.inference.intensity_filter import IntensityFilterSettings, intensity_filter
from sam_mix_monai.inference.intensity_gate import IntensityGateSettings, intensity_gate
from sam_mix_monai.inference.progress import SliceProgress
from sam_mix_monai.inference.volume import VolumeSliceInferer, volume_array
from sam_mix_monai.inference.volume_prompt import (
    VolumePrompt, VolumePromptSettings, evidence_threshold, volume_prompt, window_slices,
)
from sam_mix_monai.networks.decoding import sam_decode, sam_encode
from sam_mix_monai.transforms.window import window_bounds
from sam_mix_monai.utils.precision import autocast

__all__ = ["EVIDENCE", "VolumeModeResult", "resolve_evidence", "segment_given_prompt", "segment_volume_prompt", "z_stride"]

#: Per-slice evidence a volume prompt can come from.
EVIDENCE = ("head", "cam")
#: Minimum liver area (mm^2) of a slice's head evidence for the slice to count as liver.
MIN_AREA_MM2 = 150.0
#: How the encoded slices' embeddings are held until decoding: float16 halves the volume mode's largest
#: buffer (4 MB a slice of LiteMedSAM in fp32); the networks read them back as fp32.
STORE_DTYPE = torch.float16


@dataclass
class VolumeModeResult:
    """A volume-mode segmentation on the input grid.

    Attributes:
        mask: ``(X, Y, Z)`` ``uint8``.
        probabilities: ``(X, Y, Z)`` ``float16`` sigmoid of the SAM logits (0 outside the range and where the
            intensity filter took a pixel out), or ``None``.
        liver_prob: per canonical slice classifier probability.
        chosen_iou: per canonical slice SAM's predicted IoU (NaN outside the prompted range).
        prompt: the 3D prompt (boxes in slice pixels of the canonical slices).
        encoded: canonical slices the image encoder ran on (each once).
        evidence: ``head`` or ``cam``.
    """

    mask: np.ndarray
    probabilities: np.ndarray | None
    liver_prob: np.ndarray
    chosen_iou: np.ndarray
    prompt: VolumePrompt
    encoded: list[int] = field(default_factory=list)
    evidence: str = "head"


def resolve_evidence(model: Any, evidence: str = "auto") -> str:
    """``auto`` -> ``head`` when ``model`` has a liver head, else ``cam``; a named one is checked."""
    has_head = getattr(model, "liver_head", None) is not None
    if evidence == "auto":
        return "head" if has_head else "cam"
    if evidence not in EVIDENCE:
        raise ValueError(f"volume evidence must be auto, head or cam, got {evidence!r}")
    if evidence == "head" and not has_head:
        raise ValueError("volume evidence 'head' needs a SAM-Mix with a liver head (model.liver_head)")
    return evidence


class _Slices:
    """The volume's canonical slices, prepared on demand and encoded at most once each."""

    @classmethod
    def of(cls, volume: Any, model: Any, inferer: VolumeSliceInferer, precision: str) -> "_Slices":
        """The slices of a ``(1, X, Y, Z)`` HU volume, prepared for ``model`` as ``inferer`` prepares them."""
        arr = volume_array(volume)
        affine = np.asarray(volume.affine, dtype=np.float64) if hasattr(volume, "affine") else np.eye(4)
        size = inferer.image_size or model.image_size
        return cls(model, inferer, arr, AxialGeometry(affine, arr.shape), size, next(model.parameters()).device, precision)

    def to_grid(self, stack: np.ndarray, dtype: Any) -> np.ndarray:
        """A ``(D, H, W)`` stack of canonical slices on the input's ``(X, Y, Z)`` grid."""
        out = np.zeros(self.arr.shape, dtype=dtype, order="F")
        self.geo.write_slab(out, stack, 0, self.geo.depth)
        return out

    def __init__(self, model: Any, inferer: VolumeSliceInferer, arr: np.ndarray, geo: AxialGeometry, size: int,
                 device: torch.device, precision: str) -> None:
        self.model, self.inferer, self.arr, self.geo, self.size = model, inferer, arr, geo, size
        self.device, self.precision = device, precision
        self.embeddings: dict[int, torch.Tensor] = {}
        # every slice is prepared once (the classifier pass reads them all) and kept for the encoder and the
        # intensity gate: about 0.26 MB a 256 px slice on the CPU
        self.prepared: dict[int, torch.Tensor] = {}

    def hu(self, z: int) -> np.ndarray:
        """Slice ``z`` as the networks see it (windowed, at the training slice size), back in HU.

        The intensity gate reads these pixels, not the original ones: the evidence covers exactly them, and a
        volume put back together from a slice store (:mod:`.store_volumes`) then gates as its NIfTI does.
        """
        low, _ = window_bounds(self.inferer.window.center, self.inferer.window.width)
        return low + self.images(z, z + 1)[0, 0].float().cpu().numpy() * np.float32(self.inferer.window.width)

    def images(self, z0: int, z1: int) -> torch.Tensor:
        """Network input ``(k, 1, S, S)`` of slices ``z0 .. z1 - 1`` (each prepared once, then kept)."""
        if any(z not in self.prepared for z in range(z0, z1)):
            x = self.inferer.preprocess(self.geo.read_slab(self.arr, z0, z1), self.size)
            self.prepared.update({z: x[i : i + 1] for i, z in enumerate(range(z0, z1))})
        return torch.cat([self.prepared[z] for z in range(z0, z1)]).to(self.device)

    def embedding(self, z: int) -> torch.Tensor:
        """The fp32 embedding of encoded slice ``z``."""
        return self.embeddings[z].float()

    def encode(self, zs: Sequence[int], bar: Any = None) -> None:
        """Encode the slices of ``zs`` not yet encoded, in batches of the inferer's batch size."""
        todo = [z for z in zs if z not in self.embeddings]
        b = self.inferer.batch_size
        for i in range(0, len(todo), b):
            chunk = todo[i : i + b]
            x = torch.cat([self.images(z, z + 1) for z in chunk])
            with autocast(self.precision, self.device):
                emb = sam_encode(self.model.sam, x).float()
            for z, e in zip(chunk, emb):
                self.embeddings[z] = e.to(STORE_DTYPE)
            if bar is not None:
                bar.update(len(chunk))


@torch.no_grad()
def _classifier_pass(model: Any, slices: _Slices, want_cam: bool, grid: int,
                     progress: SliceProgress) -> tuple[np.ndarray, np.ndarray | None]:
    """Liver probability of every slice, and its CAM on a ``grid`` x ``grid`` map when asked for."""
    depth = slices.geo.depth
    prob = np.zeros(depth, dtype=np.float32)
    cams = np.zeros((depth, grid, grid), dtype=np.float32) if want_cam else None
    b = slices.inferer.batch_size
    for z0 in range(0, depth, b):
        z1 = min(z0 + b, depth)
        with autocast(slices.precision, slices.device):
            if cams is None:  # head evidence: the liver probability alone (no CAM prompts)
                prob[z0:z1] = model.slice_liver_prob(slices.images(z0, z1)).float().cpu().numpy()
            else:
                p = model.prompt(slices.images(z0, z1))
                prob[z0:z1] = p["liver_prob"].float().cpu().numpy()
                cams[z0:z1] = F.adaptive_avg_pool2d(p["cam"].float(), grid)[:, 0].cpu().numpy()
        progress.update(z1 - z0)
    return prob, cams


def _head_map(model: Any, slices: _Slices, z: int) -> np.ndarray:
    """Sigmoid of the liver head on the embedding of slice ``z`` (encoded already)."""
    return torch.sigmoid(model.liver_head(slices.embedding(z)[None]))[0, 0].float().cpu().numpy()


def _head_evidence(model: Any, slices: _Slices, zs: Sequence[int], out: np.ndarray | None) -> np.ndarray:
    """Sigmoid of the liver head on the embeddings of ``zs``, written into ``out[z]`` (allocated on first use)."""
    for z in zs:
        p = _head_map(model, slices, z)
        if out is None:
            out = np.zeros((slices.geo.depth, *p.shape), dtype=np.float32)
        out[z] = p
    return out


def z_stride(z_step_mm: float, dz: float) -> int:
    """The slice stride of ``z_step_mm``: the most whole slices of ``dz`` mm within it (at least 1)."""
    return max(1, int(float(z_step_mm) / max(float(dz), 1e-6) + 1e-6)) if z_step_mm > 0 else 1


def _lattice(z0: int, z1: int, stride: int) -> list[int]:
    """The slices of ``z0 .. z1`` a stride runs on: every ``stride``-th of the volume, and both ends."""
    return sorted({z for z in range(z0, z1 + 1) if z % stride == 0} | {z0, z1})


def _fill_z(stack: np.ndarray, have: Sequence[int]) -> None:
    """Fill ``stack``'s slices strictly between consecutive ``have`` slices by linear interpolation in z (in place)."""
    # By hand rather than scipy's interp1d: the same few lines serve NumPy maps and torch logits, in place,
    # without copying the whole stack into a new array.
    have = sorted(have)
    for a, b in zip(have[:-1], have[1:]):
        for z in range(a + 1, b):
            w = (z - a) / (b - a)
            stack[z] = (1.0 - w) * stack[a] + w * stack[b]


def _search_range(prob: np.ndarray, threshold: float, dz: float, search_mm: float) -> tuple[int, int]:
    """The classifier's liver slices grown by ``search_mm`` on each side (the whole volume without any)."""
    depth = prob.shape[0]
    zs = np.flatnonzero(prob >= threshold)
    if zs.size == 0:
        return 0, depth - 1
    pad = window_slices(search_mm, dz) // 2
    return max(0, int(zs[0]) - pad), min(depth - 1, int(zs[-1]) + pad)


@torch.no_grad()
def segment_volume_prompt(
    volume: Any,
    model: Any,
    inferer: VolumeSliceInferer,
    evidence: str = "auto",
    settings: VolumePromptSettings = VolumePromptSettings(),
    search_mm: float = 40.0,
    precision: str = "fp32",
    z_step_mm: float = 0.0,
    probabilities: bool = False,
    cls_threshold: float | None = None,
    gate: IntensityGateSettings = IntensityGateSettings(),
    mask_filter: IntensityFilterSettings = IntensityFilterSettings(),
) -> VolumeModeResult:
    """Segment a ``(1, X, Y, Z)`` HU volume with a SAM-Mix in volume prompt mode (module docstring).

    Args:
        volume: HU MetaTensor (any header orientation).
        model: a :class:`~sam_mix_monai.networks.SAMMix` (eval mode).
        inferer: supplies the slice preparation (window, training slice size), batch size and progress.
        evidence: ``auto``, ``head`` or ``cam`` (:func:`resolve_evidence`).
        settings: the 3D prompt's thresholds and windows.
        search_mm: with ``head`` evidence, how far beyond the classifier's liver slices to encode.
        precision: autocast precision of the networks.
        z_step_mm: run the encoder and decoder on slices about this far apart and interpolate between
            them (module docstring; ``0``: every slice).
        probabilities: also return the SAM's sigmoid on the input grid.
        cls_threshold: the classifier's liver-probability gate (``None``: the model's own): the liver
            slices of ``cam`` evidence, the search range of ``head`` evidence.
        gate: the intensity gate on the evidence (:mod:`.intensity_gate`; ``enabled=False``: none).
        mask_filter: the intensity filter on SAM's masks (:mod:`.intensity_filter`; ``enabled=False``: none).

    Returns:
        The :class:`VolumeModeResult`.
    """
    evidence = resolve_evidence(model, evidence)
    slices = _Slices.of(volume, model, inferer, precision)
    geo, size = slices.geo, slices.size
    depth, (big_h, big_w) = geo.depth, geo.slice_shape
    sx, sy, dz = geo.ras_spacing
    stride = z_stride(z_step_mm, dz)
    spacing = (float(sy), float(sx), float(dz))  # rows run along y, columns along x
    grid = max(1, size // 4)  # the CAM's evidence grid (LiteMedSAM's embedding grid at 256)

    def gated(ev: np.ndarray, zs: Sequence[int]) -> np.ndarray:
        cell_ml = (big_h / ev.shape[1]) * spacing[0] * (big_w / ev.shape[2]) * spacing[1] * dz / 1000.0
        return intensity_gate(ev, slices.hu, zs, cell_ml, evidence_threshold(ev, settings), gate)

    name = str(getattr(volume, "meta", {}).get("filename_or_obj") or "volume")
    cls_bar = SliceProgress(depth, inferer.progress, name)  # remaining time; a warning above 1000 slices
    bar = tqdm(total=depth, desc="encoder", unit="slice", leave=False, disable=not inferer.progress)
    try:
        prob, cams = _classifier_pass(model, slices, evidence == "cam", grid, cls_bar)
        if cls_threshold is None:
            cls_threshold = float(getattr(model, "cls_threshold", 0.5))
        if evidence == "cam":
            liver = prob >= cls_threshold
            prompt = volume_prompt(gated(cams, np.flatnonzero(liver)), liver, spacing, (big_h, big_w), settings)
        else:
            ev = None
            lo, hi = _search_range(prob, cls_threshold, dz, search_mm)
            step = window_slices(search_mm, dz) // 2 + 1
            while True:
                zs = [z for z in _lattice(lo, hi, stride) if z not in slices.embeddings]
                slices.encode(zs, bar)
                ev = _head_evidence(model, slices, zs, ev)
                if stride > 1:
                    _fill_z(ev, slices.embeddings)
                cell_mm2 = (big_h / ev.shape[1]) * spacing[0] * (big_w / ev.shape[2]) * spacing[1]
                kept = gated(ev, range(lo, hi + 1))
                present = (kept >= evidence_threshold(kept, settings)).sum(axis=(1, 2)) * cell_mm2 >= MIN_AREA_MM2
                prompt = volume_prompt(kept, present, spacing, (big_h, big_w), settings)
                grow_lo = not prompt.empty and prompt.z0 <= lo and lo > 0
                grow_hi = not prompt.empty and prompt.z1 >= hi and hi < depth - 1
                if not (grow_lo or grow_hi):
                    break
                lo, hi = (max(0, lo - step) if grow_lo else lo), (min(depth - 1, hi + step) if grow_hi else hi)
        masks, probs, iou = _decode(model, slices, prompt, size, (big_h, big_w), inferer, probabilities, bar, stride)
        filtered, _ = intensity_filter(masks, lambda z: geo.read_slab(slices.arr, z, z + 1)[0], spacing[:2], mask_filter)
        if probs is not None:  # the pixels the filter took out are not liver: probability 0
            probs[(masks > 0) & (filtered == 0)] = 0
        masks = filtered
    finally:
        cls_bar.close()
        bar.close()
    prob_img = None if probs is None else slices.to_grid(probs, np.float16)
    return VolumeModeResult(slices.to_grid(masks, np.uint8), prob_img, prob, iou, prompt, sorted(slices.embeddings),
                            evidence)


@torch.no_grad()
def segment_given_prompt(volume: Any, model: Any, inferer: VolumeSliceInferer, prompt: VolumePrompt,
                         precision: str = "fp32") -> np.ndarray:
    """Decode a given 3D prompt (e.g. the reference's boxes: the oracle row) with the same slice preparation.

    Returns:
        The ``(X, Y, Z)`` ``uint8`` mask on the input grid.
    """
    slices = _Slices.of(volume, model, inferer, precision)
    masks, _, _ = _decode(model, slices, prompt, slices.size, slices.geo.slice_shape, inferer, False, None)
    return slices.to_grid(masks, np.uint8)


def _decode(model: Any, slices: _Slices, prompt: VolumePrompt, size: int, hw: tuple[int, int],
            inferer: VolumeSliceInferer, probabilities: bool, bar: Any,
            stride: int = 1) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """SAM's decoder on every slice of the prompt's range (every ``stride``-th and the ends, the logits of
    the slices between interpolated in z), with that slice's box (input frame)."""
    depth = slices.geo.depth
    masks = np.zeros((depth, *hw), dtype=np.uint8)
    probs = np.zeros((depth, *hw), dtype=np.float16) if probabilities else None
    iou = np.full(depth, np.nan, dtype=np.float32)
    if prompt.empty:
        return masks, probs, iou
    zs = _lattice(prompt.z0, prompt.z1, stride)
    slices.encode(zs, bar)
    scale = np.array([size / hw[1], size / hw[0], size / hw[1], size / hw[0]])  # slice px -> input frame
    b = slices.inferer.batch_size
    logits = torch.zeros(depth, 1, size, size) if stride > 1 else None
    for i in range(0, len(zs), b):
        chunk = zs[i : i + b]
        emb = torch.stack([slices.embedding(z) for z in chunk])
        boxes = torch.as_tensor(np.stack([prompt.boxes[z] * scale for z in chunk]), dtype=torch.float32, device=emb.device)
        with autocast(slices.precision, slices.device):
            out = sam_decode(model.sam, emb, (size, size), boxes=boxes, multimask_output=False)
        iou[chunk] = out["chosen_iou"].float().cpu().numpy()
        if logits is not None:
            logits[chunk] = out["mask_logits"].float().cpu()
        else:
            _write_masks(out["mask_logits"].float().cpu(), chunk, inferer, hw, masks, probs)
    if logits is not None:  # the slices between: logits and predicted IoU interpolated in z
        _fill_z(logits, zs)
        _fill_z(iou, zs)
        every = list(prompt.slices())
        for i in range(0, len(every), b):
            chunk = every[i : i + b]
            _write_masks(logits[chunk], chunk, inferer, hw, masks, probs)
    return masks, probs, iou


def _write_masks(logits: torch.Tensor, chunk: Sequence[int], inferer: VolumeSliceInferer, hw: tuple[int, int],
                 masks: np.ndarray, probs: np.ndarray | None) -> None:
    """The slices ``chunk``'s masks (and probabilities) from their ``(k, 1, S, S)`` logits, on the slice size."""
    masks[chunk] = inferer.postprocess(logits, hw)
    if probs is not None:
        probs[chunk] = inferer.probability(logits, hw)
