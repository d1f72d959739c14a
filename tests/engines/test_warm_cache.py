"""Warming a run's on-disk embedding cache from another process: its final evaluation then encodes nothing."""

from __future__ import annotations

import pytest
import torch

from sam_mix_monai.engines.config import validate_config
from sam_mix_monai.engines.evaluate import evaluate_dataset
from sam_mix_monai.engines.run import build_training
from sam_mix_monai.engines.run_model import build_run_model, evaluation_sets, labelled_dataset, warm_sets
from sam_mix_monai.engines.warm_cache import main, training_encodes_labelled, warm_embedding_cache
from sam_mix_monai.utils.errors import InputError
from tests.engines.conftest import tiny_config, tiny_phantom, write_config  # noqa: F401 (fixture)


def _cfg(tiny_phantom, tmp_path, cache):
    store_a, store_b = tiny_phantom
    return validate_config(tiny_config(store_a, tmp_path / "run", cross=store_b,
                                       model={"encoder_mode": "frozen", "liver_head": True, "embedding_cache_dir": cache}))


def _evaluation_misses(cfg) -> tuple[int, int]:
    """Encoder calls and cache hits of the run's final evaluation sets, with the model built as the run builds it."""
    model, cache = build_run_model(cfg, torch.device("cpu"))
    model.eval()
    for _, path, split in evaluation_sets(cfg):
        evaluate_dataset(model, path, split, ["slice2d"], "cpu", batch_size=16)
    return cache.misses, cache.hits


def test_warmed_cache_serves_the_whole_final_evaluation(tiny_phantom, tmp_path):
    cfg = _cfg(tiny_phantom, tmp_path, str(tmp_path / "cache"))
    assert [s[0] for s in evaluation_sets(cfg)] == ["test", "cross_domain:b"]
    assert [s[0] for s in warm_sets(cfg)] == ["val", "test", "cross_domain:b"]
    n = warm_embedding_cache(cfg)
    assert n > 0 and len(list((tmp_path / "cache").rglob("*.pt"))) == n
    assert warm_embedding_cache(cfg) == 0  # everything is on disk now
    misses, hits = _evaluation_misses(cfg)
    assert misses == 0 and 0 < hits < n  # the val slices are not part of the final evaluation
    # The control: the same evaluation with an empty cache folder encodes every slice itself.
    cold = _cfg(tiny_phantom, tmp_path, str(tmp_path / "cold"))
    assert _evaluation_misses(cold) == (hits, 0)


def _head_cfg(tiny_phantom, tmp_path, cache, **model):
    """A run whose training encodes its labelled slices: a liver head on the frozen encoder, no SAM loss."""
    store_a, store_b = tiny_phantom
    return validate_config(tiny_config(
        store_a, tmp_path / "run", cross=store_b,
        model={"encoder_mode": "frozen", "liver_head": True, "embedding_cache_dir": cache, **model},
        loss={"seg_dice": 0.0, "seg_bce": 0.0, "iou": 0.0, "head": 1.0}, augment={"labelled": False},
        train={"epochs": 1, "iterations_per_epoch": 4, "batch_size": 4}))


def _training_misses(cfg, tmp_path) -> int:
    """Encoder calls of one training epoch with its validation (the run's own cache counts them)."""
    job = build_training(cfg, tmp_path / "run")
    cache = job.model.sam.embedding_cache
    job.trainer.run()
    return cache.misses


def test_warmed_labelled_slices_leave_the_training_nothing_to_encode(tiny_phantom, tmp_path):
    cfg = _head_cfg(tiny_phantom, tmp_path, str(tmp_path / "cache"))
    assert training_encodes_labelled(cfg)
    n = warm_embedding_cache(cfg)
    assert n >= len(labelled_dataset(cfg)) > 0
    assert _training_misses(cfg, tmp_path) == 0
    # The control: warming only the evaluated sets leaves the training its labelled slices to encode.
    cold = _head_cfg(tiny_phantom, tmp_path, str(tmp_path / "cold"))
    warm_embedding_cache(cold, warm_sets(cold))
    assert _training_misses(cold, tmp_path) > 0


def test_labelled_slices_are_warmed_only_when_the_training_encodes_them(tiny_phantom, tmp_path):
    cache = str(tmp_path / "cache")
    assert not training_encodes_labelled(_head_cfg(tiny_phantom, tmp_path, cache, liver_head=False))
    store_a, _ = tiny_phantom
    augmented = validate_config(tiny_config(store_a, tmp_path / "r", model={"encoder_mode": "frozen", "embedding_cache_dir": cache},
                                            augment={"labelled": True}))
    assert not training_encodes_labelled(augmented)  # its augmented views are never the stored slices


def test_warming_needs_a_cache_folder_and_a_frozen_sam(tiny_phantom, tmp_path, capsys):
    with pytest.raises(InputError, match="embedding_cache_dir is not set"):
        warm_embedding_cache(_cfg(tiny_phantom, tmp_path, None))
    store_a, _ = tiny_phantom
    unet = validate_config(tiny_config(store_a, tmp_path / "u", model={"name": "unet", "embedding_cache_dir": str(tmp_path)}))
    with pytest.raises(InputError, match="no frozen SAM encoder"):
        warm_embedding_cache(unet)
    path = write_config(tmp_path / "c.yaml", tiny_config(store_a, tmp_path / "r"))
    assert main(["--config", str(path)]) == 2
    assert "embedding_cache_dir is not set" in capsys.readouterr().err


def test_unless_done_skips_a_finished_run(tiny_phantom, tmp_path):
    store_a, _ = tiny_phantom
    raw = tiny_config(store_a, tmp_path / "r", model={"encoder_mode": "frozen", "embedding_cache_dir": str(tmp_path / "c")})
    path = write_config(tmp_path / "c.yaml", raw)
    done = tmp_path / "done"
    done.mkdir()
    (done / "metrics.json").write_text('{"results": {"test": {}}}')
    assert main(["--config", str(path), "--unless-done", str(done)]) == 0
    assert not (tmp_path / "c").exists()  # nothing was built or encoded
    assert main(["--config", str(path), "--unless-done", str(tmp_path / "absent")]) == 0
    assert list((tmp_path / "c").rglob("*.pt"))
