"""SAM-Mix: a ResNet-38 liver classifier whose GradCAM prompts a LoRA-adapted SAM.

::

    slice ─┬─> SAM image encoder ─────────────────────────────> mask decoder ─> 3 masks + IoU ─> best mask
           └─> ResNet-38 ─> class logits                              ^   ^
                  └─> closed-form GradCAM ─> threshold + LCC ─> CAM mask (dense prompt)
                                                   └──────────> box (sparse prompt)

The prompt path is computed without gradients (it is thresholded anyway): the classifier learns
from its own classification loss only, SAM from the segmentation loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from torch import nn

from sam_mix_monai.networks.cam import cam_prompts, closed_form_gradcam
from sam_mix_monai.networks.classifier import ResNet38
from sam_mix_monai.networks.decoding import sam_forward

__all__ = ["SAMMix"]

LIVER = 1


class SAMMix(nn.Module):
    """Dual-branch SAM-Mix network.

    Args:
        classifier: liver-presence classifier returning ``(logits, features)`` with a GAP + linear head.
        sam: SAM built by :func:`.sam_builder.build_sam` (encoder mode already configured).
        cam_threshold: threshold on the min-max normalised CAM.
        cls_threshold: liver probability below which a slice counts as liver-free (used by
            :class:`.inference.SAMMixInference`; reported here as ``liver_present``).
        lcc_iterations: label-propagation rounds of the connected-component step (``None`` = h + w).
        fallback_fraction: side fraction of the central box used when the thresholded CAM is empty.
        use_box: feed the CAM box as the sparse prompt (``False``: "mask-only" ablation).
        use_mask: feed the CAM mask as the dense prompt (``False``: "box-only" ablation).
    """

    def __init__(
        self,
        classifier: ResNet38,
        sam: Sam,
        cam_threshold: float = 0.4,
        cls_threshold: float = 0.5,
        lcc_iterations: int | None = None,
        fallback_fraction: float = 0.5,
        use_box: bool = True,
        use_mask: bool = True,
    ) -> None:
        super().__init__()
        if not (use_box or use_mask):
            raise ValueError("SAM-Mix needs at least one prompt (box or mask)")
        self.classifier = classifier
        self.sam = sam
        self.cam_threshold = cam_threshold
        self.cls_threshold = cls_threshold
        self.lcc_iterations = lcc_iterations
        self.fallback_fraction = fallback_fraction
        self.use_box = use_box
        self.use_mask = use_mask

    @property
    def image_size(self) -> int:
        """Square input size of the SAM branch (and of the classifier)."""
        return int(self.sam.image_encoder.img_size)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Segment a batch of slices.

        Args:
            image: (B, 1, H, W) CT slices in [0, 1]; resized (bilinear) to ``image_size`` when needed.

        Returns:
            dict of tensors (``S = image_size``):

            - ``mask_logits`` (B, 1, H, W): logits of the mask with the highest predicted IoU;
            - ``all_mask_logits`` (B, 3, H, W), ``iou_pred`` (B, 3), ``chosen_iou`` (B,);
            - ``low_res_logits`` (B, 1, S/4, S/4): chosen mask at the decoder's resolution;
            - ``class_logits`` (B, 2) (index 1 = liver), ``liver_prob`` (B,), ``liver_present`` (B,) bool;
            - ``cam`` (B, 1, H, W) min-max normalised GradCAM of the liver class;
            - ``cam_mask`` (B, 1, H, W) float {0, 1}: largest thresholded CAM component;
            - ``boxes`` (B, 4) (x1, y1, x2, y2) in SAM input pixels; ``box_fallback`` (B,) bool.
        """
        in_size = image.shape[-2:]
        s = self.image_size
        x = image
        if tuple(in_size) != (s, s):
            x = F.interpolate(image, size=(s, s), mode="bilinear", align_corners=False)
        class_logits, feats = self.classifier(x)
        with torch.no_grad():
            cam = closed_form_gradcam(feats.detach(), self.classifier.fc.weight.detach(), LIVER)
            prompts = cam_prompts(cam, (s, s), self.cam_threshold, self.lcc_iterations, self.fallback_fraction)
            # Area downsampling (average pooling) of the binary CAM mask to SAM's mask-input grid
            # (S/4); avg_pool2d rather than interpolate(mode="area"), which ONNX cannot export.
            factor = s // int(self.sam.prompt_encoder.mask_input_size[0])
            dense = F.avg_pool2d(prompts["cam_mask"], factor) if self.use_mask else None
            boxes = prompts["boxes"] if self.use_box else None
        out = sam_forward(self.sam, x, boxes=boxes, mask_prompt=dense)
        liver_prob = torch.softmax(class_logits.float(), dim=1)[:, LIVER]
        out.update(
            class_logits=class_logits,
            liver_prob=liver_prob,
            liver_present=liver_prob >= self.cls_threshold,
            cam=prompts["cam"],
            cam_mask=prompts["cam_mask"],
            boxes=prompts["boxes"],
            box_fallback=prompts["box_fallback"],
        )
        if tuple(in_size) != (s, s):
            for key in ("mask_logits", "all_mask_logits", "cam"):
                out[key] = F.interpolate(out[key], size=in_size, mode="bilinear", align_corners=False)
            out["cam_mask"] = F.interpolate(out["cam_mask"], size=in_size, mode="nearest")
        return out
