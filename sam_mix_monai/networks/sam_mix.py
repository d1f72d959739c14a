"""SAM-Mix: a ResNet-38 liver classifier whose GradCAM prompts a LoRA-adapted SAM.

::

    slice ─┬─> SAM image encoder ─────────────────────────────> mask decoder ─> 3 masks + IoU ─> best mask
           └─> ResNet-38 ─> class logits                              ^   ^
                  └─> closed-form GradCAM ─> threshold + LCC ─> CAM mask (dense prompt)
                                                   └──────────> box (sparse prompt)

The prompt path is computed without gradients (it is thresholded anyway): the classifier learns
from its own classification loss only, SAM from the segmentation loss.

The network runs in two public stages, which :meth:`SAMMix.forward` composes:

1. :meth:`SAMMix.prompt` (classifier, closed-form GradCAM, box and dense prompt) on every slice;
2. :meth:`SAMMix.segment` (the SAM branch) on the slices and prompts it is given.

``forward`` runs SAM on every slice (training, export); for training it also takes ``extra``
slices that share the classifier batch (FixMatch's views) and can run the classifier alone. Inference
(:class:`sam_mix_monai.inference.SlicePredictor`) runs stage 2 only on the slices whose liver
probability passes the classifier gate: the SAM branch is the expensive part, and many axial
slices of a CT hold no liver.

Example:
    >>> from sam_mix_monai.networks import ModelConfig, build_model
    >>> net = build_model(ModelConfig(size="compact", image_size=64)).eval()
    >>> with torch.no_grad():
    ...     p = net.prompt(torch.rand(3, 1, 64, 64))
    ...     keep = torch.tensor([0, 2])
    ...     out = net.segment(p["image"][keep], {k: v[keep] for k, v in p.items()})
    >>> out["mask_logits"].shape, p["boxes"].shape
    (torch.Size([2, 1, 64, 64]), torch.Size([3, 4]))
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from torch import nn

from sam_mix_monai.networks.cam import cam_prompts, clip_boxes_to_body, closed_form_gradcam, mask_cam_to_body, mask_to_box
from sam_mix_monai.networks.classifier import LIVER, ResNet38, liver_probability
from sam_mix_monai.networks.decoding import sam_decode, sam_encode, sam_forward
from sam_mix_monai.networks.liver_head import LiverHead
from sam_mix_monai.networks.single_output import GATED_LOGIT

__all__ = ["SAMMix"]

#: Prompt-stage entries :meth:`SAMMix.forward` returns (besides SAM's), in this order.
_PROMPT_OUTPUTS = ("class_logits", "liver_map", "liver_prob", "liver_present", "cam", "cam_mask", "boxes", "box_fallback")


class SAMMix(nn.Module):
    """Dual-branch SAM-Mix network.

    Args:
        classifier: liver-presence classifier returning ``(logits, features)`` with a GAP + linear head.
        sam: SAM built by :func:`.sam_builder.build_sam` (encoder mode already configured).
        cam_threshold: threshold on the min-max normalised CAM.
        cls_threshold: liver probability below which a slice counts as liver-free (used by
            :class:`.single_output.SAMMixInference`; reported here as ``liver_present``).
        lcc_iterations: label-propagation rounds of the connected-component step (``None`` = h + w).
        fallback_fraction: side fraction of the central box used when the thresholded CAM is empty.
        use_box: feed the CAM box as the sparse prompt (``False``: "mask-only" ablation).
        use_mask: feed the CAM mask as the dense prompt (``False``: "box-only" ablation).
        cam_component: thresholded CAM component kept for the prompts: ``area`` (largest), ``peak``
            (holding the CAM maximum) or ``mass`` (largest CAM sum); see :func:`.cam.select_component`.
        box_refine: decoding rounds that replace the box by the box of SAM's previous mask, grown by
            ``box_margin`` pixels (0: the CAM box only). The image is encoded once; a round whose
            mask is empty keeps the previous box.
        box_margin: pixels added on each side of a refined box (MedSAM's 3D inference uses 3).
        box_clip_body: intersect the CAM box with the body's bounding box (:func:`.cam.clip_boxes_to_body`).
        cam_inside_body: zero the CAM outside the body before its threshold (:func:`.cam.mask_cam_to_body`).
        skip_gated: in eval mode (not tracing / exporting), run SAM only on the slices that pass the
            classifier gate; the others get an empty prediction (see :meth:`forward`).
        liver_head: an optional coarse liver head on the (detached) SAM image embedding
            (:class:`.liver_head.LiverHead`); :meth:`forward` then also returns ``head_logits``.
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
        cam_component: str = "area",
        box_refine: int = 0,
        box_margin: float = 3.0,
        skip_gated: bool = False,
        box_clip_body: bool = False,
        cam_inside_body: bool = False,
        liver_head: LiverHead | None = None,
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
        self.cam_component = cam_component
        self.box_refine = int(box_refine)
        self.box_margin = float(box_margin)
        self.skip_gated = bool(skip_gated)
        self.box_clip_body = bool(box_clip_body)
        self.cam_inside_body = bool(cam_inside_body)
        self.liver_head = liver_head

    @property
    def image_size(self) -> int:
        """Square input size of the SAM branch (and of the classifier)."""
        return int(self.sam.image_encoder.img_size)

    def prompt(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Stage 1: classifier, closed-form GradCAM and the CAM prompts (no SAM).

        The class logits keep their graph (the classification loss trains the classifier); the CAM
        and the prompts derived from it are computed without gradients.

        Args:
            image: (B, 1, H, W) CT slices in [0, 1]; resized (bilinear) to ``image_size`` when needed.

        Returns:
            dict of tensors, all at the SAM input size ``S = image_size``:

            - ``image`` (B, 1, S, S): the (resized) input, what :meth:`segment` takes;
            - ``liver_map`` (B, 1, h, w): :meth:`liver_map` of the classifier's feature map (with gradients);
            - ``class_logits`` (B, 2) (index 1 = liver), ``liver_prob`` (B,) float32,
              ``liver_present`` (B,) bool (``liver_prob >= cls_threshold``);
            - ``cam`` (B, 1, S, S) min-max normalised GradCAM of the liver class;
            - ``cam_mask`` (B, 1, S, S) float {0, 1}: the kept thresholded CAM component (``cam_component``);
            - ``boxes`` (B, 4) (x1, y1, x2, y2) in SAM input pixels; ``box_fallback`` (B,) bool;
            - ``dense_prompt`` (B, 1, S/4, S/4): the CAM mask area-downsampled to SAM's mask-input grid.

            Every entry is indexed by slice along dim 0, so ``{k: v[idx] for k, v in p.items()}``
            selects the prompts of a subset of slices for :meth:`segment`.
        """
        x = self._resize_input(image)
        class_logits, feats = self.classifier(x)
        return self._prompts(x, class_logits, feats)

    def slice_liver_prob(self, image: torch.Tensor) -> torch.Tensor:
        """(B,) the classifier's liver probability of each slice: :meth:`prompt`'s ``liver_prob`` without the
        CAM prompts (their component search costs far more than the compact classifier itself)."""
        class_logits, _ = self.classifier(self._resize_input(image))
        return liver_probability(class_logits)

    def liver_map(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, 1, h, w) the liver logit of the linear head on every cell of the feature map, with gradients.

        Its spatial mean plus the bias is the liver logit, and its ReLU is the (unnormalised) GradCAM,
        so a loss on where it is high (``loss.cam_mask``) teaches the classifier where the liver is.
        """
        # The CAM (cam.closed_form_gradcam) is the ReLU of the same sum, written as a product-sum; one
        # expression for both was tried and changed the float rounding of the trained figures (the
        # ircadb_sammix_50 run's first-epoch loss 1.9235 -> 1.9279), so the two stay as measured.
        w = self.classifier.fc.weight[LIVER].to(feats.dtype)
        return torch.einsum("bkhw,k->bhw", feats, w).unsqueeze(1)

    def head_logits(self, x: torch.Tensor, embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 1, h, w) liver logits of :attr:`liver_head` on the embedding grid of the (resized) slices ``x``.

        The embedding is detached: the head learns, the encoder does not learn from it.
        """
        if self.liver_head is None:
            raise ValueError("this SAM-Mix has no liver head (model.liver_head)")
        emb = sam_encode(self.sam, x) if embeddings is None else embeddings
        return self.liver_head(emb.detach().float())

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """SAM image embeddings ``(B, C, h, w)`` of slices as :meth:`forward` computes them (resized, cached)."""
        return sam_encode(self.sam, self._resize_input(image))

    def _resize_input(self, image: torch.Tensor) -> torch.Tensor:
        """``image`` resized (bilinear) to the SAM input size (unchanged when it is already)."""
        s = self.image_size
        if tuple(image.shape[-2:]) == (s, s):
            return image
        return F.interpolate(image, size=(s, s), mode="bilinear", align_corners=False)

    def _prompts(self, x: torch.Tensor, class_logits: torch.Tensor, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        """:meth:`prompt`'s output from the classifier's logits and feature map of the slices ``x``."""
        s = self.image_size
        with torch.no_grad():
            cam = closed_form_gradcam(feats.detach(), self.classifier.fc.weight.detach(), LIVER)
            if self.cam_inside_body:
                cam = mask_cam_to_body(cam, x)
            prompts = cam_prompts(cam, (s, s), self.cam_threshold, self.lcc_iterations, self.fallback_fraction,
                                  self.cam_component)
            # Area downsampling (average pooling) of the binary CAM mask to SAM's mask-input grid
            # (S/4); avg_pool2d rather than interpolate(mode="area"), which ONNX cannot export.
            factor = s // int(self.sam.prompt_encoder.mask_input_size[0])
            dense = F.avg_pool2d(prompts["cam_mask"], factor)
        liver_prob = liver_probability(class_logits)
        return {
            "image": x,
            "liver_map": self.liver_map(feats),
            "class_logits": class_logits,
            "liver_prob": liver_prob,
            "liver_present": liver_prob >= self.cls_threshold,
            "cam": prompts["cam"],
            "cam_mask": prompts["cam_mask"],
            "boxes": clip_boxes_to_body(prompts["boxes"], x) if self.box_clip_body else prompts["boxes"],
            "box_fallback": prompts["box_fallback"],
            "dense_prompt": dense,
        }

    def segment(self, x: torch.Tensor, prompts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Stage 2: the SAM branch (:func:`.decoding.sam_forward`) prompted by :meth:`prompt`'s output.

        Args:
            x: (B, 1, S, S) slices at the SAM input size (``prompt(image)["image"]``).
            prompts: :meth:`prompt`'s output for the same B slices (``boxes`` is used when
                ``use_box``, ``dense_prompt`` when ``use_mask``; other entries are ignored).

        Returns:
            dict at the SAM input size: ``mask_logits`` (B, 1, S, S) (highest predicted IoU),
            ``all_mask_logits`` (B, 3, S, S), ``iou_pred`` (B, 3), ``chosen_iou`` (B,),
            ``low_res_logits`` (B, 1, S/4, S/4); with ``box_refine`` also ``boxes`` (B, 4), the
            refined box of the last decoding round.
        """
        boxes = prompts["boxes"] if self.use_box else None
        dense = prompts["dense_prompt"] if self.use_mask else None
        size = (int(x.shape[-2]), int(x.shape[-1]))
        embeddings = prompts.get("embeddings")  # already encoded for the liver head
        if self.box_refine < 1 or boxes is None:
            if embeddings is None:
                return sam_forward(self.sam, x, boxes=boxes, mask_prompt=dense)
            return sam_decode(self.sam, embeddings, size, boxes=boxes, mask_prompt=dense)
        if embeddings is None:
            embeddings = sam_encode(self.sam, x)
        for _ in range(self.box_refine):
            with torch.no_grad():  # the earlier rounds only place the box; the loss sees the last one
                first = sam_decode(self.sam, embeddings.detach(), size, boxes=boxes, mask_prompt=dense)
                boxes = self.refine_boxes(first["mask_logits"], boxes)
        out = sam_decode(self.sam, embeddings, size, boxes=boxes, mask_prompt=dense)
        out["boxes"] = boxes
        return out

    def refine_boxes(self, mask_logits: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """The box of each mask (logit > 0), grown by ``box_margin`` and clipped; ``boxes`` where a mask is empty.

        Args:
            mask_logits: (B, 1, S, S) mask logits at the SAM input size.
            boxes: (B, 4) current boxes (x1, y1, x2, y2), inclusive input pixels.

        Returns:
            (B, 4) boxes.
        """
        tight, empty = mask_to_box((mask_logits > 0).float())
        hi = float(mask_logits.shape[-1] - 1)
        m = self.box_margin
        grown = torch.stack([(tight[:, 0] - m).clamp_min(0.0), (tight[:, 1] - m).clamp_min(0.0),
                             (tight[:, 2] + m).clamp_max(hi), (tight[:, 3] + m).clamp_max(hi)], dim=1)
        return torch.where(empty.unsqueeze(1), boxes.to(grown.dtype), grown)

    @staticmethod
    def resize_outputs(out: dict[str, torch.Tensor], size: Sequence[int]) -> dict[str, torch.Tensor]:
        """Resize the full-resolution maps of an output dict to ``size`` (in place; returns ``out``).

        ``mask_logits``, ``all_mask_logits`` and ``cam`` are resized bilinearly, ``cam_mask`` by
        nearest neighbour; absent keys are skipped, everything else is left as it is.

        Args:
            out: output of :meth:`segment`, :meth:`prompt` or :meth:`forward` at the SAM input size.
            size: ``(H, W)`` of the caller's input.
        """
        hw = (int(size[0]), int(size[1]))
        for key in ("mask_logits", "all_mask_logits", "cam"):
            if key in out and tuple(out[key].shape[-2:]) != hw:
                out[key] = F.interpolate(out[key], size=hw, mode="bilinear", align_corners=False)
        if "cam_mask" in out and tuple(out["cam_mask"].shape[-2:]) != hw:
            out["cam_mask"] = F.interpolate(out["cam_mask"], size=hw, mode="nearest")
        return out

    def forward(self, image: torch.Tensor, extra: torch.Tensor | None = None, classify_only: bool = False,
                with_head: bool = True) -> dict[str, torch.Tensor]:
        """Segment a batch of slices: :meth:`prompt`, then :meth:`segment` on every slice.

        Every slice goes through SAM, including those the classifier calls liver-free (training and
        the exporters need them). With ``skip_gated``, in eval mode and outside tracing / export,
        SAM runs only on the slices whose liver probability passes ``cls_threshold`` (as
        :class:`sam_mix_monai.inference.SlicePredictor` does): the others get ``GATED_LOGIT`` mask
        logits (an empty mask, which is what every consumer makes of a gated slice) and zero IoU.
        With LiteMedSAM on CPU the SAM branch is most of the cost, and many slices hold no liver.

        Training options (the trainer's one-batch classifier forward, through the DDP wrapper so that
        gradients are synchronised): ``extra`` slices go through the classifier in the **same batch**
        as ``image`` (one set of batch-norm statistics, as FixMatch's reference forwards labelled,
        weak and strong views together), and only their class logits come back; ``classify_only``
        runs the classifier alone (no prompts, no SAM: a frozen SAM whose prompt path alone learns).

        Args:
            image: (B, 1, H, W) CT slices in [0, 1]; resized (bilinear) to ``image_size`` when needed.
            extra: (E, 1, H', W') further slices for the classifier only (``None``: none).
            classify_only: skip the prompts and SAM: only ``class_logits`` and ``extra_class_logits``
                are returned (and ``head_logits``).
            with_head: with a liver head, also return its ``head_logits`` for ``image`` (``False``: not
                computed; the trainer's unlabelled views, whose embeddings no cache holds).

        Returns:
            dict of tensors (``S = image_size``); ``extra_class_logits`` (E, 2) with ``extra``:

            - ``mask_logits`` (B, 1, H, W): logits of the mask with the highest predicted IoU;
            - ``all_mask_logits`` (B, 3, H, W), ``iou_pred`` (B, 3), ``chosen_iou`` (B,);
            - ``low_res_logits`` (B, 1, S/4, S/4): chosen mask at the decoder's resolution;
            - ``class_logits`` (B, 2) (index 1 = liver), ``liver_prob`` (B,), ``liver_present`` (B,) bool;
            - ``cam`` (B, 1, H, W) min-max normalised GradCAM of the liver class;
            - ``cam_mask`` (B, 1, H, W) float {0, 1}: largest thresholded CAM component;
            - ``boxes`` (B, 4) (x1, y1, x2, y2) in SAM input pixels, the box SAM's final mask came from
              (the refined one with ``box_refine``); ``box_fallback`` (B,) bool.
        """
        if extra is None and not classify_only:
            prompts = self.prompt(image)
            extra_out: dict[str, torch.Tensor] = {}
        else:
            x = self._resize_input(image)
            both = x if extra is None else torch.cat([x, self._resize_input(extra).to(x.dtype)])
            logits, feats = self.classifier(both)
            b = x.shape[0]
            extra_out = {} if extra is None else {"extra_class_logits": logits[b:]}
            if classify_only:
                if self.liver_head is not None and with_head:
                    extra_out["head_logits"] = self.head_logits(x)
                return {"class_logits": logits[:b], "liver_map": self.liver_map(feats[:b]), **extra_out}
            prompts = self._prompts(x, logits[:b], feats[:b])
        if self.liver_head is not None and with_head:  # one encoding for the head and SAM
            prompts["embeddings"] = sam_encode(self.sam, prompts["image"])
            extra_out["head_logits"] = self.head_logits(prompts["image"], prompts["embeddings"])
        present = prompts["liver_present"]
        static = not self.skip_gated or self.training or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
        if static or bool(present.all()):
            out = self.segment(prompts["image"], prompts)
        else:
            out = self._segment_passed(prompts, torch.nonzero(present).flatten())
        out.update({k: prompts[k] for k in _PROMPT_OUTPUTS if k not in out})  # a refined box stays
        out.update(extra_out)
        return self.resize_outputs(out, image.shape[-2:])

    def _segment_passed(self, prompts: dict[str, torch.Tensor], keep: torch.Tensor) -> dict[str, torch.Tensor]:
        """:meth:`segment` on the slices ``keep`` only; the gated ones filled with an empty prediction."""
        x = prompts["image"]
        b, s = x.shape[0], x.shape[-1]
        low = int(self.sam.prompt_encoder.mask_input_size[0])
        out = {
            "mask_logits": torch.full((b, 1, s, s), GATED_LOGIT, device=x.device),
            "all_mask_logits": torch.full((b, 3, s, s), GATED_LOGIT, device=x.device),
            "iou_pred": torch.zeros(b, 3, device=x.device),
            "chosen_iou": torch.zeros(b, device=x.device),
            "low_res_logits": torch.full((b, 1, low, low), GATED_LOGIT, device=x.device),
        }
        if keep.numel():
            part = self.segment(x[keep], {k: v[keep] for k, v in prompts.items()})
            if "boxes" in part:
                out["boxes"] = prompts["boxes"].clone()
            for k, v in part.items():
                out[k] = out[k].to(v.dtype)
                out[k][keep] = v
        return out
