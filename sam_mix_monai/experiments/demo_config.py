"""The demo's YAML (``configs/demo.yaml``): which experiment configs to train, which model segments
the held-out volume, and how many slices the figures show (validated by :class:`DemoConfig`).

Example:
    >>> demo = load_demo_config(default_demo_config())  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sam_mix_monai.engines.config import format_validation_error, read_yaml_mapping
from sam_mix_monai.utils.errors import InputError, PathLike

__all__ = ["DemoConfig", "DemoRunConfig", "default_demo_config", "load_demo_config"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DemoRunConfig(_Strict):
    """One model of the demo.

    Attributes:
        label: its row in the tables (e.g. ``SAM-Mix-50``).
        config: experiment YAML, relative to the demo config's folder.
        overrides: ``KEY=VALUE`` overrides of that config (e.g. a shorter schedule).
    """

    label: str = Field(min_length=1)
    config: Path
    overrides: list[str] = []


class DemoConfig(_Strict):
    """The demo.

    Attributes:
        runs: the models, in table order; their configs must share one ``phantom:`` section.
        infer_model: label of the model that segments the held-out volume (``None``: the first SAM-Mix).
        figure_slices: test slices shown in the overlay and CAM figures.
        workers: trainings run at the same time.
        threads: torch threads of each training child (and of the demo's own inference).
        real_ct: segment the committed real CT (``examples/totalseg_example_dicom``) with every model.
        real_ct_zero_shot: there, also the pretrained LiteMedSAM rows SAM-PP-0 and the oracle box.
        real_ct_precision: forward passes of that step, ``fp32`` (default: the same figures on every CPU,
            the SAM encoder on ONNX Runtime) or ``bf16`` autocast (faster only on CPUs with AVX512-BF16 / AMX;
            emulated and about 10x slower elsewhere, e.g. an AMD EPYC with AVX2; oracle-box Dice 0.9723 in bf16
            against 0.9725 in fp32 on the 20 example slices).
        infer_precision: forward passes of the held-out volume's inference, ``fp32`` (default) or ``bf16``
            (it runs after the trainings, on every core, as the real-CT step does).
        warm_cache: a SAM-Mix with a frozen encoder keeps its embeddings in ``<phantom root>/embedding_cache``,
            and every other run, once trained, encodes the infer model's test slices into it on the core it
            frees (the same embeddings, bit for bit; :mod:`sam_mix_monai.engines.warm_cache`).
    """

    runs: list[DemoRunConfig] = Field(min_length=1)
    infer_model: str | None = None
    figure_slices: int = Field(4, ge=1, le=16)
    workers: int = Field(2, ge=1)
    threads: int = Field(1, ge=1)
    real_ct: bool = True
    real_ct_zero_shot: bool = True
    real_ct_precision: Literal["fp32", "bf16"] = "fp32"
    infer_precision: Literal["fp32", "bf16"] = "fp32"
    warm_cache: bool = True


def default_demo_config() -> Path:
    """``configs/demo.yaml`` of the working directory, else of the source checkout."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (root / "configs" / "demo.yaml").is_file():
            return root / "configs" / "demo.yaml"
    raise InputError("configs/demo.yaml", "demo config not found (give --config FILE)")


def load_demo_config(path: PathLike) -> DemoConfig:
    """Read and validate a demo YAML; problems are one-line :class:`InputError` s."""
    p = Path(path)
    raw = read_yaml_mapping(p, "demo config", "a demo config must be a mapping")
    try:
        return DemoConfig.model_validate(raw)
    except ValidationError as e:
        raise InputError(p, format_validation_error(e)) from None
