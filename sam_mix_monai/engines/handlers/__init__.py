"""Engine handlers, one concept per module.

* :mod:`.rng` checkpointable random-generator states;
* :mod:`.checkpoint` atomic last / best checkpoints (Ignite ``Checkpoint``) and the run record;
* :mod:`.history` ``metrics.json`` and the curves PNG (:mod:`.curves`).

The rest comes from MONAI and Ignite: ``ValidationHandler``, ``LrScheduleHandler``, ``StatsHandler``,
``TensorBoardStatsHandler``, ``CheckpointLoader``, Ignite's ``EarlyStopping`` and ``ProgressBar``.
"""

from sam_mix_monai.engines.handlers.checkpoint import BEST, LAST, AtomicSaver, RunRecord, best_checkpoint, last_checkpoint
from sam_mix_monai.engines.handlers.curves import plot_curves
from sam_mix_monai.engines.handlers.history import CURVES_FILE, METRICS_FILE, MetricsHistory
from sam_mix_monai.engines.handlers.rng import RNGState

__all__ = [
    "BEST",
    "CURVES_FILE",
    "LAST",
    "METRICS_FILE",
    "AtomicSaver",
    "MetricsHistory",
    "RNGState",
    "RunRecord",
    "best_checkpoint",
    "last_checkpoint",
    "plot_curves",
]
