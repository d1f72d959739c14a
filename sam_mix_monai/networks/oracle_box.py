"""SAM prompted by the reference mask's tight box on each slice: the "SAM, oracle box" upper bound.

Not a method (the box comes from the label), but the ceiling that SAM-Mix's automatic prompts
approach: with a perfect box, how well does this SAM segment? The authors' follow-up code
(tbwa233/ADA-SAM) evaluates exactly this way. The decoder's single-mask output is used
(``multimask_output=False``, LiteMedSAM's and MedSAM's box inference); slices whose reference is
empty get no prompt and an empty prediction.

The engines give the box: :func:`sam_mix_monai.engines.batch.run_network` reads ``box_prompted`` and
passes :func:`.cam.mask_to_box` of the reference mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sam_mix_monai.networks.baselines import PromptedSAM
from sam_mix_monai.networks.decoding import decode_paired, sam_encode
from sam_mix_monai.networks.single_output import GATED_LOGIT

__all__ = ["SAMBox"]


class SAMBox(PromptedSAM):
    """SAM with one box per slice (single-mask output).

    Args:
        sam: SAM from :func:`.sam_builder.build_sam`.

    Attributes:
        box_prompted: capability flag the engines read: ``forward(image, boxes, present)`` takes the
            reference's box per slice.
    """

    box_prompted = True

    def forward(self, image: torch.Tensor, boxes: torch.Tensor, present: torch.Tensor) -> dict[str, torch.Tensor]:
        """Segment slices from one box each.

        Args:
            image: (B, 1, H, W) slices in [0, 1] (resized to ``image_size`` when needed).
            boxes: (B, 4) boxes (x1, y1, x2, y2) in input pixels.
            present: (B,) bool: the slice has a box (else its prediction is empty).

        Returns:
            dict with ``mask_logits`` (B, 1, H, W) and ``iou_pred`` (B, 1); ``boxes`` (B, 4) in SAM input pixels.
        """
        in_size = image.shape[-2:]
        s = self.image_size
        scale = torch.tensor([s / in_size[1], s / in_size[0]] * 2, dtype=torch.float32, device=image.device)
        b = boxes.float() * scale
        logits = torch.full((image.shape[0], 1, *in_size), GATED_LOGIT, device=image.device)
        iou = torch.zeros(image.shape[0], 1, device=image.device)
        keep = torch.nonzero(present).flatten()
        if keep.numel():  # SAM runs on the slices with a box only
            x = image[keep]
            if tuple(in_size) != (s, s):
                x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
            emb = sam_encode(self.sam, x)
            sparse, dense = self.sam.prompt_encoder(points=None, boxes=b[keep], masks=None)
            low, iou_k = decode_paired(self.sam.mask_decoder, emb, self.sam.prompt_encoder.get_dense_pe(), sparse, dense,
                                       multimask_output=False)
            logits[keep] = F.interpolate(low, size=in_size, mode="bilinear", align_corners=False).to(logits.dtype)
            iou[keep] = iou_k.to(iou.dtype)
        return {"mask_logits": logits, "iou_pred": iou, "boxes": b}
