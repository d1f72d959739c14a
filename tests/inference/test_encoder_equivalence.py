"""The default CPU encoder backend (ONNX Runtime fp32) against eager fp32 on every real CT at hand, in 3D.

Slow (eager LiteMedSAM on ~100 slices per CT: minutes on 2 cores); skipped where ``../shared`` is absent.
The same measurement, with timings, is ``make bench-backends`` (docs/benchmarks.md).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import require_real

#: Largest 3D Dice change (against the reference mask) allowed between the backends (issue 21).
DICE_CHANGE_TOLERANCE = 0.002


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


@pytest.mark.slow
@pytest.mark.parametrize("case", ["ircadb_07", "ircadb_17"])
def test_onnx_runtime_default_matches_eager_in_3d(case: str) -> None:
    import sam_mix_monai
    from sam_mix_monai.data.io import read_volume
    from sam_mix_monai.data.ircadb import read_ircadb_liver

    folder = require_real(case)
    image = read_volume(folder / "PATIENT_DICOM")
    ref = np.asarray(read_ircadb_liver(folder / "MASKS_DICOM.zip", image)[0])[0] > 0
    idx = [np.flatnonzero(ref.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    box = ",".join(str(int(v)) for v in [*(i[0] for i in idx), *(i[-1] for i in idx)])
    default = sam_mix_monai.Segmenter(device="cpu")
    eager = sam_mix_monai.Segmenter(device="cpu", encoder_backend="torch")
    masks = [np.asarray(s.segment(folder / "PATIENT_DICOM", box=box).dataobj) > 0 for s in (default, eager)]
    assert default.encoder_backend == "onnxruntime" and eager.encoder_backend == "torch"
    change = abs(_dice(masks[0], ref) - _dice(masks[1], ref))
    print(f"{case}: 3D Dice onnxruntime {_dice(masks[0], ref):.4f}, eager {_dice(masks[1], ref):.4f}, "
          f"change {change:.4f}; masks agree at Dice {_dice(masks[0], masks[1]):.4f}")
    assert change <= DICE_CHANGE_TOLERANCE
