"""The model of a run, built the same way by its training and by any process that shares its embedding cache.

:func:`build_run_model` sets the run's thread count and seed, builds the network and gives a frozen SAM
encoder its embedding cache (:func:`attach_frozen_cache`: computed through ONNX Runtime for LiteMedSAM on
the CPU, kept on disk under ``model.embedding_cache_dir`` when set). :func:`evaluation_sets` and
:func:`warm_sets` name the slices a run evaluates, :func:`labelled_dataset` those it learns masks from.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from monai.utils import set_determinism
from torch import nn

from torch.utils.data import ConcatDataset, Dataset

from sam_mix_monai.data import SliceDataset
from sam_mix_monai.engines.config import ExperimentConfig
from sam_mix_monai.networks.embedding_cache import EmbeddingCache, attach_embedding_cache
from sam_mix_monai.networks.registry import build_model

__all__ = ["attach_frozen_cache", "build_run_model", "evaluation_sets", "labelled_dataset", "warm_sets"]

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


def labelled_dataset(cfg: ExperimentConfig) -> Dataset:
    """The run's labelled training slices: ``data.n_labelled`` liver slices of the training split and their
    known liver-free ones (``data.n_empty``), plus ``data.extra_path``'s when set (e.g. phantom slices)."""
    d = cfg.data
    labelled: Dataset = SliceDataset(d.path, d.train_split, d.n_labelled, "labelled" if d.n_labelled is not None else "all",
                                     d.label_seed, n_empty=d.n_empty)
    if d.extra_path is not None:
        labelled = ConcatDataset([labelled, SliceDataset(d.extra_path, "train", d.extra_n_labelled, "labelled", d.label_seed,
                                                         n_empty=int(round(d.extra_n_labelled * d.empty_per_labelled)))])
    return labelled
