"""RNG state round trip, through a weights-only checkpoint file."""

from __future__ import annotations

import random

import numpy as np
import torch

from sam_mix_monai.engines.handlers import RNGState


def test_rng_state_round_trip(tmp_path):
    rng = RNGState()
    torch.save({"rng": rng.state_dict()}, tmp_path / "c.pt")
    expected = (random.random(), np.random.rand(), torch.rand(2))
    random.random(), np.random.rand(), torch.rand(5)
    rng.load_state_dict(torch.load(tmp_path / "c.pt", weights_only=True)["rng"])
    again = (random.random(), np.random.rand(), torch.rand(2))
    assert again[0] == expected[0] and again[1] == expected[1] and torch.equal(again[2], expected[2])
