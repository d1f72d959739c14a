"""Segmenting a list of cases: read, check, infer, clean up, write mask / summary / preview.

Outputs per case, in ``output_dir``:

* ``<case>_liver.nii.gz``: ``uint8`` mask (1 = liver) with the input's shape and affine. For a NIfTI
  input the input's header is reused (same qform/sform and codes, so a reader gets the very same
  affine); for a DICOM series the NIfTI carries the series' geometry (LPS converted to RAS);
* ``<case>_liver.json``: the summary of :mod:`.summary`;
* ``<case>_liver.png`` with ``preview=True``: axial / coronal / sagittal overlays.

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
from typing import Any, Sequence

import nibabel as nib
import numpy as np
from tqdm import tqdm

from sam_mix_monai.data.io import check_ct_values, is_nifti, read_volume
from sam_mix_monai.inference.cases import Case, find_cases
from sam_mix_monai.inference.distributed import shard
from sam_mix_monai.inference.geometry import AxialGeometry
from sam_mix_monai.inference.postprocess import keep_largest_component
from sam_mix_monai.inference.predictor import SlicePredictor
from sam_mix_monai.inference.preview import save_triplanar_preview
from sam_mix_monai.inference.summary import case_summary, write_summary
from sam_mix_monai.inference.volume import VolumeSliceInferer, volume_array
from sam_mix_monai.utils.atomic import atomic_output, check_writable_dir, output_set
from sam_mix_monai.utils.boundary import stage, to_input_error
from sam_mix_monai.utils.errors import InputError, PathLike

__all__ = ["CaseResult", "RunReport", "segment_case", "segment_cases", "write_mask"]

logger = logging.getLogger(__name__)


@dataclass
class CaseResult:
    """Outcome of one case.

    Attributes:
        case: the case.
        outputs: files written.
        summary: the JSON summary (``None`` on failure).
        error: the one-line problem (``None`` on success).
    """

    case: Case
    outputs: list[Path] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    error: str | None = None

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


def write_mask(mask: np.ndarray, affine: np.ndarray, target: PathLike, reference: PathLike | None = None) -> Path:
    """Save a ``uint8`` mask as NIfTI on the input's grid, atomically.

    Args:
        mask: ``(X, Y, Z)`` array in the input's array order.
        affine: the input's voxel-to-RAS affine.
        target: output ``.nii.gz`` path.
        reference: the input file; when it is a NIfTI its header (qform, sform, codes, units) is reused.

    Returns:
        The written path.
    """
    data = np.asarray(mask, dtype=np.uint8)
    if reference is not None and is_nifti(reference):
        header = nib.load(str(reference)).header.copy()
        header.set_data_dtype(np.uint8)
        header.set_slope_inter(None, None)
        header.set_intent("label")
        img = nib.Nifti1Image(data, None, header=header)  # affine from the copied qform / sform
    else:
        img = nib.Nifti1Image(data, np.asarray(affine, dtype=np.float64))
        img.header.set_xyzt_units("mm", "sec")
        img.set_qform(np.asarray(affine, dtype=np.float64), code=1)
        img.set_sform(np.asarray(affine, dtype=np.float64), code=1)
        img.header.set_intent("label")
    img.header["descrip"] = b"sam-mix liver mask"
    target = Path(target)
    with atomic_output(target) as tmp:
        nib.save(img, str(tmp))
    return target


def segment_case(
    case: Case,
    predictor: SlicePredictor,
    inferer: VolumeSliceInferer,
    output_dir: PathLike,
    preview: bool = False,
    largest_component: bool = True,
) -> CaseResult:
    """Segment one case and write its outputs.

    Args:
        case: the case.
        predictor: the network.
        inferer: slice-wise volume inferer.
        output_dir: output folder (must exist).
        preview: also write the preview PNG.
        largest_component: keep only the largest 3D connected component.

    Returns:
        The result (success only; problems raise).

    Raises:
        InputError: unreadable input, bad geometry, not a 3D volume, not CT, a full disk, or any
            unexpected exception of a stage (read, inference, postprocess, write), named.
    """
    t0 = time.perf_counter()
    with stage("read", case.path):
        vol = read_volume(case.path)
        check_ct_values(vol, case.path)
        affine = np.asarray(vol.affine, dtype=np.float64)
    t_read = time.perf_counter()
    with stage("inference", case.path):
        pred = inferer(vol, predictor)
        mask = pred.as_tensor()[0].numpy()
    t_slices = time.perf_counter()
    with stage("postprocess", case.path):
        if largest_component:
            keep_largest_component(mask)
    t_infer = time.perf_counter()
    out = Path(output_dir)
    stem = f"{case.name}_liver"
    result = CaseResult(case)
    mask_path, json_path, png_path = (out / f"{stem}{sfx}" for sfx in (".nii.gz", ".json", ".png"))
    with stage("summary", case.path):
        geo = AxialGeometry(affine, mask.shape)
        summary = case_summary(
            mask,
            geo,
            pred.meta.get("liver_prob"),
            pred.meta.get("chosen_iou"),
            image=volume_array(vol),
            case=case.name,
            input=str(case.path),
            mask_file=str(mask_path),
            seconds_read=round(t_read - t0, 3),
            seconds_slices=round(t_slices - t_read, 3),
            seconds_postprocess=round(t_infer - t_slices, 3),
            seconds_total=round(time.perf_counter() - t0, 3),
        )
    with stage("write", case.path), output_set():  # mask, preview and JSON appear together or not at all
        result.outputs.append(write_mask(mask, affine, mask_path, case.path))
        if preview:
            result.outputs.append(
                save_triplanar_preview(volume_array(vol), mask, geo, png_path, title=case.name, window=inferer.window_params)
            )
        result.outputs.append(write_summary(summary, json_path))
    result.summary = summary
    return result


def segment_cases(
    inputs: Sequence[PathLike] | Sequence[Case],
    predictor: SlicePredictor,
    inferer: VolumeSliceInferer,
    output_dir: PathLike,
    preview: bool = False,
    largest_component: bool = True,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
) -> RunReport:
    """Segment every case of ``inputs`` (this rank's share), continuing past bad cases.

    Args:
        inputs: NIfTI files, DICOM series folders, folders of cases (or :class:`.cases.Case` objects).
        predictor: the network.
        inferer: slice-wise volume inferer.
        output_dir: output folder (created when missing).
        preview: also write preview PNGs.
        largest_component: keep only the largest 3D connected component.
        rank, world_size: this process's share of the cases (``cases[rank::world_size]``).
        progress: progress bars over cases and slices.

    Returns:
        The report; failed cases carry their one-line error.

    Raises:
        InputError: an input that does not exist or a folder with no case, or an unwritable output folder.
    """
    t0 = time.perf_counter()
    out = check_writable_dir(output_dir)
    cases = [c for c in inputs if isinstance(c, Case)] or find_cases(inputs)  # type: ignore[arg-type]
    mine = shard(cases, rank, world_size)
    results: list[CaseResult] = []
    inferer.progress = progress
    bar = tqdm(mine, desc="cases" if world_size == 1 else f"cases (rank {rank})", unit="case", disable=not progress)
    for case in bar:
        bar.set_postfix_str(case.name)
        try:
            res = segment_case(case, predictor, inferer, out, preview, largest_component)
            logger.debug("%s: %.1f mL liver in %d slices (%s) -> %s", case.name, res.summary["liver_volume_ml"],
                        res.summary["slices_with_liver"], res.summary["quality"], res.outputs[0])
        except Exception as e:  # the case's boundary: report it, go on with the next case
            err = to_input_error(e, case.path, "segment")
            res = CaseResult(case, error=str(err))
            logger.debug("%s: skipped: %s", case.name, err, exc_info=True)
        results.append(res)
    bar.close()
    return RunReport(results, time.perf_counter() - t0)
