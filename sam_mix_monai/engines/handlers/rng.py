"""Random-generator state as a checkpointable object (python, numpy, torch CPU and CUDA).

Ignite's ``Checkpoint`` saves any object with ``state_dict`` / ``load_state_dict``; putting an
:class:`RNGState` into the ``to_save`` dict of the resumable checkpoint restores the global
generators on resume. The state only holds types that ``torch.load(weights_only=True)`` accepts.
Under ``torch.distributed`` the checkpoint (written by rank 0) carries rank 0's state; the
trainer's own draws are seeded per iteration and rank, so they do not depend on it.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ["RNGState"]


class RNGState:
    """The process-wide random generators, saved and restored through ``state_dict``.

    Example:
        >>> rng = RNGState(); state = rng.state_dict(); _ = torch.rand(3)
        >>> rng.load_state_dict(state)  # the next torch.rand(3) repeats
    """

    def state_dict(self) -> dict[str, Any]:
        """Current states of python's ``random``, numpy's global generator and torch (CPU, CUDA)."""
        name, keys, pos, has_gauss, cached = np.random.get_state()
        return {
            "python": random.getstate(),
            "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the states saved by :meth:`state_dict`."""
        py = state["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        n = state["numpy"]
        np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
        torch.set_rng_state(state["torch"].cpu())
        cuda = state.get("cuda") or []
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
