"""Frozen-encoder embedding cache: same loss and gradients as recomputing, keyed by the encoder input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sam_mix_monai.networks import ModelConfig, build_model
from sam_mix_monai.networks.embedding_cache import EmbeddingCache, attach_embedding_cache
from tests.networks import mixed_batch, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def _loss_and_grads(net, x, labels):
    net.zero_grad(set_to_none=True)
    out = net(x)
    loss = F.binary_cross_entropy_with_logits(out["mask_logits"], (x > 0.5).float())
    loss = loss + F.cross_entropy(out["class_logits"], labels) + out["iou_pred"].square().mean()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads


def test_cached_loss_equals_recomputed_loss() -> None:
    torch.manual_seed(0)
    net = build_model(ModelConfig(name="sam_mix", size="compact", image_size=64, encoder_mode="frozen")).train()
    x, labels = mixed_batch(4, 64)
    plain_loss, plain_grads = _loss_and_grads(net, x, labels)  # no cache: the encoder runs

    cache = attach_embedding_cache(net.sam, max_mb=64)
    first_loss, _ = _loss_and_grads(net, x, labels)
    assert (cache.misses, cache.hits, len(cache)) == (4, 0, 4)
    cached_loss, cached_grads = _loss_and_grads(net, x, labels)  # every embedding from the cache
    assert (cache.misses, cache.hits) == (4, 4)
    assert cached_loss == first_loss == plain_loss
    assert cached_grads.keys() == plain_grads.keys() and any(k.startswith("sam.mask_decoder.") for k in cached_grads)
    for k in plain_grads:
        assert torch.equal(cached_grads[k], plain_grads[k]), k

    _loss_and_grads(net, x.flip(-1), labels)  # another view of the same slices is another key
    assert cache.misses == 8 and len(cache) == 8


def test_key_follows_content_and_preprocessing() -> None:
    x = torch.rand(3, 16, 16)
    assert EmbeddingCache.key(x) == EmbeddingCache.key(x.clone())
    assert EmbeddingCache.key(x) != EmbeddingCache.key(x * 255.0)  # e.g. another pixel_norm
    assert EmbeddingCache.key(x) != EmbeddingCache.key(x.double())
    y = x.clone()
    y[0, 0, 0] += 1e-6
    assert EmbeddingCache.key(x) != EmbeddingCache.key(y)


def test_memory_cap_and_frozen_encoder_required() -> None:
    net = build_model(ModelConfig(name="sam_mix", size="compact", image_size=64, encoder_mode="frozen"))
    cache = attach_embedding_cache(net.sam, max_mb=1)
    cache.max_bytes = 2 * 128 * 4 * 4 * 4  # room for two compact embeddings
    with torch.no_grad():
        net(mixed_batch(4, 64)[0])
    assert len(cache) == 2 and cache.nbytes == cache.max_bytes
    assert attach_embedding_cache(net.sam, max_mb=0) is None and net.sam.embedding_cache is None
    lora = build_model(ModelConfig(name="sam_mix", size="compact", image_size=64, encoder_mode="lora"))
    with pytest.raises(ValueError, match="frozen image encoder"):
        attach_embedding_cache(lora.sam, max_mb=64)


def test_disk_cache_is_shared_between_caches_of_the_same_encoder(tmp_path) -> None:
    torch.manual_seed(0)
    net = build_model(ModelConfig(name="sam_mix", size="compact", image_size=64, encoder_mode="frozen")).eval()
    x = mixed_batch(3, 64)[0]
    first = attach_embedding_cache(net.sam, max_mb=0, directory=tmp_path)
    with torch.no_grad():
        a = net(x)["mask_logits"]
    assert first.misses == 3 and len(first) == 0 and len(list(first.directory.glob("*.pt"))) == 3
    second = attach_embedding_cache(net.sam, max_mb=64, directory=tmp_path)  # e.g. the next run of a study
    with torch.no_grad():
        b = net(x)["mask_logits"]
    assert (second.hits, second.misses) == (3, 0) and torch.equal(a, b)
