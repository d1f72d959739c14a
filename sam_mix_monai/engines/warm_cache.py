"""Fill a run's on-disk embedding cache ahead of its evaluation, from another process.

With a frozen SAM encoder the encoder is most of a run's cost on a CPU, and much of it is spent on
slices the training only evaluates: the validation split, the final evaluation's test and
cross-domain slices. Their embeddings do not depend on the training, so a second process with a
free core can compute them while the run trains, into the run's ``model.embedding_cache_dir``, in
the order the run needs them (:func:`warm_sets`); the run then reads them from disk. The demo does
this on its second core before the U-Net trains there.

The embeddings are bit for bit those the run would compute itself: the same model config, the same
encoder backend (:func:`attach_frozen_cache`, ONNX Runtime on the CPU) and thread count, the same
slices through the same loader and preparation (:meth:`~sam_mix_monai.networks.SAMMix.encode`); the
cache key is the exact encoder input, so nothing else can be looked up.

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
from typing import Any, Sequence

import torch
from monai.utils import set_determinism
from torch import nn

from sam_mix_monai.data import SliceDataset
from sam_mix_monai.engines.batch import prepare_slices
from sam_mix_monai.engines.config import ExperimentConfig
from sam_mix_monai.engines.distributed import resolve_device
from sam_mix_monai.engines.loaders import evaluation_loader
from sam_mix_monai.networks.embedding_cache import EmbeddingCache, attach_embedding_cache
from sam_mix_monai.networks.registry import build_model
from sam_mix_monai.utils.errors import InputError
from sam_mix_monai.utils.precision import autocast, resolve_precision

__all__ = ["attach_frozen_cache", "build_run_model", "evaluation_sets", "warm_embedding_cache", "warm_sets", "main"]

logger = logging.getLogger(__name__)


def _fast_frozen_encoder(sam: nn.Module, device: torch.device) -> tuple[nn.Module | None, str]:
    """A frozen LiteMedSAM encoder on the CPU computes the cache's embeddings through ONNX Runtime (3x eager fp32)."""
    from sam_mix_monai.networks.lite_medsam import LiteImageEncoder
    from sam_mix_monai.networks.onnx_encoder import OnnxEncoder

    if device.type != "cpu" or not isinstance(sam.image_encoder, LiteImageEncoder):
        return None, "torch"
    try:
        return OnnxEncoder(sam.image_encoder, batch=1), "onnxruntime"
    except Exception as e:  # no ONNX Runtime, or an export problem: the eager encoder is correct, only slower
        logger.warning("frozen encoder through ONNX Runtime unavailable (%s): eager PyTorch", e)
        return None, "torch"


def attach_frozen_cache(model: nn.Module, cfg: ExperimentConfig, device: torch.device) -> EmbeddingCache | None:
    """Give a model with a frozen SAM encoder the run's embedding cache (``None``: no SAM, or a trained encoder).

    The cache's embeddings are computed on the fastest backend (ONNX Runtime for LiteMedSAM on the CPU);
    its size and directory are ``model.embedding_cache_mb`` and ``model.embedding_cache_dir``.
    """
    if not hasattr(model, "sam") or cfg.model.resolved_encoder_mode() != "frozen":
        return None
    compute, backend = _fast_frozen_encoder(model.sam, device)
    return attach_embedding_cache(model.sam, cfg.model.embedding_cache_mb, cfg.model.embedding_cache_dir, compute, backend)


def build_run_model(cfg: ExperimentConfig, device: torch.device) -> tuple[nn.Module, EmbeddingCache | None]:
    """A run's model as its training builds it: thread count, seed, weights, and the frozen encoder's cache.

    The training (:func:`~sam_mix_monai.engines.run.build_training`) and the process that warms its cache
    both build the model here, so that a randomly initialised frozen encoder has the same weights (and cache
    folder) in both.

    Returns:
        ``(model on the CPU, its embedding cache or None)``.
    """
    tc = cfg.train
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)  # before the ONNX Runtime session: it takes torch's thread count
    if tc.deterministic:
        set_determinism(seed=tc.seed)
    else:
        torch.manual_seed(tc.seed)
    model = build_model(cfg.model)
    return model, attach_frozen_cache(model, cfg, device)


def evaluation_sets(cfg: ExperimentConfig) -> list[tuple[str, Path, str | None]]:
    """``(name, store, split)`` of a run's final evaluation: its test split, then each cross-domain store."""
    sets = [("test", Path(cfg.data.path), cfg.data.test_split)] if cfg.data.test_split is not None else []
    return sets + [(f"cross_domain:{cd.name}", Path(cd.path), cd.split) for cd in cfg.evaluate.cross_domain]


def warm_sets(cfg: ExperimentConfig) -> list[tuple[str, Path, str | None]]:
    """What a run evaluates, in the order it needs it: its validation split (every epoch), then :func:`evaluation_sets`."""
    d = cfg.data
    val = [("val", Path(d.path), d.val_split)] if d.val_split is not None and len(SliceDataset(d.path, split=d.val_split)) else []
    return val + evaluation_sets(cfg)


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
    for name, path, split in warm_sets(cfg) if sets is None else sets:
        before = cache.misses
        for batch in evaluation_loader(path, split, cfg.evaluate.batch_size):
            image, _ = prepare_slices(batch, device)
            with autocast(precision, device):  # part of the cache key, as in the evaluator
                model.encode(image)
        logger.info("%s (%s): %d slices encoded", name, path, cache.misses - before)
    return cache.misses


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
    from sam_mix_monai.engines.handlers import METRICS_FILE

    try:
        return bool(json.loads((run_dir / METRICS_FILE).read_text(encoding="utf-8")).get("results"))
    except (OSError, ValueError, AttributeError):
        return False


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
