"""Image-embedding cache for a frozen SAM encoder (``encoder_mode: frozen``).

With the encoder frozen, a slice's embedding never changes during training, so the encoder (the
costly part: ~75 GFLOP per LiteMedSAM slice) runs once per distinct slice, and every later step
costs only the prompt encoder, the mask decoder and the classifier.

The key of an entry is the SHA-1 of the exact encoder input (the slice after the family's
``pixel_norm``), its shape and dtype, and the autocast state; the cache belongs to one encoder whose
weights are fingerprinted when the cache is attached. A slice store's slice under a given
preprocessing therefore always maps to the same entry, and any change of data, resizing, window,
normalisation or augmentation makes a new key: the cache cannot return a stale embedding. Entries
are kept in memory (float32, as computed, so a cached step is the same computation as a recomputed
one) up to ``max_bytes``; past that, new slices are encoded and not stored in memory.

With a ``directory``, entries are also written to ``<directory>/<encoder fingerprint>/<key>.pt``
(atomically: parallel runs may share it) and read from there on a memory miss, so that runs of a
study evaluating the same slices with the same frozen encoder encode each slice once in all.

Attach with :func:`attach_embedding_cache`; :func:`encode_images` is the one call site
(:func:`.decoding.sam_forward`, :func:`.box_prompt.encode_slices`).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch
from torch import nn

__all__ = ["EmbeddingCache", "attach_embedding_cache", "encode_images", "encoder_fingerprint"]

logger = logging.getLogger(__name__)


def encoder_fingerprint(encoder: nn.Module) -> str:
    """SHA-1 over the encoder's state dict (names, shapes, bytes): identifies its weights."""
    h = hashlib.sha1()
    for name, t in encoder.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class EmbeddingCache:
    """In-memory map from encoder input to its embedding.

    Args:
        fingerprint: :func:`encoder_fingerprint` of the encoder the cache serves.
        max_bytes: memory cap for stored embeddings (entries past it are not kept in memory).
        directory: optional on-disk cache root (entries under ``directory / fingerprint[:16]``).

    Attributes:
        hits, misses: lookups served from the cache (memory or disk) / computed.
    """

    def __init__(self, fingerprint: str, max_bytes: int = 2 << 30, directory: str | Path | None = None) -> None:
        #: computes the missing embeddings instead of the encoder passed to :meth:`encode` (e.g. an ONNX Runtime
        #: export of it: :func:`attach_embedding_cache` with ``compute``); ``None``: that encoder
        self.compute: nn.Module | None = None
        self.fingerprint = fingerprint
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._store: dict[str, torch.Tensor] = {}
        self.directory = None if directory is None else Path(directory) / fingerprint[:16]
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)

    def __len__(self) -> int:
        return len(self._store)

    @staticmethod
    def key(x: torch.Tensor) -> str:
        """Key of one encoder input (C, H, W): content, shape, dtype and autocast state."""
        h = hashlib.sha1(str((tuple(x.shape), str(x.dtype), _autocast_state(x.device))).encode())
        h.update(x.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    def encode(self, encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Embeddings of a batch (B, 3, S, S): cached ones looked up, the others computed and stored.

        The embeddings carry no gradient (the encoder is frozen).
        """
        keys = [self.key(xi) for xi in x]
        found: dict[int, torch.Tensor] = {}
        for i, k in enumerate(keys):
            emb = self._store.get(k)
            if emb is None and self.directory is not None:
                emb = self._read(k)
                if emb is not None:
                    self._keep(k, emb)
            if emb is not None:
                found[i] = emb.to(x.device)
        missing = [i for i in range(len(keys)) if i not in found]
        self.hits += len(found)
        self.misses += len(missing)
        if missing:
            with torch.no_grad():
                fresh = (self.compute or encoder)(x[missing])
            for i, emb in zip(missing, fresh):
                found[i] = emb
                self._keep(keys[i], emb.detach())
                if self.directory is not None:
                    self._write(keys[i], emb.detach())
        return torch.stack([found[i] for i in range(len(keys))])

    def _keep(self, key: str, emb: torch.Tensor) -> None:
        size = emb.numel() * emb.element_size()
        if self.nbytes + size <= self.max_bytes:
            self._store[key] = emb
            self.nbytes += size

    def _read(self, key: str) -> torch.Tensor | None:
        path = self.directory / f"{key}.pt"
        if not path.is_file():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a torn or foreign file: recompute (and overwrite) it
            return None

    def _write(self, key: str, emb: torch.Tensor) -> None:
        path = self.directory / f"{key}.pt"
        tmp = path.with_name(f".{key}.{os.getpid()}.tmp")
        torch.save(emb.cpu().clone(), tmp)
        os.replace(tmp, path)


def _autocast_state(device: torch.device) -> str:
    kind = device.type if device.type in ("cpu", "cuda") else "cpu"
    if torch.is_autocast_enabled(kind):
        return f"{kind}:{torch.get_autocast_dtype(kind)}"
    return "off"


def attach_embedding_cache(sam: nn.Module, max_mb: int, directory: str | Path | None = None,
                           compute: nn.Module | None = None, backend: str = "torch") -> EmbeddingCache | None:
    """Give a SAM with a frozen encoder an :class:`EmbeddingCache` (``sam.embedding_cache``).

    A plain attribute, not a submodule: the state dict and checkpoints are unchanged.

    Args:
        sam: the SAM (its image encoder must have no trainable parameter).
        max_mb: memory cap in MiB (0 and no ``directory``: no cache).
        directory: on-disk cache root, or ``None`` (memory only).
        compute: what computes a missing embedding (``None``: the encoder itself), e.g. its ONNX Runtime
            export (:class:`~sam_mix_monai.networks.onnx_encoder.OnnxEncoder`, 3x eager fp32 on a CPU).
        backend: the name of that backend, part of the on-disk key (embeddings of two backends differ in
            the last bits, so they are never mixed).

    Returns:
        The cache, or ``None`` for ``max_mb == 0``.

    Raises:
        ValueError: the encoder has trainable parameters (LoRA or full training).
    """
    if max_mb <= 0 and directory is None:
        sam.embedding_cache = None
        return None
    if any(p.requires_grad for p in sam.image_encoder.parameters()):
        raise ValueError("an embedding cache needs a frozen image encoder (encoder_mode: frozen)")
    fingerprint = encoder_fingerprint(sam.image_encoder)
    if backend != "torch":
        fingerprint = hashlib.sha1(f"{fingerprint}:{backend}".encode()).hexdigest()
    cache = EmbeddingCache(fingerprint, max(max_mb, 0) << 20, directory)
    cache.compute = compute
    sam.embedding_cache = cache
    logger.info("frozen SAM encoder: embedding cache up to %d MiB in memory%s", max_mb,
                f", on disk in {cache.directory}" if cache.directory else "")
    return cache


def encode_images(sam: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``sam.image_encoder(x)``, through ``sam.embedding_cache`` when one is attached."""
    cache = getattr(sam, "embedding_cache", None)
    if cache is None:
        return sam.image_encoder(x)
    return cache.encode(sam.image_encoder, x)
