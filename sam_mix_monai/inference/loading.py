"""Networks for inference: from a training checkpoint, a bundle, or a bundle's ``network_def``.

Two weight files are understood, both read with ``torch.load(..., weights_only=True)``:

* a **training checkpoint** (``sam-mix train``'s ``best.pt`` / ``last.pt``): read and rebuilt by
  :func:`sam_mix_monai.networks.run_checkpoint.load_checkpoint` (re-exported here), the one loader
  of the project; :func:`training_preprocessing` gives the slicing its record implies;
* a **bundle weight file** ``models/model.pt``: the plain state dict of the bundle's
  ``network_def`` (:func:`bundle_network`, a :class:`~sam_mix_monai.networks.SAMMixInference`, keys
  ``net.*``), as MONAI's ``CheckpointSaver`` writes it from ``train.yaml``. The module that
  :func:`bundle_network` returns also accepts the bare SAM-Mix keys of a training checkpoint's
  ``"model"`` entry, so ``ckpt_export --key_in_ckpt model`` works on a training checkpoint too.
  Without that file a bundle whose config names a ``default_model`` segments with it instead
  (:func:`bundle_weights`: the packaged default liver model on its own design).

Every problem is raised as :class:`~sam_mix_monai.utils.errors.InputError` naming the file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from sam_mix_monai.networks import ModelConfig, SAMMixInference, build_model
from sam_mix_monai.networks.checkpoint import safe_torch_load
from sam_mix_monai.networks.run_checkpoint import load_checkpoint, load_weights, read_checkpoint
from sam_mix_monai.transforms.window import DEFAULT_WINDOW
from sam_mix_monai.utils.errors import InputError, PathLike

__all__ = [
    "INFERABLE_MODELS",
    "bundle_network",
    "bundle_weights",
    "load_bundle",
    "load_checkpoint",
    "load_weights",
    "read_checkpoint",
    "read_weights",
    "safe_torch_load",
    "inference_slicing",
    "training_preprocessing",
]

logger = logging.getLogger(__name__)

#: Model names volume inference can run (SAM-PP needs a point prompt per slice); pass as
#: ``load_checkpoint(path, device, models=INFERABLE_MODELS)``.
INFERABLE_MODELS = ("sam_mix", "unet")


def training_preprocessing(record: Mapping[str, Any]) -> dict[str, Any]:
    """Slice size and HU window a run was trained with, from its record (``checkpoint["config"]``).

    In order: the slicing recorded in the checkpoint (``record["slicing"]``, every run since issue
    12); the training store's attributes (``sam-mix convert`` writes ``image_size``,
    ``window_center``, ``window_width``) when the store is still there; the phantom settings of the
    experiment (the phantom is converted with the default window). Inference then prepares slices
    exactly as training saw them (the network resizes them to its own ``image_size`` as it did in training).

    Returns:
        ``{"image_size": int, "window": (centre, width)}`` (plus ``keep_rate`` when recorded), a key
        missing when it cannot be recovered (see :func:`inference_slicing`).
    """
    exp = record.get("experiment") or {}
    out: dict[str, Any] = {}
    rec = record.get("slicing") or {}
    if "window_center" in rec and "window_width" in rec and "image_size" in rec:
        out = {"image_size": int(rec["image_size"]), "window": (float(rec["window_center"]), float(rec["window_width"]))}
        if "keep_rate" in rec:
            out["keep_rate"] = float(rec["keep_rate"])
        return out
    store = (exp.get("data") or {}).get("path")
    if store and Path(store).is_file():
        try:
            import h5py

            with h5py.File(store, "r") as f:
                attrs = dict(f.attrs)
            if "image_size" in attrs:
                out["image_size"] = int(attrs["image_size"])
            if "window_center" in attrs and "window_width" in attrs:
                out["window"] = (float(attrs["window_center"]), float(attrs["window_width"]))
        except (OSError, ValueError, TypeError):
            pass
    phantom = exp.get("phantom") or {}
    if phantom and "image_size" not in out and phantom.get("image_size"):
        out["image_size"] = int(phantom["image_size"])
    if phantom and "window" not in out:
        out["window"] = tuple(float(v) for v in DEFAULT_WINDOW)  # the phantom converter's (no window setting)
    return out


def inference_slicing(record: Mapping[str, Any], path: PathLike | None, window: Any = None) -> dict[str, Any]:
    """:func:`training_preprocessing`, refusing a checkpoint whose HU window cannot be recovered.

    Args:
        record: the checkpoint's run record.
        path: the checkpoint (for the error message).
        window: a window the user gives (then a missing one is no error).

    Raises:
        InputError: neither the checkpoint, its training store nor its phantom settings give the window.
    """
    out = training_preprocessing(record)
    if "window" not in out and window is None:
        store = ((record.get("experiment") or {}).get("data") or {}).get("path")
        where = f"and its training store {store} is not there" if store else "and names no training store"
        raise InputError(path, f"the checkpoint records no slicing {where}: the HU window it was trained with is "
                               "unknown; pass the window (--window CENTRE WIDTH)")
    return out


def read_weights(path: PathLike) -> Mapping[str, torch.Tensor]:
    """The state dict in a bundle weight file: a plain state dict, or a training checkpoint's
    ``network`` / ``model`` entry.

    Raises:
        InputError: unreadable file, or no state dict inside.
    """
    obj = safe_torch_load(path)
    if isinstance(obj, Mapping):
        for key in ("network", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(path, "no state dict of tensors found in the weight file")
    return obj


def _accept_bare_keys(module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    # load_state_dict pre-hook: a SAMMix state dict (training checkpoint "model") has no "net." prefix.
    if state_dict and not any(k.startswith(prefix + "net.") for k in state_dict):
        for k in list(state_dict):
            if k.startswith(prefix):
                state_dict[prefix + "net." + k[len(prefix) :]] = state_dict.pop(k)


def bundle_network(model_config: Mapping[str, Any] | ModelConfig, cls_threshold: float | None = None) -> SAMMixInference:
    """The bundle's ``network_def``: a single-output SAM-Mix (``forward(x) -> (B, 1, S, S)`` logits).

    Randomly initialised (``load_pretrained=False``); weights come from ``models/model.pt``. Loading
    accepts the ``net.*`` keys of this module or the bare keys of a SAM-Mix state dict.

    Args:
        model_config: :class:`~sam_mix_monai.networks.ModelConfig` or its dict (``name`` must be ``sam_mix``).
        cls_threshold: classifier gate (``None``: the config's).

    Returns:
        A :class:`~sam_mix_monai.networks.SAMMixInference` in eval mode.
    """
    cfg = model_config if isinstance(model_config, ModelConfig) else ModelConfig(**dict(model_config))
    if cfg.name != "sam_mix":
        raise InputError(None, f"the bundle network is SAM-Mix; model_config names '{cfg.name}'")
    wrapper = SAMMixInference(build_model(cfg, load_pretrained=False), cls_threshold=cls_threshold)
    wrapper.register_load_state_dict_pre_hook(_accept_bare_keys)
    return wrapper.eval()


def load_bundle(bundle_dir: PathLike, device: torch.device | str | None = None, ckpt_file: PathLike | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Build ``network_def`` of a bundle's ``configs/inference.yaml`` and load its weights.

    Args:
        bundle_dir: the bundle folder.
        device: where to put the network (``None``: CPU).
        ckpt_file: weight file (``None``: the config's ``ckpt_path``, by default ``models/model.pt``).

    Returns:
        ``(network, settings)``; ``settings`` holds the inferer's ``window``, ``batch_size`` and
        ``image_size`` from the config when it sets them.

    Raises:
        InputError: missing config, missing weights and no ``default_model`` in the config, or weights that
            do not fit the network.
    """
    from monai.bundle import ConfigParser

    root = Path(bundle_dir)
    config = root / "configs" / "inference.yaml"
    if not config.is_file():
        raise InputError(root, "not a MONAI bundle (configs/inference.yaml not found)")
    parser = ConfigParser()
    parser.read_config(str(config))
    parser["bundle_root"] = str(root)
    try:
        network = parser.get_parsed_content("network_def", instantiate=True)
        ckpt = Path(ckpt_file) if ckpt_file is not None else Path(parser.get_parsed_content("ckpt_path"))
    except InputError:
        raise
    except Exception as e:
        raise InputError(config, f"cannot build network_def: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    default = parser.get_parsed_content("default_model") if "default_model" in parser else None
    design = parser.get_parsed_content("default_model_config") if "default_model_config" in parser else None
    network = bundle_weights(network.to(device or "cpu"), ckpt, default, design)
    settings = {}
    for key in ("window", "batch_size", "image_size"):
        if f"inferer#{key}" in parser:
            settings[key] = parser.get_parsed_content(f"inferer#{key}")
    return network.eval(), settings


def bundle_weights(network: nn.Module, ckpt_path: PathLike, default_model: PathLike | None = None,
                   default_model_config: Mapping[str, Any] | None = None) -> nn.Module:
    """The bundle's network with its weights: ``ckpt_path`` loaded into ``network``, or the default model.

    When ``ckpt_path`` (``models/model.pt``) is absent and ``default_model`` is given, the network is
    that trained-parts file on its own design instead, built by
    :func:`~sam_mix_monai.networks.default_model.load_trained_parts` (the packaged default liver model:
    a SAM-Mix on the pretrained LiteMedSAM with a liver head, in volume prompt mode). The log says
    which weights segment.

    Args:
        network: the bundle's ``network_def`` (on its device).
        ckpt_path: the bundle weight file.
        default_model: the trained-parts file to fall back to (``None``: no fallback).
        default_model_config: the design the bundle config states for it (checked against the file's).

    Returns:
        ``network`` with the weights, or the default model's network (eval mode, on ``network``'s device).

    Raises:
        InputError: no weights (and no fallback), weights that do not fit, or a default model whose design
            differs from ``default_model_config``.
    """
    from sam_mix_monai.networks.default_model import load_trained_parts

    ckpt = Path(ckpt_path)
    if ckpt.is_file():
        load_weights(network, read_weights(ckpt), ckpt)
        logger.info("bundle weights: %s", ckpt)
        return network
    if default_model is None:
        raise InputError(ckpt, "bundle weights not found: train the bundle (configs/train.yaml) or export a "
                               "checkpoint into models/model.pt")
    device = next(network.parameters()).device
    net, cfg, _ = load_trained_parts(default_model, device=device)
    stated = None if default_model_config is None else ModelConfig(**dict(default_model_config))
    if stated is not None and stated != cfg:
        differ = [k for k, v in cfg.model_dump().items() if getattr(stated, k) != v]
        raise InputError(default_model, f"the model's design differs from the bundle's default_model_config in "
                                        f"{', '.join(differ)}")
    logger.info("bundle weights: %s not found; segmenting with the default liver model %s (%s on %s%s, %s prompts)",
                ckpt, default_model, cfg.name, cfg.size, ", liver head" if cfg.liver_head else "", cfg.prompt_mode)
    return net
