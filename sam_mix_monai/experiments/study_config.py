"""Study configuration: the model × labelled-slices × seed grid, validated by pydantic, expanded into cells.

A study YAML names a ``base`` experiment config (``configs/*.yaml``) and the models to compare. Every
cell of the grid is the base config with, in this order:

1. the study's ``set`` (common to every cell: data paths, a checkpoint, a shorter schedule),
2. the model's ``set`` (e.g. ``model.name: unet`` and the U-Net's longer schedule),
3. the experiment keys given with ``sam-mix study --set`` (the user's last word),
4. the cell's own keys: ``name`` (the cell's name), ``data.n_labelled: N``, every key of ``seed_keys``
   set to the seed (``train.seed`` and ``data.label_seed``: a seed draws both the weights and the
   labelled slices), and ``train.epochs: 0`` when N is 0 (evaluation only, e.g. SAM-PP-0).

``base`` is resolved relative to the study YAML's folder (like an include); every other path (data,
checkpoints, ``output.dir``) is relative to the working directory, as in experiment configs.
Cell run directories are ``<output.dir>/runs/<label>-<N>/seed<k>``.

Example:
    >>> study = load_study("configs/study_phantom.yaml")  # doctest: +SKIP
    >>> [c.name for c in expand_cells(study)][:2]  # doctest: +SKIP
    ['SAM-Mix-5/seed0', 'SAM-Mix-50/seed0']
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from sam_mix_monai.engines.config import (
    ExperimentConfig,
    apply_overrides,
    format_validation_error,
    read_yaml_mapping,
    validate_config,
)
from sam_mix_monai.utils.errors import InputError, PathLike

__all__ = ["Cell", "StudyConfig", "StudyModel", "StudyOutput", "cell_config", "expand_cells", "load_base",
           "load_study", "validate_cells"]

# Top-level keys of an experiment config that ``sam-mix study --set`` passes on to every cell
# (``name`` and ``output`` stay the study's own).
EXPERIMENT_SECTIONS = ("model", "data", "phantom", "unlabelled", "loss", "augment", "train", "evaluate")
LABEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1}, "data.path": "x"}`` -> ``{"train.lr": 1, "data.path": "x"}``."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _flat_keys(v: dict[str, Any]) -> dict[str, Any]:
    flat = _flatten(v)
    for key in flat:
        if not all(key.split(".")):
            raise ValueError(f"bad key {key!r}")
    return flat


class StudyModel(_Strict):
    """One model family of the grid (one table row per labelled-slice count).

    Attributes:
        label: family name, used in run directories and the plot legend (letters, digits, ``_.+-``).
        title: table-row title, ``{n}`` stands for the labelled-slice count (default ``"{label}-{n}"``).
        set: experiment keys of this model, dotted (``model.name: unet``) or nested.
        n_labelled: labelled-slice counts N (0: no segmentation training, evaluation only).
    """

    label: str = Field(pattern=LABEL_PATTERN, max_length=64)
    title: str | None = None
    set: dict[str, Any] = {}
    n_labelled: list[int] = Field([50], min_length=1)

    @field_validator("set")
    @classmethod
    def _flat_set(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _flat_keys(v)

    @field_validator("n_labelled")
    @classmethod
    def _counts(cls, v: list[int]) -> list[int]:
        if any(n < 0 for n in v):
            raise ValueError("labelled-slice counts must be >= 0")
        if len(set(v)) != len(v):
            raise ValueError(f"repeated labelled-slice count in {v}")
        return v

    @field_validator("title")
    @classmethod
    def _title(cls, v: str | None) -> str | None:
        if v is not None and "|" in v:
            raise ValueError("a title cannot contain '|' (Markdown table cell)")
        return v

    def row(self, n: int) -> str:
        """Table-row title of this model at N labelled slices."""
        return (self.title or "{label}-{n}").replace("{label}", self.label).replace("{n}", str(n))


class StudyOutput(_Strict):
    """Where a study writes (``runs/``, ``study.json``, ``study.md``, ``dice_vs_n.png``)."""

    dir: Path = Path("runs/study")


class StudyConfig(_Strict):
    """A comparison study: models × labelled-slice counts × seeds, all derived from one base config.

    Attributes:
        name: study name (report title).
        description: a paragraph for the report (data, setting).
        base: experiment YAML the cells derive from, relative to the study YAML's folder.
        set: experiment keys applied to every cell (before the model's own ``set``).
        models: model families, in table order.
        seeds: seeds; each sets every key of ``seed_keys``.
        seed_keys: experiment keys a seed sets.
        domain_titles: column titles of the ``in`` and ``cross`` domains (default in-domain, cross-domain).
        workers: cells trained at the same time (processes).
        threads: CPU threads per cell (``train.num_threads``).
        output: where to write.
    """

    name: str = "study"
    description: str = ""
    base: Path
    set: dict[str, Any] = {}
    models: list[StudyModel] = Field(min_length=1)
    seeds: list[int] = Field([0, 1, 2], min_length=1)
    seed_keys: list[str] = ["train.seed", "data.label_seed"]
    domain_titles: dict[Literal["in", "cross"], str] = {}
    workers: int = Field(1, ge=1)
    threads: int = Field(1, ge=1)
    output: StudyOutput = StudyOutput()

    _base_path: Path | None = PrivateAttr(None)
    _source: Path | None = PrivateAttr(None)
    _cli_set: dict[str, Any] = PrivateAttr(default_factory=dict)

    @field_validator("set")
    @classmethod
    def _flat_set(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _flat_keys(v)

    @field_validator("models")
    @classmethod
    def _unique_labels(cls, v: list[StudyModel]) -> list[StudyModel]:
        labels = [m.label for m in v]
        dup = next((x for x in labels if labels.count(x) > 1), None)
        if dup is not None:
            raise ValueError(f"model label {dup!r} appears twice")
        rows = [m.row(n) for m in v for n in m.n_labelled]
        dup = next((x for x in rows if rows.count(x) > 1), None)
        if dup is not None:
            raise ValueError(f"table row {dup!r} appears twice (check the titles)")
        return v

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"repeated seed in {v}")
        return v

    @property
    def base_path(self) -> Path:
        """The base experiment YAML, resolved against the study file's folder."""
        return self._base_path if self._base_path is not None else self.base

    @property
    def source(self) -> Path | None:
        """The study YAML this was loaded from."""
        return self._source

    @property
    def cli_set(self) -> dict[str, Any]:
        """Experiment keys given on the command line (applied after the models' ``set``)."""
        return self._cli_set

    @property
    def out_dir(self) -> Path:
        """The study's output folder."""
        return Path(self.output.dir)


@dataclass(frozen=True)
class Cell:
    """One run of the grid: a model at N labelled slices with one seed.

    Attributes:
        model: the model family's label.
        row: its table-row title (e.g. ``SAM-Mix-50``).
        n_labelled: labelled slices N.
        seed: the seed.
        run_dir: its run directory.
        overrides: ``KEY=VALUE`` strings applied to the base config (``sam-mix train --set``).
    """

    model: str
    row: str
    n_labelled: int
    seed: int
    run_dir: Path
    overrides: tuple[str, ...]

    @property
    def name(self) -> str:
        """Unique label: ``<label>-<N>/seed<k>``."""
        return f"{self.model}-{self.n_labelled}/seed{self.seed}"


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    return read_yaml_mapping(path, what, f"a {what} must be a mapping")


def load_study(path: PathLike, overrides: Sequence[str] = ()) -> StudyConfig:
    """Read, override and validate a study config; the base experiment config is checked to exist.

    Args:
        path: study YAML.
        overrides: ``KEY=VALUE`` strings: study keys (``seeds=[0]``, ``workers=2``, ``output.dir=x``)
            or experiment keys (``train.epochs=1``, ``model.checkpoint=x``), which go to every cell.

    Returns:
        The validated study.

    Raises:
        InputError: unreadable file, bad YAML or a validation error, one line naming the key.
    """
    p = Path(path)
    raw = _read_yaml(p, "study config")
    study_items, cell_items = [], []
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        (cell_items if key.split(".")[0] in EXPERIMENT_SECTIONS else study_items).append(item)
    apply_overrides(raw, study_items)
    extra: dict[str, Any] = {}
    apply_overrides(extra, cell_items)
    try:
        study = StudyConfig.model_validate(raw)
    except ValidationError as e:
        raise InputError(p, format_validation_error(e)) from None
    base = study.base if study.base.is_absolute() else p.parent / study.base
    if not base.is_file():
        raise InputError(p, f"base: experiment config not found: {base}")
    study._base_path, study._source, study._cli_set = base, p, _flatten(extra)
    return study


def _value(v: Any) -> str:
    """A value as a YAML scalar for ``--set`` (JSON is valid YAML flow style)."""
    return json.dumps(v, default=str)


def expand_cells(study: StudyConfig) -> list[Cell]:
    """The grid, seed by seed (so that an interrupted study has whole seeds), then model, then N."""
    cells = []
    for seed in study.seeds:
        for m in study.models:
            for n in m.n_labelled:
                name = f"{m.label}-{n}/seed{seed}"
                sets = {**study.set, **m.set, **study.cli_set, "name": name, "data.n_labelled": n,
                        **{k: seed for k in study.seed_keys}}
                if n == 0:
                    sets["train.epochs"] = 0
                run_dir = study.out_dir / "runs" / f"{m.label}-{n}" / f"seed{seed}"
                cells.append(Cell(m.label, m.row(n), n, seed, run_dir,
                                  tuple(f"{k}={_value(v)}" for k, v in sets.items())))
    return cells


def load_base(study: StudyConfig) -> dict[str, Any]:
    """The base experiment config as a raw mapping."""
    return _read_yaml(study.base_path, "base experiment config")


def cell_config(study: StudyConfig, cell: Cell, base: dict[str, Any] | None = None) -> ExperimentConfig:
    """The validated experiment config of a cell (its output dir set to the cell's run dir).

    Raises:
        InputError: naming the study file, the cell and the bad key.
    """
    raw = copy.deepcopy(base if base is not None else load_base(study))
    try:
        apply_overrides(raw, [*cell.overrides, f"output.dir={_value(str(cell.run_dir))}"])
        return validate_config(raw, study.base_path)
    except InputError as e:
        raise InputError(study.source or study.base_path, f"cell {cell.name} (base {study.base_path}): {e.problem}") from None


def validate_cells(study: StudyConfig, cells: Sequence[Cell]) -> dict[str, ExperimentConfig]:
    """Validate every cell's experiment config before anything runs; ``{cell.name: config}``."""
    base = load_base(study)
    return {c.name: cell_config(study, c, base) for c in cells}
