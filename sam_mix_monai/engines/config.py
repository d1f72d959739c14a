"""Experiment configuration: pydantic models, YAML loading, ``--set`` overrides, one-line errors.

An experiment is one YAML file (see ``configs/``) validated by :class:`ExperimentConfig`. Every
section forbids unknown keys, so a typo is an error, reported as one line that names the file and
the dotted key::

    configs/x.yaml: train.lr: Input should be a valid number, unable to parse string as a number

Example:
    >>> cfg = load_config("configs/phantom_demo.yaml", ["train.epochs=2", "model.image_size=64"])  # doctest: +SKIP
    >>> cfg.train.epochs  # doctest: +SKIP
    2
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sam_mix_monai.networks.registry import ModelConfig
from sam_mix_monai.utils.errors import InputError, PathLike
from sam_mix_monai.utils.precision import normalize_precision

__all__ = [
    "AugmentConfig",
    "CrossDomainConfig",
    "DataConfig",
    "EvaluateConfig",
    "ExperimentConfig",
    "LossConfig",
    "OutputConfig",
    "PhantomDataConfig",
    "TrainConfig",
    "UnlabelledConfig",
    "apply_overrides",
    "dump_config",
    "format_validation_error",
    "load_config",
    "read_yaml_mapping",
    "validate_config",
]

Split = Literal["train", "val", "test"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PhantomDataConfig(_Strict):
    """Phantom dataset generated (when absent) before training, for the CPU demo.

    Writes ``<root>/phantom_a.h5`` (domain a, LiTS layout, split by case) and ``<root>/phantom_b.h5``
    (domain b, TotalSegmentator layout, all ``test``: the cross-domain cohort).

    Attributes:
        root: output folder (NIfTI cases under ``<root>/nifti_{a,b}``).
        cases_a, cases_b: cases per domain.
        matrix, slices: in-plane matrix and slices per generated volume.
        image_size, keep_rate: converter settings (``keep_rate`` ``"all"`` keeps every slice).
        split: case split fractions of domain a.
        seed: generator and split seed.
    """

    root: Path = Path("data/phantom")
    cases_a: int = Field(12, ge=3)
    cases_b: int = Field(4, ge=1)
    matrix: int = Field(256, ge=32, le=2048)
    slices: int = Field(48, ge=16, le=2048)
    image_size: int = Field(256, ge=16, le=2048)
    keep_rate: float | Literal["all"] = "all"
    split: dict[Split, float] = {"train": 0.6, "val": 0.15, "test": 0.25}
    seed: int = Field(0, ge=0)

    @property
    def domain_a(self) -> Path:
        """The domain-a store."""
        return self.root / "phantom_a.h5"

    @property
    def domain_b(self) -> Path:
        """The domain-b (cross-domain) store."""
        return self.root / "phantom_b.h5"


class DataConfig(_Strict):
    """Training data.

    Attributes:
        path: HDF5 slice store (``sam-mix convert`` output, or the original SAM-Mix layout).
        n_labelled: liver-positive training slices that keep their masks (``None``: all).
        empty_per_labelled: liver-free training slices added to the labelled set per labelled
            slice, supervised with their empty mask (known from the image label every model gets;
            0: positives only, the former behaviour). Applies alike to SAM-Mix, U-Net and SAM-PP.
        label_seed: seed of that selection.
        withhold_label_fraction: share of unlabelled slices whose image label is withheld too.
        train_split, val_split, test_split: split names (``val_split: null`` disables validation;
            ``test_split: null`` evaluates only the ``evaluate.cross_domain`` sets, e.g. when the
            training store is a single patient and the test patient lives in another store).
        num_workers: data-loader worker processes.
        extra_path: another store whose labelled slices join the labelled set (e.g. the synthetic
            phantoms, ``data/phantom/phantom_a.h5``, beside one real patient: the phantom slices as
            extra labelled training data; ``None``: none). Its slices must have the same size.
        extra_n_labelled: liver-positive slices taken from ``extra_path``'s train split (and
            ``empty_per_labelled`` liver-free ones per slice), drawn with ``label_seed``.
    """

    path: Path
    n_labelled: int | None = Field(50, ge=0)
    empty_per_labelled: float = Field(1.0, ge=0.0)
    label_seed: int = 0
    withhold_label_fraction: float = Field(0.0, ge=0.0, le=1.0)
    train_split: Split = "train"
    val_split: Split | None = "val"
    test_split: Split | None = "test"
    num_workers: int = Field(0, ge=0)
    extra_path: Path | None = None
    extra_n_labelled: int = Field(50, ge=1)

    @property
    def n_empty(self) -> int:
        """Liver-free slices added to the labelled set (``round(n_labelled * empty_per_labelled)``)."""
        return int(round((self.n_labelled or 0) * self.empty_per_labelled))


class UnlabelledConfig(_Strict):
    """The unlabelled (semi-supervised) step of each iteration.

    Attributes:
        enabled: run it (``False``: supervised-only ablation).
        batch_size: unlabelled slices per iteration (global, over all ranks).
    """

    enabled: bool = True
    batch_size: int = Field(8, ge=1)


class LossConfig(_Strict):
    """Loss weights; a weight of 0 switches its term off (and skips its computation).

    Attributes:
        seg_dice, seg_bce: Dice and BCE on the chosen mask of labelled slices (L_seg).
        iou: MSE between SAM's predicted IoU and the true IoU of each of its masks (SAM's own
            loss; it makes the highest-IoU mask selection meaningful).
        cls: CE on the class logits of labelled slices (L_cls).
        unlabelled_cls: CE on the weak view of unlabelled slices whose image label is known.
        balanced_cls: class-balanced ``cls`` / ``unlabelled_cls`` (mean of the per-class means); the
            class weights come from the known labels of each term's part of the batch, over all ranks.
        balanced_pseudo: class-balanced ``pseudo_cls`` too (over its kept targets, at FixMatch's
            scale). Off by default: not yet measured on real CT.
        pseudo_cls: FixMatch CE of the strong view against the known image label, or against the
            weak view's pseudo-label where the label is withheld.
        pseudo_threshold: confidence a pseudo-label needs to count.
        seg_consistency: BCE of the strong view's mask against the weak view's (geometry-aware).
        seg_consistency_threshold: pixel confidence a pseudo-mask pixel needs to count.
        cam_mask: CAM localisation on the labelled masks (``losses.cam_mask_loss``; not in the paper,
            0 = off): the classifier learns where the liver is, not only whether it is there.
        head: Dice + BCE of the liver head (``model.liver_head``) on the labelled slices, liver-free
            ones included (``losses.head_loss``; not in the paper, 0 = off).
        decoder: decoder fine-tuning (:mod:`.decoder_tuning`): Dice + BCE + IoU MSE of the SAM's single
            mask from rough boxes on the labelled liver slices; only the mask decoder and prompt encoder
            learn from it (0 = off).
        decoder_jitter: the largest move of each edge of the reference box, as a fraction of its side.
        decoder_evidence_share: per slice, the probability of taking the liver head's evidence box
            instead (where the head sees liver).
    """

    seg_dice: float = Field(1.0, ge=0.0)
    seg_bce: float = Field(1.0, ge=0.0)
    iou: float = Field(1.0, ge=0.0)
    cls: float = Field(1.0, ge=0.0)
    unlabelled_cls: float = Field(1.0, ge=0.0)
    balanced_cls: bool = True
    balanced_pseudo: bool = False
    pseudo_cls: float = Field(0.25, ge=0.0)
    pseudo_threshold: float = Field(0.7, ge=0.0, le=1.0)
    seg_consistency: float = Field(0.0, ge=0.0)
    seg_consistency_threshold: float = Field(0.9, ge=0.5, le=1.0)
    cam_mask: float = Field(0.0, ge=0.0)
    head: float = Field(0.0, ge=0.0)
    decoder: float = Field(0.0, ge=0.0)
    decoder_jitter: float = Field(0.15, ge=0.0, le=1.0)
    decoder_evidence_share: float = Field(0.5, ge=0.0, le=1.0)


class AugmentConfig(_Strict):
    """Weak and strong views (see :mod:`.augment`).

    Attributes:
        labelled: augment labelled slices (and masks) with the weak geometry.
        labelled_flip: also flip labelled slices (off: keeps the liver's left-right prior).
        flip_prob: horizontal flip probability of the weak view.
        shift: maximum translation of the weak view, as a fraction of the side.
        rotate_deg, scale, shear: geometry of the strong view.
        strong_ops: intensity operations drawn per strong view (RandAugment's N).
        magnitude: intensity-operation strength in [0, 1] (RandAugment's M).
        cutout: one random square blanked out of the strong view (FixMatch's Cutout).
    """

    labelled: bool = True
    labelled_flip: bool = False
    flip_prob: float = Field(0.5, ge=0.0, le=1.0)
    shift: float = Field(0.0625, ge=0.0, le=0.5)
    rotate_deg: float = Field(15.0, ge=0.0, le=180.0)
    scale: float = Field(0.15, ge=0.0, le=0.9)
    shear: float = Field(0.1, ge=0.0, le=1.0)
    strong_ops: int = Field(2, ge=0, le=6)
    magnitude: float = Field(0.5, ge=0.0, le=1.0)
    cutout: bool = True


class TrainConfig(_Strict):
    """Optimisation and engine settings.

    Attributes:
        epochs: maximum epochs (0: no training, evaluation only; SAM-PP-0).
        iterations_per_epoch: iterations per epoch (``None``: one pass over the unlabelled slices,
            or over the labelled ones when the unlabelled step is off).
        batch_size: labelled slices per iteration (global, over all ranks).
        lr, weight_decay, optimizer: Adam(W).
        sam_lr: learning rate of the SAM's prompt encoder and mask decoder (``None``: ``lr``); a
            pretrained decoder fine-tuned by ``loss.decoder`` wants less than a head learning from scratch.
        scheduler: per-epoch LR schedule; ``warmup_epochs`` of linear warm-up first.
        min_lr_ratio: final LR of ``cosine`` / ``poly`` as a fraction of ``lr``.
        val_interval: validate every k epochs.
        early_stopping_patience: validations without improvement of the validation Dice before
            stopping (``None``: never).
        precision: ``fp32``, ``fp16`` (autocast + grad scaling, CUDA; fp32 elsewhere) or ``bf16`` (autocast);
            ``amp`` is read as ``fp16`` (:mod:`sam_mix_monai.utils.precision`).
        grad_clip: gradient-norm clip (``None``: off).
        seed: seed of everything (weights, sampling, augmentation).
        deterministic: ``monai.utils.set_determinism`` (deterministic cuDNN too).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        num_threads: CPU threads per process (``None``: torch's default).
        one_classifier_batch: the labelled slices and the FixMatch weak and strong views go through
            the classifier in one batch per step (FixMatch's reference; one set of batch-norm
            statistics). Off by default: on ``configs/ircadb_sammix_50.yaml`` (36 steps) it sent the
            dev-case 3D Dice from 0.956 to 0.000, because the eval-mode running statistics of the one
            batch mis-normalise clean slices (training-slice accuracy 0.34; 0.97 with statistics
            recomputed on 96 clean training slices). Off: three classifier batches per step
            (labelled; weak + strong), as before.
        sync_bn: synchronised batch norm across ranks (CUDA only: ``torch.nn.SyncBatchNorm``
            rejects CPU tensors (torch 2.15), so on CPU each rank normalises with its part of the batch).
        progress: show an Ignite progress bar.
    """

    epochs: int = Field(20, ge=0)
    iterations_per_epoch: int | None = Field(None, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(1e-4, gt=0.0)
    sam_lr: float | None = Field(None, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    optimizer: Literal["adam", "adamw"] = "adam"
    scheduler: Literal["constant", "cosine", "poly", "step"] = "cosine"
    warmup_epochs: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.01, ge=0.0, le=1.0)
    step_epochs: int = Field(10, ge=1)
    step_gamma: float = Field(0.5, gt=0.0, le=1.0)
    val_interval: int = Field(1, ge=1)
    early_stopping_patience: int | None = Field(10, ge=1)
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    grad_clip: float | None = Field(None, gt=0.0)
    seed: int = 0
    deterministic: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int | None = Field(None, ge=1)
    sync_bn: bool = True
    one_classifier_batch: bool = False
    progress: bool = True

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_alias(cls, v: Any) -> Any:
        return normalize_precision(v) if v == "amp" else v


class CrossDomainConfig(_Strict):
    """An extra test set evaluated after training (e.g. TotalSegmentator for a LiTS model).

    Attributes:
        name: label in the results.
        path: HDF5 slice store.
        split: split to use (``None``: every slice).
    """

    name: str = Field(min_length=1)
    path: Path
    split: Split | None = None


class EvaluateConfig(_Strict):
    """Evaluation after training (best checkpoint by validation Dice).

    Attributes:
        protocols: ``slice2d`` (paper: per-slice Dice / HD in pixels on liver slices) and/or
            ``volume3d`` (per case: 3D Dice and HD95 in mm).
        batch_size: slices per evaluation batch (per rank).
        cross_domain: extra test sets.
    """

    protocols: list[Literal["slice2d", "volume3d"]] = ["slice2d", "volume3d"]
    batch_size: int = Field(16, ge=1)
    cross_domain: list[CrossDomainConfig] = []

    @field_validator("protocols")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one protocol is needed")
        return list(dict.fromkeys(v))


class OutputConfig(_Strict):
    """Where a run writes.

    Attributes:
        dir: run directory (checkpoints, ``metrics.json``, curves, TensorBoard, resolved config).
        overwrite: allow starting a fresh run in a directory that already holds one.
        tensorboard: write TensorBoard event files.
    """

    dir: Path = Path("runs/experiment")
    overwrite: bool = False
    tensorboard: bool = True


class ExperimentConfig(_Strict):
    """One experiment: model, data, losses, augmentation, optimisation, evaluation, output.

    Attributes:
        name: experiment name.
        model: the network (:class:`~sam_mix_monai.networks.registry.ModelConfig`).
        data: training data.
        phantom: generate a phantom dataset first when ``data.path`` is absent (demo).
    """

    name: str = "experiment"
    model: ModelConfig = ModelConfig()
    data: DataConfig
    phantom: PhantomDataConfig | None = None
    unlabelled: UnlabelledConfig = UnlabelledConfig()
    loss: LossConfig = LossConfig()
    augment: AugmentConfig = AugmentConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    output: OutputConfig = OutputConfig()

    @model_validator(mode="after")
    def _consistent(self) -> "ExperimentConfig":
        if self.train.epochs > 0 and self.data.n_labelled == 0:
            raise ValueError("data.n_labelled is 0: nothing to train on (set train.epochs to 0 to only evaluate)")
        return self


def format_validation_error(err: ValidationError) -> str:
    """One line for a pydantic error: ``dotted.key: message`` (first error, plus a count)."""
    errors = err.errors()
    first = errors[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    more = f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"{loc}: {msg}{more}"


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise InputError("--set", f"expected key=value, got {item!r}")
    key, raw = item.split("=", 1)
    keys = [k for k in key.strip().split(".")]
    if not all(keys):
        raise InputError("--set", f"bad key {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return keys, value


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML scalars) to a raw config dict.

    Args:
        raw: the config as loaded from YAML (modified in place).
        overrides: ``dotted.key=value`` strings.

    Returns:
        ``raw``.

    Raises:
        InputError: a malformed override, or one that descends into a non-mapping.
    """
    for item in overrides:
        keys, value = _parse_override(item)
        node = raw
        for k in keys[:-1]:
            nxt = node.get(k)
            if nxt is None:
                nxt = node[k] = {}
            if not isinstance(nxt, dict):
                raise InputError("--set", f"{'.'.join(keys)}: {k} is not a section")
            node = nxt
        node[keys[-1]] = value
    return raw


def load_config(path: PathLike, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read, override and validate an experiment config.

    Args:
        path: YAML file.
        overrides: ``dotted.key=value`` strings (``--set``).

    Returns:
        The validated config.

    Raises:
        InputError: unreadable file, bad YAML, or a validation error (one line naming the key).
    """
    p = Path(path)
    raw = read_yaml_mapping(p, "config", "a config must be a mapping of sections (model, data, train, ...)",
                            missing="config file not found")
    apply_overrides(raw, overrides)
    return validate_config(raw, p)


def read_yaml_mapping(path: Path, what: str, not_mapping: str, missing: str | None = None) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; every problem is one :class:`InputError` naming ``path``.

    Args:
        path: the file.
        what: what the file is, for messages ("config", "study config", ...).
        not_mapping: the problem reported when the top level is not a mapping.
        missing: the problem reported when the file does not exist (default ``"<what> not found"``).
    """
    if not path.is_file():
        raise InputError(path, missing or f"{what} not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise InputError(path, f"not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    except OSError as e:
        raise InputError(path, f"cannot read {what} ({e.strerror or e})") from None
    if not isinstance(raw, dict):
        raise InputError(path, not_mapping)
    return raw


def validate_config(raw: dict[str, Any], source: PathLike | None = None) -> ExperimentConfig:
    """Validate a raw config dict; errors become one-line :class:`InputError` s naming ``source``."""
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as e:
        raise InputError(source, format_validation_error(e)) from None


def dump_config(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML (paths as strings)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
