"""Segmenting a list of cases: read, check, infer, clean up, write mask / summary / preview.

Outputs per case, in ``output_dir``:

* ``<case>_liver.dcm`` with ``output_types`` holding ``dicom_seg`` (DICOM input only): the mask as a
  DICOM-SEG referencing the input series (:mod:`sam_mix_monai.data.dicom_seg`);
* ``<case>_liver.nii.gz`` (unless ``output_types`` is ``dicom_seg`` alone): ``uint8`` mask (1 = liver) with the input's shape and affine. For a NIfTI
  input the input's header is reused (same qform/sform and codes, so a reader gets the very same
  affine); for a DICOM series the NIfTI carries the series' geometry (LPS converted to RAS);
* ``<case>_liver.json``: the summary of :mod:`.summary`, with the statistics of :mod:`.statistics`;
* ``<case>_liver.png`` with ``preview=True``: axial / coronal / sagittal overlays;
* ``<case>_liver_probabilities.nii.gz`` with ``save_probabilities=True``: the liver probability on
  the same grid (2 bytes per voxel, :func:`probability_image`);
* ``statistics.csv`` over all cases of a multi-case run (:func:`segment_cases`).

With ``skip_existing=True`` a case whose whole output set is already there, its JSON matching its
mask (:mod:`.existing`), is not segmented again; its statistics are read back from its JSON for
``statistics.csv``.

A case's files are written to temporary names and renamed together when all are complete
(:func:`~sam_mix_monai.utils.atomic.output_set`): they appear together or not at all. Each case is an
error boundary (:func:`~sam_mix_monai.utils.boundary.stage`): a case that fails, whether with an
:class:`~sam_mix_monai.utils.errors.InputError` (unreadable, bad geometry, not 3D, not CT, disk full)
or any unexpected exception (reported with its stage, type and message), writes nothing and is
reported; the other cases still run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import numpy as np
from tqdm import tqdm

from sam_mix_monai.data.io import check_ct_values, read_volume
from sam_mix_monai.inference.box3d import Box3D, check_box, segment_box
from sam_mix_monai.inference.cases import Case, find_cases
from sam_mix_monai.inference.distributed import shard
from sam_mix_monai.inference.existing import finished_summary
from sam_mix_monai.inference.geometry import AxialGeometry
from sam_mix_monai.inference.outputs import (
    OUTPUT_TYPES, check_output_types, mask_image, mask_path, probability_image, write_mask, write_probabilities,
)
from sam_mix_monai.inference.predictor import SlicePredictor
from sam_mix_monai.inference.preview import save_triplanar_preview
from sam_mix_monai.inference.settings import InferenceSettings, OutputSettings
from sam_mix_monai.inference.statistics import mask_statistics, statistics_row, write_statistics_csv
from sam_mix_monai.inference.summary import case_summary, write_summary
from sam_mix_monai.inference.volume import VolumeSliceInferer, volume_array
from sam_mix_monai.transforms.components import keep_largest_component
from sam_mix_monai.utils.atomic import check_writable_dir, output_set
from sam_mix_monai.utils.boundary import stage, to_input_error
from sam_mix_monai.utils.errors import InputError, PathLike

__all__ = ["CaseResult", "Model", "ModelSource", "Prediction", "RunReport", "mask_path", "predict_volume", "segment_case", "segment_cases",
           "OUTPUT_TYPES", "check_output_types", "probability_image", "write_mask", "write_probabilities"]

logger = logging.getLogger(__name__)


@dataclass
class CaseResult:
    """Outcome of one case.

    Attributes:
        case: the case.
        outputs: files written.
        summary: the JSON summary (``None`` on failure).
        error: the one-line problem (``None`` on success).
        skipped: its outputs existed already (``skip_existing``); ``summary`` is the stored one, if any.
    """

    case: Case
    outputs: list[Path] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    error: str | None = None
    skipped: bool = False

    @property
    def ok(self) -> bool:
        """Whether the case was segmented."""
        return self.error is None


@dataclass
class RunReport:
    """Outcome of a run over several cases (this rank's share under ``torchrun``)."""

    results: list[CaseResult]
    seconds: float = 0.0

    @property
    def failed(self) -> list[CaseResult]:
        """The cases that failed."""
        return [r for r in self.results if not r.ok]

    @property
    def exit_code(self) -> int:
        """0 when every case succeeded, else :attr:`InputError.exit_code` (2)."""
        return InputError.exit_code if self.failed else 0


@dataclass
class Prediction:
    """A volume's prediction on its own grid.

    Attributes:
        mask: ``(X, Y, Z)`` ``uint8`` liver mask.
        probabilities: ``(X, Y, Z)`` ``float16`` liver probability, or ``None`` when not asked for.
        liver_prob: per canonical slice classifier probability, or ``None``.
        chosen_iou: per canonical slice predicted IoU, or ``None``.
        seconds_slices: time of the slice-wise network pass.
        seconds_postprocess: time of the connected-component clean-up.
    """

    mask: np.ndarray
    probabilities: np.ndarray | None = None
    liver_prob: np.ndarray | None = None
    chosen_iou: np.ndarray | None = None
    seconds_slices: float = 0.0
    seconds_postprocess: float = 0.0


@dataclass(frozen=True)
class Model:
    """What segments a volume: a loaded network's predictor and inferer, and the SAM of a box prompt.

    :meth:`Segmenter.model <sam_mix_monai.inference.segmenter.Segmenter.model>` gives one.

    Attributes:
        predictor: the network (``None``: box prompts only).
        inferer: the slice-wise volume inferer (slice size, HU window, batch size, device).
        box_sam: the ``segment_anything`` SAM that segments a user's box prompt (``None``: no box).
    """

    predictor: SlicePredictor | None
    inferer: VolumeSliceInferer
    box_sam: Any = None


#: A :class:`Model`, or a function that loads one: called once, when the first case is read and needs it.
ModelSource = Union[Model, Callable[[], Model]]


class _Once:
    """A :data:`ModelSource` resolved on first call; remembers whether loading failed (the run's error, not a case's)."""

    def __init__(self, source: ModelSource) -> None:
        self._source, self._model, self.failed = source, source if isinstance(source, Model) else None, False

    def __call__(self) -> Model:
        if self._model is None:
            try:
                self._model = self._source()  # type: ignore[operator]
            except BaseException:
                self.failed = True
                raise
        return self._model


def predict_volume(volume: Any, model: Model, settings: InferenceSettings | None = None, probabilities: bool = False,
                   source: PathLike | None = None, box: Box3D | None = None) -> Prediction:
    """Segment a ``(1, X, Y, Z)`` HU MetaTensor slice by slice, then keep the largest 3D component.

    With a ``box`` (:mod:`.box3d`), ``model.box_sam`` segments from the user's box with MedSAM-style
    propagation (the CAM prompts and the predictor are not used); otherwise ``model.inferer`` runs
    ``model.predictor`` (a SAM-Mix in volume prompt mode from one 3D prompt, :mod:`.volume_mode`; else
    slice by slice). ``settings.largest_component`` keeps the largest 3D component only. The
    probability map (``probabilities=True``) is left as the network gave it (no clean-up).
    Failures name ``source`` and the stage (``inference``, ``postprocess``).
    """
    settings = settings or InferenceSettings()
    inferer = model.inferer
    t0 = time.perf_counter()
    liver_prob = None
    with stage("inference", source):
        if box is not None:
            res = segment_box(volume, box, model.box_sam, window=inferer.window_params, batch_size=inferer.batch_size,
                              probabilities=probabilities, progress=inferer.progress)
            mask, probs, iou = res.mask, res.probabilities, res.chosen_iou
        else:
            inferer.probabilities = probabilities
            pred = inferer(volume, model.predictor)
            mask = pred.as_tensor()[0].numpy()
            probs, liver_prob, iou = pred.meta.get("probabilities"), pred.meta.get("liver_prob"), pred.meta.get("chosen_iou")
    t1 = time.perf_counter()
    with stage("postprocess", source):
        if settings.largest_component:
            keep_largest_component(mask)
    return Prediction(mask, probs, liver_prob, iou, round(t1 - t0, 3), round(time.perf_counter() - t1, 3))


def segment_case(
    case: Case,
    model: ModelSource,
    output_dir: PathLike,
    outputs: OutputSettings | None = None,
    settings: InferenceSettings | None = None,
    volume: Any | None = None,
) -> CaseResult:
    """Segment one case and write its outputs.

    Args:
        case: the case.
        model: the :class:`Model`, or a function that loads it (called after the case is read and checked).
        output_dir: output folder (must exist).
        outputs: what to write and the box prompt (:class:`.settings.OutputSettings`; ``skip_existing`` is
            :func:`segment_cases`'s).
        settings: ``largest_component`` (:class:`.settings.InferenceSettings`).
        volume: the case's image, already read (``None``: read ``case.path``).

    Returns:
        The result (success only; problems raise).

    Raises:
        InputError: unreadable input, bad geometry, not a 3D volume, not CT, a box outside the volume, a
            full disk, or any unexpected exception of a stage (read, inference, postprocess, write), named.
    """
    outputs = outputs or OutputSettings()
    t0 = time.perf_counter()
    types = check_output_types(outputs.output_types, case)  # before any work: DICOM-SEG needs a DICOM input
    with stage("read", case.path):
        vol = read_volume(case.path) if volume is None else volume
        check_ct_values(vol, case.path)
        affine = np.asarray(vol.affine, dtype=np.float64)
        if outputs.box is not None:
            check_box(outputs.box, tuple(vol.shape[1:]), case.path)
    t_read = time.perf_counter()
    loaded = model if isinstance(model, Model) else model()  # a bad input never waits for the model
    pred = predict_volume(vol, loaded, settings, outputs.save_probabilities, case.path, outputs.box)
    mask = pred.mask
    out = Path(output_dir)
    stem = f"{case.name}_liver"
    result = CaseResult(case)
    mask_file, json_path, png_path = mask_path(out, case, types), out / f"{stem}.json", out / f"{stem}.png"
    with stage("summary", case.path):
        geo = AxialGeometry(affine, mask.shape)
        image = volume_array(vol)
        summary = case_summary(
            mask,
            geo,
            pred.liver_prob,
            pred.chosen_iou,
            image=image,
            statistics=mask_statistics(mask, image, affine),
            case=case.name,
            input=str(case.path),
            mask_file=str(mask_file),
            seconds_read=round(t_read - t0, 3),
            seconds_slices=pred.seconds_slices,
            seconds_postprocess=pred.seconds_postprocess,
            seconds_total=round(time.perf_counter() - t0, 3),
        )
    with stage("write", case.path), output_set():  # every file of the case appears together or not at all
        if "nifti" in types:
            result.outputs.append(write_mask(mask, affine, mask_file, case.path))
        if "dicom_seg" in types:
            from sam_mix_monai.data.dicom_seg import write_dicom_seg

            result.outputs.append(write_dicom_seg(mask, case.path, out / f"{stem}.dcm"))
        if pred.probabilities is not None:
            result.outputs.append(write_probabilities(pred.probabilities, affine, out / f"{stem}_probabilities.nii.gz",
                                                      case.path))
        if outputs.preview:
            result.outputs.append(save_triplanar_preview(image, mask, geo, png_path, title=case.name,
                                                         window=loaded.inferer.window_params))
        result.outputs.append(write_summary(summary, json_path))
    result.summary = summary
    return result


def segment_cases(
    inputs: Sequence[PathLike] | Sequence[Case],
    model: ModelSource,
    output_dir: PathLike,
    outputs: OutputSettings | None = None,
    settings: InferenceSettings | None = None,
    rank: int = 0,
    world_size: int = 1,
    raise_errors: bool = False,
) -> RunReport:
    """Segment every case of ``inputs`` (this rank's share), continuing past bad cases.

    Args:
        inputs: NIfTI files, DICOM series folders, folders of cases (or :class:`.cases.Case` objects).
        model: the :class:`Model`, or a function that loads it, called once when the first case to segment
            has been read and checked: finished cases (``skip_existing``) and a bad input never wait for
            the model. A failure to load it is the run's error (raised), not a case's.
        output_dir: output folder (created when missing).
        outputs: what to write per case, ``skip_existing`` and the box prompt (:class:`.settings.OutputSettings`).
        settings: ``largest_component`` and ``progress`` (a bar over the cases when there are several).
        rank, world_size: this process's share of the cases (``cases[rank::world_size]``).
        raise_errors: a case's problem raises instead of being reported (``sam-mix infer`` with one
            case: its problem is the command's error).

    With more than one case, ``statistics.csv`` (one row per segmented or skipped case with
    statistics) is written to ``output_dir`` (``statistics_rank<r>.csv`` under ``torchrun``).

    Returns:
        The report; failed cases carry their one-line error.

    Raises:
        InputError: an input that does not exist or a folder with no case, or an unwritable output folder;
            the model's loading error; with ``raise_errors``, a case's error.
    """
    outputs, settings = outputs or OutputSettings(), settings or InferenceSettings()
    t0 = time.perf_counter()
    out = check_writable_dir(output_dir)
    cases = [c for c in inputs if isinstance(c, Case)] or find_cases(inputs)  # type: ignore[arg-type]
    mine = shard(cases, rank, world_size)
    load = _Once(model)
    results: list[CaseResult] = []
    bar = tqdm(mine, desc="cases" if world_size == 1 else f"cases (rank {rank})", unit="case",
               disable=not settings.progress or len(mine) < 2)
    for case in bar:
        bar.set_postfix_str(case.name)
        done = finished_summary(out, case, outputs.output_types, outputs.preview, outputs.save_probabilities) \
            if outputs.skip_existing else None
        if done is not None:  # the whole output set is there and its JSON matches its mask
            results.append(_existing(case, out, outputs.output_types, done))
            continue
        try:
            res = segment_case(case, load, out, outputs, settings)
            logger.debug("%s: %.1f mL liver in %d slices (%s) -> %s", case.name, res.summary["liver_volume_ml"],
                        res.summary["slices_with_liver"], res.summary["quality"], res.outputs[0])
        except Exception as e:  # the case's boundary: report it, go on with the next case
            if raise_errors or load.failed:
                raise
            err = to_input_error(e, case.path, "segment")
            res = CaseResult(case, error=str(err))
            logger.debug("%s: skipped: %s", case.name, err, exc_info=True)
        results.append(res)
    bar.close()
    if len(cases) > 1:
        rows = [statistics_row(r.case.name, r.summary["statistics"], r.outputs[0] if r.outputs else None)
                for r in results if r.summary and isinstance(r.summary.get("statistics"), dict)]
        name = "statistics.csv" if world_size == 1 else f"statistics_rank{rank}.csv"
        if rows:
            write_statistics_csv(rows, out / name)
    return RunReport(results, time.perf_counter() - t0)


def _existing(case: Case, out: Path, output_types: Sequence[str], summary: dict) -> CaseResult:
    """A case skipped because an earlier run finished it (:func:`.existing.finished_summary`)."""
    mask = mask_path(out, case, output_types)
    logger.debug("%s: skipped, %s exists", case.name, mask)
    return CaseResult(case, outputs=[mask], summary=summary, skipped=True)
