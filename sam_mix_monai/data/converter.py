"""Convert LiTS / TotalSegmentator / 3D-IRCADb cases (NIfTI or DICOM) into one HDF5 slice store.

Each case is read and checked (:mod:`.io`), turned into slices by the MONAI pipeline
(:func:`~sam_mix_monai.transforms.volume_to_slices_transform`) in a worker process,
and appended, in case order, to a temporary file that is renamed onto the output
only when every case succeeded.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from sam_mix_monai.data.h5store import SPLIT_NAMES, CaseSlices, SliceStoreWriter
from sam_mix_monai.data.io import (
    canonical_geometry,
    check_ct_values,
    check_label_values,
    check_same_grid,
    read_volume,
    voxel_spacing,
)
from sam_mix_monai.data.ircadb import read_ircadb_image, read_ircadb_liver
from sam_mix_monai.data.layouts import CaseFiles, find_cases
from sam_mix_monai.data.splits import DEFAULT_SPLIT, assign_splits, split_slab
from sam_mix_monai.transforms import SlicingConfig, volume_to_slices_transform
from sam_mix_monai.utils.atomic import atomic_output, clean_stale_parts, ensure_free_space
from sam_mix_monai.utils.boundary import stage
from sam_mix_monai.utils.errors import InputError, PathLike

logger = logging.getLogger(__name__)


def slice_case(case: CaseFiles, cfg: SlicingConfig, fmt: str = "lits") -> CaseSlices:
    """Read, check and slice one case.

    Args:
        case: the case's files.
        cfg: preprocessing parameters.
        fmt: the dataset layout; ``"ircadb"`` reads its DICOM mask series, the others a label volume.

    Raises:
        InputError: any problem with the case's files.
    """
    if fmt == "ircadb":
        with stage("read", case.image):
            image = read_ircadb_image(case.image)
            label, _ = read_ircadb_liver(case.label, image)  # checked against the image grid
    else:
        with stage("read", case.image):
            image = read_volume(case.image)
            check_ct_values(image, case.image)
        with stage("read", case.label):
            label = read_volume(case.label)
            check_label_values(label, case.label, case.label_values or (0, 1, 2))
            check_same_grid(image, label, case.image, case.label)
            if case.liver_values is not None:  # msd: the labels dataset.json names liver (data/msd_schema.py)
                label = label.clone()
                label.set_array(torch.isin(label.as_tensor(), torch.tensor(case.liver_values)).to(torch.uint8))
    with stage("slicing", case.image):
        out = volume_to_slices_transform(cfg)({"image": image, "label": label})
    affine, shape = canonical_geometry(np.asarray(image.affine, dtype=np.float64), tuple(image.shape[1:]))
    spacing = voxel_spacing(affine)
    s = cfg.image_size
    # Display rows follow RAS y, columns RAS x (see transforms.axial).
    pixel_spacing = np.array([spacing[1] * shape[1] / s, spacing[0] * shape[0] / s, spacing[2]], np.float32)
    return CaseSlices(
        case_id=case.case_id,
        source=str(case.image),
        image=np.asarray(out["image"], dtype=np.float32),
        mask=np.asarray(out["label"], dtype=np.uint8),
        label=np.asarray(out["slice_label"], dtype=np.uint8),
        slice_index=np.asarray(out["slice_index"]),
        pixel_spacing=pixel_spacing,
        affine=affine,
        shape=shape,  # type: ignore[arg-type]
    )


def _worker_init() -> None:
    torch.set_num_threads(1)


@dataclass
class ConversionSummary:
    """Counts per split: cases, slices and liver-positive slices."""

    output: Path
    seconds: float = 0.0
    cases: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLIT_NAMES, 0))
    slices: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLIT_NAMES, 0))
    positive: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLIT_NAMES, 0))

    def table(self) -> str:
        """A plain-text table of the counts."""
        rows = [f"{'split':<7}{'cases':>7}{'slices':>9}{'liver+':>9}"]
        for s in SPLIT_NAMES:
            rows.append(f"{s:<7}{self.cases[s]:>7}{self.slices[s]:>9}{self.positive[s]:>9}")
        rows.append(f"{'total':<7}{sum(self.cases.values()):>7}{sum(self.slices.values()):>9}{sum(self.positive.values()):>9}")
        return "\n".join(rows)


def _results(cases: list[CaseFiles], cfg: SlicingConfig, workers: int, fmt: str) -> Iterator[CaseSlices]:
    if workers <= 1 or len(cases) == 1:
        for c in cases:
            yield slice_case(c, cfg, fmt)
        return
    ctx = get_context("fork") if os.name == "posix" else get_context()
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init) as pool:
        # map() yields in case order, so the file layout does not depend on timing.
        yield from pool.map(slice_case, cases, [cfg] * len(cases), [fmt] * len(cases))


def convert(
    input_dir: PathLike,
    output: PathLike,
    fmt: str,
    cfg: SlicingConfig | None = None,
    split: dict[str, float] | None = None,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
    dev_slab: tuple[int, int] | None = None,
    slab_gap: int = 2,
    label_ids: Sequence[int] | None = None,
) -> ConversionSummary:
    """Convert a LiTS, TotalSegmentator or 3D-IRCADb folder into an HDF5 slice store.

    Args:
        input_dir: dataset folder.
        output: the ``.h5`` file to write (atomically).
        fmt: ``"lits"``, ``"totalseg"``, ``"ircadb"`` or ``"msd"``.
        cfg: preprocessing parameters (paper defaults when ``None``).
        split: split fractions by case (default train 0.7, val 0.1, test 0.2).
        seed: seed of the case split.
        workers: parallel worker processes (default: CPU count, at most 4).
        progress: show a progress bar.
        dev_slab: ``(start, stop)`` slice indices cut out of every case into a case of its own in the
            ``val`` split (development on the training patient: :func:`~.splits.split_slab`).
        slab_gap: slices on each side of the slab stored in neither part.
        label_ids: ``msd`` only: the label values that are liver (default: by name in dataset.json).

    Returns:
        The per-split counts.

    Raises:
        InputError: bad input; no output file is left behind.
    """
    t0 = time.perf_counter()
    cfg = cfg or SlicingConfig()
    split = split or dict(DEFAULT_SPLIT)
    output = Path(output)
    if output.exists() and output.is_dir():
        raise InputError(output, "output path is a folder, expected a .h5 file name")
    cases = find_cases(input_dir, fmt, label_ids)
    clean_stale_parts(output.parent, before=time.time(), stems=[output.name + "."])  # a killed run's leftovers
    assignment = assign_splits([c.case_id for c in cases], split, seed)
    workers = max(1, min(workers or min(os.cpu_count() or 1, 4), len(cases)))
    summary = ConversionSummary(output=output)
    attrs = {**cfg.model_dump(), "source_format": fmt, "split_seed": seed,
             "split_fractions": ",".join(f"{k}={v:g}" for k, v in split.items())}
    if dev_slab is not None:
        attrs["dev_slab"] = f"{dev_slab[0]}:{dev_slab[1]} gap {slab_gap} -> val"
    with atomic_output(output) as tmp:
        with SliceStoreWriter(tmp, cfg.image_size, attrs) as writer:
            bar = tqdm(total=len(cases), desc="convert", unit="case", disable=not progress)
            for res in _results(cases, cfg, workers, fmt):
                ensure_free_space(tmp.parent, res.image.size * 3 + len(res.label) * 96 + (64 << 10), output)
                parts = [(res, assignment[res.case_id])]
                if dev_slab is not None:
                    rest, slab = split_slab(res, *dev_slab, gap=slab_gap)
                    parts = [(rest, assignment[res.case_id]), (slab, "val")]
                for part, sp in parts:
                    writer.append(part, sp)
                    summary.cases[sp] += 1
                    summary.slices[sp] += len(part.label)
                    summary.positive[sp] += int(part.label.sum())
                bar.update(1)
            bar.close()
    summary.seconds = time.perf_counter() - t0
    return summary


def write_store_preview(store: PathLike, path: PathLike, n: int = 8, seed: int = 0) -> Path:
    """Save a PNG of ``n`` random liver-positive slices of a store with their mask contours.

    Args:
        store: a converted HDF5 file.
        path: the PNG to write.
        n: number of slices shown.
        seed: which slices.
    """
    from sam_mix_monai.data.dataset import SliceTable
    from sam_mix_monai.utils.preview import save_overlay_grid

    table = SliceTable(store)
    pos = np.flatnonzero(table.labels > 0)
    rows = np.sort(np.random.default_rng(seed).choice(pos, size=min(n, len(pos)), replace=False)) if len(pos) else np.arange(min(n, len(table)))
    images, masks = table.read_many(rows.tolist())
    titles = [f"{table.case_ids[r]} z={table.slice_index[r]}" for r in rows]
    return save_overlay_grid(images.numpy(), path, masks=masks.numpy(), titles=titles,
                             suptitle=f"{Path(store).name}: liver mask (green)")
