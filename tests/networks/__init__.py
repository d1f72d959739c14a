"""Tests of the networks stage, and small helpers they share."""

from __future__ import annotations

from typing import Iterator

import pytest
import torch


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run a test on one intra-op thread.

    On the shared 2-core CI machine, small ops with two OpenMP threads are often 10-50x slower
    than with one (the threads wait on each other while other processes hold the cores).
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def mixed_batch(n: int = 4, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch alternating liver (bright disc) and no-liver slices: ``(images, labels)``."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images = 0.2 + 0.05 * torch.rand(n, 1, size, size, generator=g)
    labels = torch.tensor([i % 2 == 0 for i in range(n)], dtype=torch.long)
    disc = ((yy - size * 0.45) ** 2 + (xx - size * 0.35) ** 2) < (size * 0.2) ** 2
    images[labels == 1, 0] += 0.4 * disc.float()
    return images.clamp(0, 1), labels

