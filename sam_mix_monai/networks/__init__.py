"""networks stage: the SAM-Mix network, its parts and baselines.

* :mod:`.classifier` wide ResNet-38 liver classifier (GAP + linear head);
* :mod:`.cam` closed-form GradCAM, threshold, largest component, box, liver gate;
* :mod:`.sam_builder` SAM configurations built from ``segment_anything`` modules, input
  normalisation per checkpoint family;
* :mod:`.lite_medsam` LiteMedSAM (package TinyViT + SAM prompt encoder / decoder), packaged weights;
* :mod:`.checkpoint` safe loading of SAM / MedSAM / LiteMedSAM checkpoints;
* :mod:`.run_checkpoint` the one reader / loader of this project's training checkpoints;
* :mod:`.box_prompt` one slice of any shape + one box: MedSAM/LiteMedSAM's inference procedure;
* :mod:`.lora` LoRA on q/v of the encoder attention, encoder modes;
* :mod:`.decoding` batched one-prompt-per-image decoding;
* :mod:`.sam_mix` the SAM-Mix module; :mod:`.single_output` its single-output (export) wrapper;
* :mod:`.baselines` U-Net, SAM-PP and its point pickers;
* :mod:`.registry` ``ModelConfig`` and ``build_model``.
"""

from sam_mix_monai.networks.baselines import SAMPP, UNetSeg, interior_point, random_point_in_mask
from sam_mix_monai.networks.cam import (
    cam_prompts,
    central_box,
    closed_form_gradcam,
    gate_logits,
    largest_component,
    select_component,
    mask_to_box,
    minmax_normalize,
)
from sam_mix_monai.networks.box_prompt import (
    BoxMask,
    PreparedSlice,
    encode_slices,
    predict_box_mask,
    predict_point_mask,
    prepare_sam_slice,
    scale_box,
)
from sam_mix_monai.networks.checkpoint import adapt_sam_state_dict, load_sam_checkpoint, read_state_dict
from sam_mix_monai.networks.classifier import LIVER, ResNet38, build_classifier, liver_probability, resnet38, resnet38_compact
from sam_mix_monai.networks.decoding import decode_paired, sam_forward, select_best_mask
from sam_mix_monai.networks.single_output import GATED_LOGIT, SAMMixInference
from sam_mix_monai.networks.run_checkpoint import TrainingCheckpoint, load_checkpoint, load_weights, read_checkpoint
from sam_mix_monai.networks.lite_medsam import build_lite_medsam_sam, packaged_lite_medsam_checkpoint
from sam_mix_monai.networks.lora import LoRAQKV, configure_encoder, inject_lora, resolve_encoder_mode
from sam_mix_monai.networks.registry import MODEL_REGISTRY, ModelConfig, build_model, register_model
from sam_mix_monai.networks.sam_builder import (
    FAMILY_PIXEL_NORM,
    SAM_SIZES,
    SAM_SPECS,
    SamSpec,
    auto_window_size,
    build_sam,
    preprocess_gray,
)
from sam_mix_monai.networks.sam_mix import SAMMix

__all__ = [
    "BoxMask",
    "FAMILY_PIXEL_NORM",
    "PreparedSlice",
    "SAM_SIZES",
    "build_lite_medsam_sam",
    "encode_slices",
    "packaged_lite_medsam_checkpoint",
    "predict_box_mask",
    "predict_point_mask",
    "prepare_sam_slice",
    "scale_box",
    "GATED_LOGIT",
    "LIVER",
    "LoRAQKV",
    "MODEL_REGISTRY",
    "ModelConfig",
    "ResNet38",
    "SAMMix",
    "SAMMixInference",
    "SAMPP",
    "SAM_SPECS",
    "SamSpec",
    "TrainingCheckpoint",
    "UNetSeg",
    "adapt_sam_state_dict",
    "auto_window_size",
    "build_classifier",
    "build_model",
    "build_sam",
    "cam_prompts",
    "central_box",
    "closed_form_gradcam",
    "configure_encoder",
    "decode_paired",
    "gate_logits",
    "inject_lora",
    "interior_point",
    "largest_component",
    "load_checkpoint",
    "load_weights",
    "liver_probability",
    "select_component",
    "load_sam_checkpoint",
    "mask_to_box",
    "minmax_normalize",
    "preprocess_gray",
    "random_point_in_mask",
    "read_checkpoint",
    "read_state_dict",
    "register_model",
    "resnet38",
    "resnet38_compact",
    "resolve_encoder_mode",
    "sam_forward",
    "select_best_mask",
]
