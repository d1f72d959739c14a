"""The ``dataset.json`` of an MSD / nnU-Net raw dataset, validated (pydantic), and its liver label.

Both dialects are read:

* MSD (Task03_Liver): ``modality: {"0": "CT"}``, ``labels: {"0": "background", "1": "liver",
  "2": "cancer"}``, ``training: [{"image": "./imagesTr/liver_0.nii.gz", "label": "./labelsTr/liver_0.nii.gz"}]``;
* nnU-Net v2: ``channel_names: {"0": "CT"}``, ``labels: {"background": 0, "liver": 1, "tumor": 2}``,
  ``file_ending``, usually no ``training`` list.

Types are checked strictly (``modality`` must be an object, ``numTraining`` an integer, ...), and every
error names ``dataset.json`` and the key. The liver is taken **by name**: the labels whose name
contains "liver", plus tumour labels (tumor, tumour, cancer, lesion) of a dataset that has a liver
label, since those lie inside the liver (MSD Task03, LiTS). A dataset with no liver label is refused
unless the caller picks label ids (``sam-mix convert --label-id N``): a spleen dataset is never
converted as liver by accident.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Sequence, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sam_mix_monai.utils.errors import InputError, PathLike

__all__ = ["MSDCaseEntry", "MSDDataset", "liver_label_values", "read_dataset_json"]

_TUMOUR_NAMES = {"tumor", "tumour", "tumors", "tumours", "cancer", "lesion", "lesions"}


class MSDCaseEntry(BaseModel):
    """One entry of the ``training`` list."""

    model_config = ConfigDict(strict=True, extra="allow")

    image: str = Field(min_length=1)
    label: str = Field(min_length=1)


class MSDDataset(BaseModel):
    """The keys of ``dataset.json`` this project reads (others are kept, unchecked)."""

    model_config = ConfigDict(strict=True, extra="allow")

    name: Union[str, None] = None
    modality: Union[dict[str, str], None] = None
    channel_names: Union[dict[str, str], None] = None
    labels: dict[str, Union[str, int, list[int]]] = Field(min_length=1)
    numTraining: Union[int, None] = Field(None, ge=0)
    file_ending: Union[str, None] = None
    training: Union[list[MSDCaseEntry], None] = None

    @model_validator(mode="after")
    def _channels(self) -> "MSDDataset":
        if not (self.modality or self.channel_names):
            raise ValueError("needs 'modality' (MSD) or 'channel_names' (nnU-Net v2) naming channel 0")
        return self

    def channel0(self) -> str | None:
        """The name of channel 0 (``None`` if not named)."""
        return (self.channel_names or self.modality or {}).get("0")

    def label_ids(self) -> dict[int, str]:
        """Label id -> name, whichever dialect.

        Raises:
            ValueError: an id that is not an integer, or an nnU-Net region label (a list of ids).
        """
        out: dict[int, str] = {}
        for key, value in self.labels.items():
            if isinstance(value, str):  # MSD: {"1": "liver"}
                try:
                    out[int(key)] = value
                except ValueError:
                    raise ValueError(f"labels: key {key!r} is not an integer label id (MSD: {{\"1\": \"liver\"}})") from None
            elif isinstance(value, int):  # nnU-Net v2: {"liver": 1}
                out[value] = key
            else:
                raise ValueError(f"labels: {key!r} is a region (a list of ids {value}); give one id per label")
        return out

    def case_paths(self) -> list[tuple[str, str]]:
        """``(image, label)`` relative paths of the ``training`` list (``./`` removed)."""
        return [(_rel(e.image), _rel(e.label)) for e in self.training or []]


def _rel(path: str) -> str:
    return str(PurePosixPath(path.replace("\\", "/")))


def read_dataset_json(path: PathLike) -> MSDDataset:
    """Read and validate ``dataset.json``.

    Raises:
        InputError: naming the file and the first bad key (``labels.1``, ``training.3.image``, ...).
    """
    p = Path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(p, f"cannot read dataset.json ({type(e).__name__}: {e})") from None
    if not isinstance(raw, dict):
        raise InputError(p, "dataset.json is not a JSON object")
    try:
        meta = MSDDataset.model_validate(raw)
        meta.label_ids()
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(k) for k in err["loc"]) or "(top level)"
        raise InputError(p, f"dataset.json: {key}: {err['msg']}") from None
    except ValueError as e:
        raise InputError(p, f"dataset.json: {e}") from None
    first = meta.channel0()
    if first is not None and first.strip().lower() != "ct":
        raise InputError(p, f"channel 0 is {first!r}, not CT (channel_names / modality)")
    return meta


def liver_label_values(meta: MSDDataset, path: PathLike, label_ids: Sequence[int] | None = None) -> tuple[int, ...]:
    """The label values that count as liver.

    Args:
        meta: the validated dataset.json.
        path: ``dataset.json``, named in errors.
        label_ids: the user's choice (``--label-id``); ``None``: by name.

    Raises:
        InputError: a chosen id the dataset does not declare, or no label named liver.
    """
    ids = meta.label_ids()
    shown = ", ".join(f"{k}: {v}" for k, v in sorted(ids.items()))
    if label_ids:
        bad = [i for i in label_ids if i not in ids or i == 0]
        if bad:
            raise InputError(path, f"--label-id {bad[0]}: not a foreground label of this dataset (labels {{{shown}}})")
        return tuple(sorted(set(label_ids)))
    liver = [i for i, name in ids.items() if i != 0 and "liver" in name.lower()]
    if not liver:
        raise InputError(path, f"no label named liver (labels {{{shown}}}): refusing to convert another organ as "
                               "liver; pass --label-id N to choose the label")
    tumour = [i for i, name in ids.items() if i != 0 and name.strip().lower() in _TUMOUR_NAMES]
    return tuple(sorted({*liver, *tumour}))
