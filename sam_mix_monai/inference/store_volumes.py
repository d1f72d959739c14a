"""``volume3d`` on a slice store through the ``sam-mix infer`` volume path (a SAM-Mix in volume prompt mode).

The evaluator's ``volume3d`` (:class:`~sam_mix_monai.engines.protocols.VolumeMetrics`) stacks per-slice
predictions: the paper's per-slice CAM prompts. Whole-volume inference of a SAM-Mix in volume prompt mode
(``sam-mix infer``, :class:`~.segmenter.Segmenter`, :func:`~sam_mix_monai.segment`) prompts one 3D box per
CT instead (:mod:`.volume_mode`). Here each case of a store (converted with ``--keep-rate all``) is put back
together as a volume (:func:`store_cases`) and segmented by a :class:`~.segmenter.Segmenter`'s own predictor
and :class:`~.volume.VolumeSliceInferer` (:func:`~.runner.predict_volume`, the function
:meth:`Segmenter.predict <.segmenter.Segmenter.predict>` calls), then scored with the ``volume3d`` functions
of :mod:`sam_mix_monai.engines.protocols`.

Example:
    >>> res = evaluate_checkpoint_volumes("best.pt", "test.h5", ["volume3d"], "test")  # doctest: +SKIP
    >>> res["metrics"]["volume3d_dice"], res["volume3d_prompt_mode"]  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from monai.data import MetaTensor

from sam_mix_monai.data.dataset import SliceTable
from sam_mix_monai.data.h5store import open_store
from sam_mix_monai.engines.distributed import resolve_device
from sam_mix_monai.engines.evaluate import evaluate_checkpoint, split_summary
from sam_mix_monai.engines.protocols import volume_case_scores, volume_means
from sam_mix_monai.inference.geometry import AxialGeometry
from sam_mix_monai.inference.loading import read_checkpoint
from sam_mix_monai.inference.runner import predict_volume
from sam_mix_monai.inference.segmenter import Segmenter
from sam_mix_monai.transforms import display_to_ras
from sam_mix_monai.transforms.window import DEFAULT_WINDOW, window_bounds
from sam_mix_monai.utils.errors import InputError, PathLike

__all__ = ["StoreCase", "evaluate_checkpoint_volumes", "score_store_volumes", "store_cases", "store_window"]

logger = logging.getLogger(__name__)


@dataclass
class StoreCase:
    """One case of a slice store, put back together on the grid of its stored slices.

    Attributes:
        case_id: the case.
        rows: its store rows, in ``slice_index`` order (inferior to superior).
        image: ``(1, X, Y, Z)`` float32 MetaTensor in HU (:func:`store_window`), RAS affine.
        label: ``(1, X, Y, Z)`` uint8 MetaTensor of the stored masks, same affine.
        spacing: the store's pixel spacing in mm: (row, column, slice).
    """

    case_id: str
    rows: np.ndarray
    image: MetaTensor
    label: MetaTensor
    spacing: tuple[float, float, float]


def store_window(table: SliceTable) -> tuple[float, float]:
    """The HU window ``(centre, width)`` the store's slices were windowed with (the default when unrecorded)."""
    s = table.slicing
    if "window_center" in s and "window_width" in s:
        return float(s["window_center"]), float(s["window_width"])
    return float(DEFAULT_WINDOW[0]), float(DEFAULT_WINDOW[1])


def _case_affines(path: PathLike) -> dict[str, np.ndarray]:
    """The RAS affine of each case's canonical volume (``cases/affine``), where the store has it."""
    with open_store(path) as f:
        if "cases" not in f or "affine" not in f["cases"]:
            return {}
        return dict(zip(f["cases/case_id"].asstr()[()].tolist(), f["cases/affine"][()]))


def _slice_affine(case_affine: np.ndarray | None, spacing: Sequence[float]) -> np.ndarray:
    """RAS affine of the stored slice grid: the case's direction and origin, the stored pixel spacing."""
    out = np.eye(4)
    rot = np.eye(3)
    if case_affine is not None:
        rot = case_affine[:3, :3] / np.linalg.norm(case_affine[:3, :3], axis=0)
        out[:3, 3] = case_affine[:3, 3]
    out[:3, :3] = rot * np.array([spacing[1], spacing[0], spacing[2]])  # RAS x: columns, y: rows, z: slices
    return out


def store_cases(path: PathLike, split: str | None) -> Iterator[StoreCase]:
    """The cases of one split of a slice store as volumes, one at a time (ordered by case id).

    The slices of a case, ordered by ``slice_index``, are the display-convention slices of its canonical
    (RAS) volume (:func:`~sam_mix_monai.transforms.display_to_ras` undoes that), so the volume's
    :meth:`AxialGeometry.read_slab <.geometry.AxialGeometry.read_slab>` gives back the stored slices.

    Raises:
        InputError: a case whose slices are not consecutive or whose spacing varies (not a whole volume).
    """
    table = SliceTable(path)
    window = store_window(table)
    low, _ = window_bounds(*window)
    affines = _case_affines(path)
    rows = table.rows(split)
    for case_id in sorted(set(table.case_ids[rows].tolist())):
        case_rows = rows[table.case_ids[rows] == case_id]
        case_rows = case_rows[np.argsort(table.slice_index[case_rows], kind="stable")]
        index = table.slice_index[case_rows]
        if len(index) > 1 and not np.all(np.diff(index) == 1):
            raise InputError(path, f"case {case_id}: its slices are not consecutive, not a whole volume "
                                   "(convert with --keep-rate all for volume3d)")
        spacing = table.spacing[case_rows]
        if not np.allclose(spacing, spacing[0]):
            raise InputError(path, f"case {case_id}: the pixel spacing varies between its slices")
        sp = tuple(float(v) for v in spacing[0])
        images, masks = table.read_many(case_rows)
        # Back to HU with the store's own window (HU = low + v * width): VolumeSliceInferer.preprocess windows
        # HU volumes, and with the same window it turns these back into the stored values (up to float
        # rounding; clipped voxels come back at the window's edges, as stored). An identity window on the
        # [0, 1] values would feed the network the same numbers, but the volume would not be CT in HU.
        hu = low + images.numpy().astype(np.float32) * np.float32(window[1])
        affine = torch.as_tensor(_slice_affine(affines.get(case_id), sp))
        image, label = (MetaTensor(torch.from_numpy(np.ascontiguousarray(display_to_ras(a)))[None], affine=affine,
                                   meta={"filename_or_obj": case_id}) for a in (hu, masks.numpy()))
        yield StoreCase(str(case_id), case_rows, image, label, sp)  # type: ignore[arg-type]


def _display_stack(volume: np.ndarray, affine: Any) -> torch.Tensor:
    """``(H, W, D)`` stack of the display slices of an ``(X, Y, Z)`` array (the ``volume3d`` layout)."""
    geo = AxialGeometry(np.asarray(affine, dtype=np.float64), volume.shape)
    return torch.from_numpy(np.moveaxis(geo.read_slab(volume, 0, geo.depth), 0, -1).astype(np.uint8))


def score_store_volumes(segmenter: Segmenter, path: PathLike, split: str | None) -> list[dict[str, Any]]:
    """Segment each case of a store split as ``sam-mix infer`` does and score it (``volume3d`` rows).

    Args:
        segmenter: the loaded model; its predictor, inferer and largest-component clean-up are used as they are.
        path: a slice store of whole volumes.
        split: split (``None``: every case).

    Returns:
        One :func:`~sam_mix_monai.engines.protocols.volume_case_scores` row per case, ordered by case id.
    """
    rows = []
    for case in store_cases(path, split):
        pred = predict_volume(case.image, segmenter.model(), segmenter.settings, source=f"{path}:{case.case_id}")
        affine = case.image.affine
        y = _display_stack(case.label.as_tensor()[0].numpy(), affine)
        row = volume_case_scores(case.case_id, _display_stack(pred.mask, affine), y, case.spacing,
                                 largest_component=False)  # predict_volume kept the largest component
        logger.info("%s: Dice %.4f, HD95 %.2f mm", case.case_id, row["dice"], row["hd95_mm"])
        rows.append(row)
    return rows


def evaluate_checkpoint_volumes(checkpoint: PathLike, data: PathLike, protocols: Sequence[str] = ("volume3d",),
                                split: str | None = "test", device: str = "auto", batch_size: int = 16,
                                prompt_overrides: dict[str, Any] | None = None,
                                prompt_mode: str | None = None) -> dict[str, Any]:
    """Evaluate a checkpoint on a slice store; ``volume3d`` of a SAM-Mix in volume prompt mode by the infer path.

    A SAM-Mix whose prompt mode (``prompt_mode``, else its ``model.prompt_mode``) is ``volume`` gets its
    ``volume3d`` from :func:`score_store_volumes`; ``slice2d`` (and any other model or mode) stays
    :func:`~sam_mix_monai.engines.evaluate.evaluate_checkpoint`'s per-slice protocol. ``volume3d`` refused
    on a store without whole volumes is an error when nothing else was asked for, else noted under ``refused``.

    Args:
        checkpoint, data, protocols, split, device, batch_size, prompt_overrides: as
            :func:`~sam_mix_monai.engines.evaluate.evaluate_checkpoint`.
        prompt_mode: ``volume``, ``slice`` or ``None`` (the checkpoint's own); SAM-Mix only.

    Returns:
        The result of :func:`~sam_mix_monai.engines.evaluate.evaluate_checkpoint`, with
        ``volume3d_prompt_mode`` (``volume``, ``slice``, or ``None`` for another model or no ``volume3d``).

    Raises:
        InputError: ``prompt_mode`` for a model that is not a SAM-Mix, or ``volume3d`` alone refused.
    """
    cfg = read_checkpoint(checkpoint).model_config
    if prompt_mode is not None and cfg.name != "sam_mix":
        raise InputError("--prompt-mode", f"applies to a SAM-Mix checkpoint; this one is '{cfg.name}'")
    mode = (prompt_mode or cfg.prompt_mode) if cfg.name == "sam_mix" and "volume3d" in protocols else None
    if mode != "volume":
        res = evaluate_checkpoint(checkpoint, data, protocols, split, device, batch_size, prompt_overrides)
        return {**res, "volume3d_prompt_mode": mode}
    summary = split_summary(data, split)
    table = SliceTable(data)
    refusal = table.volume3d_refusal()
    others = [p for p in protocols if p != "volume3d"]
    if refusal is not None and not others:
        raise InputError(data, refusal)
    dev = resolve_device(device)
    if others:
        res = evaluate_checkpoint(checkpoint, data, others, split, dev, batch_size, prompt_overrides)
    else:
        res = {"data": summary.pop("data"), "split": summary.pop("split"), "protocols": [], **summary,
               "metrics": {}, "volume3d_cases": [], "refused": {}, "checkpoint": str(checkpoint)}
    if refusal is not None:
        res["refused"]["volume3d"] = refusal
        logger.warning("%s: volume3d refused: %s", data, refusal)
        return {**res, "volume3d_prompt_mode": mode}
    # the store's window (not the training run's): the volume path then sees the store's slices (store_cases)
    # when they have the training slice size; PyTorch encoder: the weights' own numbers on any device (infer's
    # CPU default, ONNX Runtime, agrees within the tolerance of docs/benchmarks.md)
    seg = Segmenter(checkpoint, device=dev, batch_size=batch_size, window=store_window(table),
                    prompt_mode="volume", encoder_backend="torch", prompt_overrides=prompt_overrides)
    size = seg.inferer.image_size or seg.predictor.image_size
    if table.slicing.get("image_size") not in (None, size):
        logger.warning("%s: %s px slices, resized to the model's %s px as sam-mix infer resizes CT slices", data,
                       table.slicing["image_size"], size)
    rows = score_store_volumes(seg, data, split)
    res["metrics"].update(volume_means(rows))
    res.update(protocols=list(protocols), volume3d_cases=rows,
               model=seg.model_config.model_dump(mode="json"), volume3d_prompt_mode=mode)
    return res
