"""inference stage: whole CT volumes in, liver masks on the input grid out; export and bundle entry points.

* :mod:`.geometry` original grid <-> canonical RAS display slices (slab read / write back);
* :mod:`.predictor` one interface over SAM-Mix, U-Net and exported single-output models;
* :mod:`.volume` :class:`VolumeSliceInferer`, the streaming slice-wise MONAI inferer;
* 3D largest connected component: :func:`sam_mix_monai.transforms.components.keep_largest_component` (shared with the engines' volume3d);
* :mod:`.summary` per-case JSON summary; :mod:`.preview` three-plane PNG;
* :mod:`.cases` input discovery; :mod:`.settings` a run's options; :mod:`.runner` the per-case loop and outputs;
* :mod:`.loading` checkpoints and bundles; :mod:`.export` TorchScript / ONNX;
* :mod:`.distributed` case sharding under ``torchrun``; :mod:`.bundle` bundle config entry functions.
* :mod:`.store_volumes` ``sam-mix evaluate``'s ``volume3d`` of a volume-mode SAM-Mix: store cases put back
  together as volumes and segmented by the infer path.
"""

from sam_mix_monai.inference.bundle import BundleEvaluator, bundle_cases, bundle_inference, ensure_phantom_ct, training_store
from sam_mix_monai.inference.cases import Case, find_cases
from sam_mix_monai.inference.distributed import dist_info, shard
from sam_mix_monai.inference.export import FORMATS, ExportCheck, check_export, export_network
from sam_mix_monai.inference.geometry import AxialGeometry
from sam_mix_monai.inference.loading import (INFERABLE_MODELS, bundle_network, bundle_weights, load_bundle, load_checkpoint,
                                             load_weights, read_checkpoint)
from sam_mix_monai.transforms.components import keep_largest_component
from sam_mix_monai.inference.predictor import SliceOutput, SlicePredictor
from sam_mix_monai.inference.runner import CaseResult, Model, RunReport, segment_case, segment_cases, write_mask
from sam_mix_monai.inference.settings import InferenceSettings, OutputSettings
from sam_mix_monai.inference.summary import case_summary
from sam_mix_monai.inference.volume import VolumeSliceInferer

__all__ = [
    "FORMATS",
    "INFERABLE_MODELS",
    "AxialGeometry",
    "BundleEvaluator",
    "Case",
    "CaseResult",
    "ExportCheck",
    "InferenceSettings",
    "Model",
    "OutputSettings",
    "RunReport",
    "VolumeSliceInferer",
    "SliceOutput",
    "SlicePredictor",
    "bundle_cases",
    "bundle_inference",
    "bundle_network",
    "bundle_weights",
    "case_summary",
    "check_export",
    "dist_info",
    "ensure_phantom_ct",
    "export_network",
    "find_cases",
    "keep_largest_component",
    "load_bundle",
    "load_checkpoint",
    "load_weights",
    "read_checkpoint",
    "segment_case",
    "segment_cases",
    "shard",
    "training_store",
    "write_mask",
]
