"""Training checkpoints of this project: the one reader and the one loader.

Evaluation (``sam-mix evaluate``, the final test of a run), inference, export and the demo all
rebuild a network from a checkpoint through :func:`load_checkpoint`. Two layouts are understood,
both read with ``torch.load(..., weights_only=True)`` (:func:`.checkpoint.safe_torch_load`):

* the engines' ``best.pt`` / ``last.pt``: the state dict under ``"network"`` and the run record
  (``RunRecord``: ``{"model": ModelConfig.model_dump(), "experiment": ..., ...}``) under ``"config"``;
* ``{"model": state_dict, "model_config": ModelConfig.model_dump()}``;
* the trained parts on top of the packaged pretrained SAM (:mod:`.default_model`, the shipped model).

The network is rebuilt from the stored config alone (``build_model(..., load_pretrained=False)``, so
no SAM file is needed). Every problem is an :class:`~sam_mix_monai.utils.errors.InputError` naming the file.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

import torch
from pydantic import ValidationError
from torch import nn

from sam_mix_monai.networks.checkpoint import check_finite, safe_torch_load
from sam_mix_monai.networks.default_model import is_trained_parts
from sam_mix_monai.networks.registry import PROMPT_KEYS, ModelConfig, build_model
from sam_mix_monai.networks.single_output import SAMMixInference
from sam_mix_monai.utils.errors import InputError, PathLike

__all__ = ["TrainingCheckpoint", "read_checkpoint", "load_weights", "load_checkpoint"]

_SHOW = 4


class TrainingCheckpoint(NamedTuple):
    """What :func:`read_checkpoint` returns."""

    state: dict[str, torch.Tensor]
    model_config: ModelConfig
    record: dict[str, Any]  # the run record (``{}`` for the ``model`` / ``model_config`` layout)


def _preview(keys: list[str]) -> str:
    return f"{len(keys)} ({', '.join(keys[:_SHOW])}{', ...' if len(keys) > _SHOW else ''})"


def read_checkpoint(path: PathLike) -> TrainingCheckpoint:
    """Read a training checkpoint without building anything.

    Args:
        path: ``best.pt`` / ``last.pt`` of a run, or a ``{"model", "model_config"}`` file.

    Returns:
        ``(state, model_config, record)``.

    Raises:
        InputError: unreadable file, not a training checkpoint, or an invalid model config.
    """
    obj = safe_torch_load(path)
    if is_trained_parts(obj):  # the packaged default model's layout: trained parts on the pretrained SAM
        try:
            cfg = ModelConfig(**dict(obj["model_config"]))
        except (ValidationError, TypeError) as e:
            raise InputError(path, f"invalid model_config in checkpoint: {str(e).splitlines()[0]}") from None
        return TrainingCheckpoint({**build_model(cfg).state_dict(), **obj["state"]}, cfg, dict(obj.get("record") or {}))
    found = None
    if isinstance(obj, Mapping):
        config = obj.get("config")
        if "network" in obj and isinstance(config, Mapping) and isinstance(config.get("model"), Mapping):
            found = ("network", config["model"], dict(config))
        elif "model" in obj and isinstance(obj.get("model_config"), Mapping):
            found = ("model", obj["model_config"], {})
        elif "network" in obj:
            raise InputError(path, "checkpoint carries no model configuration ('config.model')")
    if found is None:
        keys = sorted(map(str, obj))[:_SHOW] if isinstance(obj, Mapping) else type(obj).__name__
        raise InputError(
            path,
            f"not a sam-mix training checkpoint (expected 'network' + 'config.model', or 'model' + 'model_config'; "
            f"found {keys}); for a MONAI bundle use --bundle",
        )
    key, model_config, record = found
    try:
        cfg = ModelConfig(**dict(model_config))
    except (ValidationError, TypeError) as e:
        raise InputError(path, f"invalid model_config in checkpoint: {str(e).splitlines()[0]}") from None
    state = obj[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(path, f"checkpoint entry '{key}' is not a state dict of tensors")
    return TrainingCheckpoint(dict(state), cfg, record)


def load_weights(network: nn.Module, state: Mapping[str, torch.Tensor], path: PathLike | None = None) -> nn.Module:
    """Load ``state`` into ``network`` strictly, with one-line errors.

    Args:
        network: the module (a :class:`.single_output.SAMMixInference` also takes bare SAM-Mix keys).
        state: its state dict (``module.`` prefixes of DataParallel are stripped).
        path: file name for error messages.

    Returns:
        ``network``.

    Raises:
        InputError: missing / unexpected keys, shape mismatches (weights of another model), or NaN /
            infinite values (a diverged run).
    """
    state = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}
    check_finite(state, path)
    own = network.state_dict()
    if isinstance(network, SAMMixInference) and not any(k.startswith("net.") for k in state):
        state = {f"net.{k}": v for k, v in state.items()}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = [f"{what}: {_preview(keys)}" for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong)) if keys]
        raise InputError(path, "weights do not match the model (a checkpoint of another model or size?); " + "; ".join(parts))
    network.load_state_dict(state, strict=True)
    return network


def load_checkpoint(
    path: PathLike,
    device: torch.device | str | None = None,
    models: Sequence[str] | None = None,
    prompt_overrides: Mapping[str, Any] | None = None,
) -> tuple[nn.Module, ModelConfig, dict[str, Any]]:
    """Rebuild and load the network of a training checkpoint, in eval mode.

    Args:
        path: training checkpoint.
        device: where to put the network (``None``: CPU).
        models: model names the caller can run (``None``: any); another one is refused.
        prompt_overrides: new values of :data:`.registry.PROMPT_KEYS` (prompt switches that leave the
            weights as they are, e.g. ``{"cam_component": "peak"}``); the returned config carries them.

    Returns:
        ``(network, model_config, record)``.

    Raises:
        InputError: see :func:`read_checkpoint` and :func:`load_weights`; a model outside ``models``;
            an override of another key, or an invalid value.
    """
    state, cfg, record = read_checkpoint(path)
    if prompt_overrides:
        bad = sorted(set(prompt_overrides) - set(PROMPT_KEYS))
        if bad:
            raise InputError("--set", f"model.{bad[0]} cannot be changed at evaluation (allowed: {', '.join(PROMPT_KEYS)})")
        try:
            cfg = ModelConfig(**{**cfg.model_dump(), **dict(prompt_overrides)})
        except ValidationError as e:
            raise InputError("--set", f"model.{e.errors()[0]['loc'][0]}: {e.errors()[0]['msg']}") from None
    if models is not None and cfg.name not in models:
        raise InputError(path, f"model '{cfg.name}' cannot run volume inference (supported: {', '.join(models)})")
    net = build_model(cfg, load_pretrained=False)
    load_weights(net, state, path)
    return net.to(device or "cpu").eval(), cfg, record
