"""engines stage: MONAI/Ignite training and evaluation of SAM-Mix and its baselines.

* :mod:`.config` experiment config (pydantic, YAML, ``--set`` overrides, one-line errors);
* :mod:`.losses` Dice + BCE, IoU regression, CE, FixMatch, segmentation consistency;
* :mod:`.augment` weak / strong views;
* :mod:`.batch` ``prepare_batch`` and network calls shared by the engines;
* :mod:`.loaders` seeded, cycled training streams and case-partitioned evaluation loaders;
* :mod:`.trainer` :class:`SAMMixTrainer` (MONAI ``SupervisedTrainer``);
* :mod:`.evaluator` :class:`SAMMixEvaluator` (MONAI ``SupervisedEvaluator``) and :mod:`.protocols`
  (``slice2d``, ``volume3d``, classification metrics);
* :mod:`.handlers` checkpoints, RNG state, metrics history and curves;
* :mod:`.distributed` ``ignite.distributed`` launching; :mod:`.rundir` run directory and provenance;
* :mod:`.phantom_data` the demo's phantom data; :mod:`.run` a whole run from a config;
  :mod:`.evaluate` evaluating a network or checkpoint.
"""

from sam_mix_monai.engines.augment import WeakStrongAugment
from sam_mix_monai.engines.config import ExperimentConfig, load_config, validate_config
from sam_mix_monai.engines.evaluate import evaluate_checkpoint, evaluate_dataset, format_results
from sam_mix_monai.engines.evaluator import SAMMixEvaluator, build_evaluator
from sam_mix_monai.engines.loaders import EpochStream, evaluation_loader, training_stream
from sam_mix_monai.engines.losses import SAMMixLoss
from sam_mix_monai.engines.protocols import BoundedHausdorffDistanceMetric, VolumeMetrics
from sam_mix_monai.engines.run import TrainingJob, build_training, train
from sam_mix_monai.engines.schedule import build_scheduler, early_stopping, val_score
from sam_mix_monai.engines.trainer import SAMMixTrainer

__all__ = [
    "BoundedHausdorffDistanceMetric",
    "EpochStream",
    "ExperimentConfig",
    "SAMMixEvaluator",
    "SAMMixLoss",
    "SAMMixTrainer",
    "TrainingJob",
    "VolumeMetrics",
    "WeakStrongAugment",
    "build_evaluator",
    "build_scheduler",
    "build_training",
    "early_stopping",
    "evaluate_checkpoint",
    "evaluate_dataset",
    "evaluation_loader",
    "format_results",
    "load_config",
    "train",
    "training_stream",
    "val_score",
    "validate_config",
]
