"""The demo's data: phantom cohorts generated and converted once, reused afterwards.

Domain a (LiTS layout) is split by case into train / val / test; domain b (TotalSegmentator
layout, "another hospital") is the cross-domain test set. Both go through the same public
converter as real data (:func:`sam_mix_monai.data.converter.convert`).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from sam_mix_monai.data.converter import convert
from sam_mix_monai.data.phantom import generate_cohort
from sam_mix_monai.engines.config import PhantomDataConfig
from sam_mix_monai.transforms import SlicingConfig

__all__ = ["ensure_phantom_data"]

logger = logging.getLogger(__name__)


def _build(cfg: PhantomDataConfig, domain: str, layout: str, cases: int, split: dict[str, float], target: Path,
           workers: int | None, progress: bool) -> None:
    nifti = cfg.root / f"nifti_{domain}"
    if nifti.exists():
        shutil.rmtree(nifti)  # a previous, interrupted generation
    generate_cohort(nifti, cases, layout=layout, domain=domain, seed=cfg.seed, matrix=cfg.matrix, slices=cfg.slices,
                    workers=workers, progress=progress)
    slicing = SlicingConfig(keep_rate=cfg.keep_rate if cfg.keep_rate != "all" else "all", image_size=cfg.image_size)
    summary = convert(nifti, target, layout, slicing, split, seed=cfg.seed, workers=workers, progress=progress)
    logger.info("phantom domain %s -> %s\n%s", domain, target, summary.table())
    shutil.rmtree(nifti, ignore_errors=True)  # the HDF5 store is all training needs


def ensure_phantom_data(cfg: PhantomDataConfig, workers: int | None = None, progress: bool = True) -> tuple[Path, Path]:
    """Generate and convert the phantom cohorts unless their stores already exist.

    Args:
        cfg: the phantom section of the experiment config.
        workers: generator / converter processes (``None``: their defaults).
        progress: show progress bars.

    Returns:
        ``(domain_a_store, domain_b_store)``.
    """
    if not cfg.domain_a.is_file():
        _build(cfg, "a", "lits", cfg.cases_a, dict(cfg.split), cfg.domain_a, workers, progress)
    if not cfg.domain_b.is_file():
        _build(cfg, "b", "totalseg", cfg.cases_b, {"test": 1.0}, cfg.domain_b, workers, progress)
    return cfg.domain_a, cfg.domain_b
