"""The options of an inference run, built once and checked in one place.

:class:`InferenceSettings` holds the model side (device, batch size, HU window, precision, speed and
post-processing options); :class:`OutputSettings` what a run writes (preview, probabilities, mask
formats, skipping finished cases, a user's box prompt). ``sam-mix infer`` builds both from its
arguments (:meth:`InferenceSettings.from_args`, :meth:`OutputSettings.from_args`),
:func:`~sam_mix_monai.inference.segmenter.segment` and
:class:`~sam_mix_monai.inference.segmenter.Segmenter` from their keyword arguments, and the bundle's
:class:`~sam_mix_monai.inference.bundle.BundleEvaluator` from its config; the runner
(:mod:`.runner`) reads them.

Every bad value is an :class:`~sam_mix_monai.utils.errors.InputError` naming the option (as the CLI
spells it), raised when the settings are built; an unknown option name is a ``TypeError`` naming it.

Example:
    >>> from sam_mix_monai.inference.settings import InferenceSettings
    >>> InferenceSettings(batch_size=16, window=(40, 400)).window
    (40.0, 400.0)
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping, TypeVar

from sam_mix_monai.utils.errors import InputError, PathLike

__all__ = ["DEFAULT_BATCH_SIZE", "FAST_BATCH_SIZE", "FAST_Z_STEP_MM", "InferenceSettings", "OutputSettings", "split_options", "to_box"]

#: Slices per forward pass under ``fast=True`` (unless a batch size is given).
FAST_BATCH_SIZE = 32
#: The volume prompt mode's slice step under ``fast=True`` (unless one is given): on 1.6 and 2 mm slices every
#: second slice runs, the 3D Dice change measured in docs/benchmarks.md.
FAST_Z_STEP_MM = 4.0
#: Slices per forward pass otherwise (unless the model or the user sets one).
DEFAULT_BATCH_SIZE = 8
_PROMPT_MODES = (None, "volume", "slice")


def _names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


_S = TypeVar("_S", bound="_Options")


class _Options:
    """What both settings classes share: :meth:`build` from another instance and keyword options."""

    @classmethod
    def build(cls: type[_S], settings: _S | None = None, **options: Any) -> _S:
        """``settings`` (default: all defaults) with ``options`` replaced, e.g. ``InferenceSettings.build(device="cpu")``.

        Raises:
            TypeError: an option that is no field of the class (named).
            InputError: a bad value.
        """
        unknown = [k for k in options if k not in _names(cls)]
        if unknown:
            raise TypeError(f"unknown {cls.__name__} option {unknown[0]!r}: expected one of {', '.join(_names(cls))}")
        return replace(settings if settings is not None else cls(), **options)  # type: ignore[type-var]


def to_box(box: Any, source: PathLike | None = None) -> Any:
    """A box prompt as a :class:`~sam_mix_monai.inference.box3d.Box3D` (``None`` stays ``None``).

    Args:
        box: ``"X1,Y1,Z1,X2,Y2,Z2"``, six integers, a ``Box3D`` or ``None``.
        source: the input the box is for (named in errors).

    Raises:
        InputError: not six integers, or a lower corner above the upper one.
    """
    if box is None:
        return None
    from sam_mix_monai.inference.box3d import Box3D, parse_box

    return box if isinstance(box, Box3D) else parse_box(box, source)


@dataclass(frozen=True)
class InferenceSettings(_Options):
    """How the model runs: the options of ``sam-mix infer`` that do not name files.

    Attributes:
        device: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or a ``torch.device``.
        batch_size: slices per forward pass (``None``: the model's, else :data:`DEFAULT_BATCH_SIZE`;
            :data:`FAST_BATCH_SIZE` at least with ``fast``).
        window: HU window ``(centre, width)`` (``None``: the training store's, else 40, 400).
        precision: autocast precision ``fp32``, ``bf16`` or ``fp16`` (CUDA only).
        fast: trade exactness for speed: autocast in ``fp16`` on CUDA or ``bf16`` on a CPU with native bf16 (``fp32`` on
            MPS), :data:`FAST_BATCH_SIZE` slices per pass, on the CPU the encoder quantization that
            passed its tolerance check, and in volume prompt mode :data:`FAST_Z_STEP_MM` (``z_step_mm``);
            no weight and no slice size changes.
        z_step_mm: volume prompt mode: the networks run on slices about this far apart, the slices between
            interpolated (``None``: :data:`FAST_Z_STEP_MM` with ``fast``, else 0: every slice).
        largest_component: keep only the largest 3D connected component.
        progress: progress bars over slices and cases.
        prompt_mode: a SAM-Mix's prompts: ``volume``, ``slice`` or ``None`` (the model's own).
        encoder_backend: what runs the SAM image encoder: ``auto``, ``torch`` or ``onnxruntime``
            (:mod:`sam_mix_monai.networks.encoder_backend`).
        prompt_overrides: with a training checkpoint, new values of prompt switches that leave the weights
            as they are (:data:`~sam_mix_monai.networks.registry.PROMPT_KEYS`, as ``sam-mix evaluate --set``).

    Raises:
        InputError: a batch size below 1, a bad window, an unknown prompt mode, precision or encoder backend.
    """

    device: Any = "auto"
    batch_size: int | None = None
    window: tuple[float, float] | None = None
    precision: str = "fp32"
    fast: bool = False
    largest_component: bool = True
    progress: bool = False
    prompt_mode: str | None = None
    encoder_backend: str = "auto"
    prompt_overrides: Mapping[str, Any] | None = None
    z_step_mm: float | None = None

    def __post_init__(self) -> None:
        from sam_mix_monai.networks.encoder_backend import ENCODER_BACKENDS
        from sam_mix_monai.transforms.window import check_window
        from sam_mix_monai.utils.precision import PRECISIONS

        if self.batch_size is not None and int(self.batch_size) < 1:
            raise InputError(None, f"--batch-size must be at least 1 (got {self.batch_size})")
        if self.z_step_mm is not None and not float(self.z_step_mm) >= 0:
            raise InputError(None, f"--z-step-mm must be 0 or more (got {self.z_step_mm})")
        check_window(self.window)
        if self.prompt_mode not in _PROMPT_MODES:
            raise InputError(None, f"--prompt-mode {self.prompt_mode!r}: expected volume or slice")
        if self.precision not in PRECISIONS:
            raise InputError(None, f"--precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}")
        if self.encoder_backend not in ENCODER_BACKENDS:
            raise InputError(None, f"--encoder-backend {self.encoder_backend!r}: expected one of "
                                   f"{', '.join(ENCODER_BACKENDS)}")
        if self.window is not None:
            object.__setattr__(self, "window", (float(self.window[0]), float(self.window[1])))
        if self.batch_size is not None:
            object.__setattr__(self, "batch_size", int(self.batch_size))
        for flag in ("fast", "largest_component", "progress"):
            object.__setattr__(self, flag, bool(getattr(self, flag)))
        object.__setattr__(self, "prompt_overrides", dict(self.prompt_overrides) if self.prompt_overrides else None)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> InferenceSettings:
        """The settings of ``sam-mix infer``'s parsed arguments."""
        return cls(device=args.device, batch_size=args.batch_size, window=args.window, precision=args.precision,
                   fast=args.fast, largest_component=not args.no_lcc, progress=not args.no_progress,
                   prompt_mode=args.prompt_mode, encoder_backend=args.encoder_backend,
                   z_step_mm=args.z_step_mm)

    def torch_device(self) -> Any:
        """:attr:`device` as a ``torch.device``, checked to exist (plain ``cuda``: this rank's GPU under ``torchrun``).

        Raises:
            InputError: an unknown device name, or a device this machine does not have.
        """
        import torch

        from sam_mix_monai.inference.distributed import dist_info, resolve_device

        return self.device if isinstance(self.device, torch.device) else resolve_device(self.device, dist_info()[2])

    def autocast_precision(self, device: Any) -> str:
        """The precision to run at on ``device``: :attr:`precision`, or with :attr:`fast` the device's fast one.

        Raises:
            InputError: ``fp16`` on a device other than CUDA.
        """
        from sam_mix_monai.utils.precision import cpu_has_native_bf16

        precision = self.precision
        if self.fast and precision == "fp32":  # bf16 on a CPU only where it is native (emulated: ~10x slower)
            cpu = "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"
            precision = {"cuda": "fp16", "cpu": cpu}.get(device.type, "fp32")
        if precision == "fp16" and device.type != "cuda":
            raise InputError(None, "--precision fp16 needs CUDA (use bf16 on CPU)")
        return precision

    def volume_z_step_mm(self) -> float:
        """The volume prompt mode's slice step: :attr:`z_step_mm`, else :data:`FAST_Z_STEP_MM` with :attr:`fast`, else 0."""
        if self.z_step_mm is not None:
            return float(self.z_step_mm)
        return FAST_Z_STEP_MM if self.fast else 0.0

    def slices_per_pass(self, model_batch: int | None = None) -> int:
        """The batch size: :attr:`batch_size`, else the model's ``model_batch``, else the default (see the class)."""
        batch = self.batch_size or model_batch or (FAST_BATCH_SIZE if self.fast else DEFAULT_BATCH_SIZE)
        if self.fast and self.batch_size is None:
            batch = max(int(batch), FAST_BATCH_SIZE)
        return int(batch)


@dataclass(frozen=True)
class OutputSettings(_Options):
    """What a run writes per case (beside the mask and its JSON summary), and the box prompt it segments from.

    Attributes:
        preview: also write the three-plane PNG.
        save_probabilities: also write the liver probability NIfTI.
        output_types: mask formats: ``nifti`` (``<case>_liver.nii.gz``) and / or ``dicom_seg``
            (``<case>_liver.dcm``; DICOM input only).
        skip_existing: leave a case alone whose whole output set exists and whose JSON matches its mask
            (:mod:`.existing`; runs of several cases).
        box: a user's 3D box prompt for every case (:mod:`.box3d`; a string or six integers are parsed),
            or ``None`` (the model's own prompts).

    Raises:
        InputError: an unknown or empty mask format, or a malformed box.
    """

    preview: bool = False
    save_probabilities: bool = False
    output_types: tuple[str, ...] = ("nifti",)
    skip_existing: bool = False
    box: Any = None

    def __post_init__(self) -> None:
        from sam_mix_monai.inference.outputs import check_output_types

        types = (self.output_types,) if isinstance(self.output_types, str) else self.output_types
        object.__setattr__(self, "output_types", check_output_types(types))
        object.__setattr__(self, "box", to_box(self.box))
        for flag in ("preview", "save_probabilities", "skip_existing"):
            object.__setattr__(self, flag, bool(getattr(self, flag)))

    @classmethod
    def from_args(cls, args: argparse.Namespace, source: PathLike | None = None) -> OutputSettings:
        """The settings of ``sam-mix infer``'s parsed arguments (``source``: the one input, named in box errors)."""
        types = [t for group in (args.output_type or [["nifti"]]) for t in group]
        return cls(preview=args.preview, save_probabilities=args.save_probabilities, output_types=tuple(types),
                   skip_existing=args.skip_existing, box=to_box(args.box, source))


def split_options(options: Mapping[str, Any], *extra: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Sort keyword options into those of :class:`InferenceSettings`, of :class:`OutputSettings` and ``extra``.

    Args:
        options: keyword options, e.g. ``segment()``'s.
        extra: other accepted names (e.g. ``bundle``, ``affine``).

    Returns:
        ``(inference options, output options, extra options)``.

    Raises:
        TypeError: an option none of them accepts (named).
    """
    model, out, rest = {}, {}, {}
    for key, value in options.items():
        if key in _names(InferenceSettings):
            model[key] = value
        elif key in _names(OutputSettings):
            out[key] = value
        elif key in extra:
            rest[key] = value
        else:
            names = (*_names(InferenceSettings), *_names(OutputSettings), *extra)
            raise TypeError(f"unknown option {key!r}: expected one of {', '.join(names)}")
    return model, out, rest
