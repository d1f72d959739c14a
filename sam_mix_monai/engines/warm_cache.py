"""Fill a run's on-disk embedding cache ahead of its evaluation, from another process.

With a frozen SAM encoder the encoder is most of a run's cost on a CPU, and much of it is spent on
slices the training only evaluates: the validation split, the final evaluation's test and
cross-domain slices. Their embeddings do not depend on the training, so a second process with a
free core can compute them while the run trains, into the run's ``model.embedding_cache_dir``, in
the order the run needs them (:func:`.run_model.warm_sets`); the run then reads them from disk.
The demo does this on its second core before the U-Net trains there.

The embeddings are bit for bit those the run would compute itself: the model built as the run builds
it (:func:`.run_model.build_run_model`: the same encoder backend and thread count), the same slices
through the same loader and preparation (:meth:`~sam_mix_monai.networks.SAMMix.encode`); the cache
key is the exact encoder input, so nothing else can be looked up.

Command line (what the demo runs)::

    python -m sam_mix_monai.engines.warm_cache --config configs/phantom_demo.yaml --set train.num_threads=1 \\
        [--unless-done runs/demo/runs/sam_mix_50]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

import torch
from torch.utils.data import DataLoader, Subset

from sam_mix_monai.engines.batch import prepare_slices
from sam_mix_monai.engines.config import ExperimentConfig
from sam_mix_monai.engines.distributed import resolve_device
from sam_mix_monai.engines.handlers import METRICS_FILE
from sam_mix_monai.engines.loaders import evaluation_loader
from sam_mix_monai.engines.run_model import build_run_model, labelled_dataset, warm_sets
from sam_mix_monai.utils.errors import InputError
from sam_mix_monai.utils.precision import autocast, resolve_precision

__all__ = ["main", "training_encodes_labelled", "warm_embedding_cache"]

logger = logging.getLogger(__name__)


@torch.no_grad()
def warm_embedding_cache(cfg: ExperimentConfig, sets: Sequence[tuple[str, Path, str | None]] | None = None) -> int:
    """Encode every slice of ``sets`` (default: :func:`warm_sets`) into ``cfg``'s on-disk cache.

    Args:
        cfg: the run's experiment config (``model.embedding_cache_dir`` set, encoder frozen).
        sets: ``(name, store, split)`` to encode.

    Returns:
        How many slices were encoded now (the others were on disk already).

    Raises:
        InputError: no on-disk cache to fill (``model.embedding_cache_dir`` unset, or no frozen SAM encoder).
    """
    if cfg.model.embedding_cache_dir is None:
        raise InputError(None, "model.embedding_cache_dir is not set: there is no on-disk cache to fill")
    device = resolve_device(cfg.train.device)
    precision = resolve_precision(cfg.train.precision, device)
    model, cache = build_run_model(cfg, device)
    model = model.to(device).eval()
    if cache is None:
        raise InputError(None, f"model {cfg.model.name!r} has no frozen SAM encoder: there is no embedding cache to fill")
    loaders: list[tuple[str, DataLoader]] = []
    if sets is None and training_encodes_labelled(cfg):
        labelled = labelled_dataset(cfg)
        backwards = Subset(labelled, list(range(len(labelled)))[::-1])  # the run starts from its own shuffled order
        loaders.append(("labelled training slices", DataLoader(backwards, batch_size=1, shuffle=False)))
    for name, path, split in warm_sets(cfg) if sets is None else sets:
        loaders.append((f"{name} ({path})", evaluation_loader(path, split, cfg.evaluate.batch_size)))
    for name, loader in loaders:
        before = cache.misses
        for batch in loader:
            image, _ = prepare_slices(batch, device)
            with autocast(precision, device):  # part of the cache key, as in the trainer and the evaluator
                model.encode(image)
        logger.info("%s: %d slices encoded", name, cache.misses - before)
    return cache.misses


def training_encodes_labelled(cfg: ExperimentConfig) -> bool:
    """Whether the run's training encodes its stored labelled slices (a liver head, or a SAM loss term, on
    unaugmented labelled slices): only then can another process encode them for it."""
    lc = cfg.loss
    uses = (cfg.model.liver_head and lc.head > 0) or lc.seg_dice > 0 or lc.seg_bce > 0 or lc.iou > 0 or lc.decoder > 0
    return bool(uses) and not cfg.augment.labelled


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sam_mix_monai.engines.warm_cache --config FILE [--set K=V ...] [--unless-done RUN_DIR]``."""
    from sam_mix_monai.engines.config import load_config

    p = argparse.ArgumentParser(prog="warm_cache", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="the run's experiment YAML")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--unless-done", type=Path, default=None, metavar="RUN_DIR",
                   help="do nothing when this run already wrote its results (metrics.json)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    if args.unless_done is not None and _has_results(args.unless_done):
        logger.info("%s has its results already: nothing to warm", args.unless_done)
        return 0
    try:
        n = warm_embedding_cache(load_config(args.config, args.overrides))
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    logger.info("embedding cache warmed: %d slices encoded", n)
    return 0


def _has_results(run_dir: Path) -> bool:
    try:
        return bool(json.loads((run_dir / METRICS_FILE).read_text(encoding="utf-8")).get("results"))
    except (OSError, ValueError, AttributeError):
        return False


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
