"""Safe loading of official SAM, MedSAM and LiteMedSAM checkpoints into a SAM of any input size.

* ``torch.load(path, map_location="cpu", weights_only=True)``: works on any device, and a file
  whose pickle would run code (or build anything but tensors and plain containers) is refused.
* Accepts a plain state dict, or one wrapped as ``{"model": ...}`` / ``{"state_dict": ...}``;
  a ``module.`` prefix (DataParallel) is stripped.
* Resizes ``image_encoder.pos_embed`` (bicubic) and the ``rel_pos_h`` / ``rel_pos_w`` tables
  (linear along the table length, as ``segment_anything``'s own ``get_rel_pos`` does) when the
  input size or window differs from the checkpoint's (SAMed / SAM-Med2D do the same at 512 / 256).
* Strict key check; LoRA adapter keys (absent from official files) are the only allowed misses.

Every problem with the file is raised as :class:`sam_mix_monai.utils.errors.InputError`.
"""

from __future__ import annotations

import os
import pickle
import re
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from sam_mix_monai.networks.lora import is_lora_key
from sam_mix_monai.utils.errors import InputError, PathLike

__all__ = ["check_finite", "safe_torch_load", "read_state_dict", "adapt_sam_state_dict", "load_sam_checkpoint"]

_SHOW = 5  # keys named in an error message


def _preview(keys: list[str]) -> str:
    head = ", ".join(keys[:_SHOW])
    return f"{len(keys)} ({head}{', ...' if len(keys) > _SHOW else ''})"


def safe_torch_load(path: PathLike) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with one-line errors.

    The one checkpoint reader of the project: SAM/MedSAM weights, training checkpoints and
    bundle weights all come through it.

    Raises:
        InputError: missing file, a pickle that would run code, or an unreadable file.
    """
    if not os.path.isfile(path):
        raise InputError(path, "checkpoint file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        # torch < 2.6: "GLOBAL x was not an allowed global"; torch >= 2.6 (2.15 here): "Trying to load
        # unsupported GLOBAL posix.system whose module posix is blocked".
        found = re.search(r"GLOBAL (\S+) was not an allowed global", msg) or re.search(r"unsupported GLOBAL (\S+)", msg)
        if found or re.search(r"not an allowed global|Unsupported (global|class)", msg):
            what = f" (it calls {found.group(1)})" if found else ""
            raise InputError(
                path,
                f"refused: it would run code{what}; only plain state dicts "
                "of tensors are accepted (torch.load weights_only=True)",
            ) from e
        raise InputError(path, "not a readable PyTorch checkpoint (corrupt or not a torch.save file)") from e
    except Exception as e:  # corrupt zip, truncated file, not a torch file at all
        first = str(e).strip().split(". ")[0]  # torch's zip errors run on for several sentences
        raise InputError(path, f"not a readable PyTorch checkpoint, corrupt or truncated ({type(e).__name__}: {first})") from e


def check_finite(state: Mapping[str, torch.Tensor], path: PathLike | None) -> None:
    """Refuse weights holding NaN or infinite values (a diverged run saves them as readily as good ones).

    Args:
        state: a state dict.
        path: its file, for the message.

    Raises:
        InputError: naming the file, how many tensors are affected and the first few keys.
    """
    bad = [str(k) for k, v in state.items()
           if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise InputError(path, f"weights hold NaN or infinite values in {_preview(bad)}: refused (a diverged run?)")


def read_state_dict(path: PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from a checkpoint file without running any pickled code.

    Args:
        path: checkpoint file (``.pth`` / ``.pt``).

    Returns:
        The state dict (tensors on CPU), unwrapped from ``{"model": ...}`` / ``{"state_dict": ...}``,
        ``module.`` prefixes stripped.

    Raises:
        InputError: missing file, unsafe pickle, unreadable file, or no state dict inside.
    """
    obj: Any = safe_torch_load(path)
    for wrapper in ("model", "state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise InputError(
            path, "no state dict found (expected a dict of tensors, or {'model': ...} / {'state_dict': ...})"
        )
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise InputError(path, f"state dict holds non-tensor entries: {_preview(bad)}")
    check_finite(obj, path)
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in obj.items()}


def _resize_pos_embed(pos: torch.Tensor, target: torch.Size) -> torch.Tensor:
    # (1, H, W, C) -> (1, C, H, W) -> bicubic -> back
    x = pos.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(target[1], target[2]), mode="bicubic", align_corners=False)
    return x.permute(0, 2, 3, 1).to(pos.dtype)


def _resize_rel_pos(table: torch.Tensor, length: int) -> torch.Tensor:
    # (L, C) -> (1, C, L) -> linear -> (length, C); same call as segment_anything's get_rel_pos.
    x = F.interpolate(table.float().t().unsqueeze(0), size=length, mode="linear")
    return x[0].t().to(table.dtype)


def _guess_arch(keys: list[str]) -> str:
    if any(k.startswith("image_encoder.layers.") for k in keys):
        return "lite_medsam (TinyViT)"
    if any(k.startswith("image_encoder.blocks.") for k in keys):
        n = 1 + max(int(k.split(".")[2]) for k in keys if k.startswith("image_encoder.blocks."))
        return {12: "vit_b", 24: "vit_l", 32: "vit_h", 4: "compact"}.get(n, f"a {n}-block ViT")
    return "not a SAM"


def adapt_sam_state_dict(
    state: Mapping[str, torch.Tensor],
    model_state: Mapping[str, torch.Tensor],
    path: PathLike | None = None,
    arch: str | None = None,
) -> dict[str, torch.Tensor]:
    """Match a SAM checkpoint to a model: resize position tables, check keys and shapes.

    Args:
        state: checkpoint state dict (official layout).
        model_state: the target SAM's ``state_dict()``.
        path: file name for error messages.
        arch: the model's architecture name (``lite_medsam``, ``vit_b``, ...) for error messages.

    Returns:
        A state dict with the model's shapes for every key.

    Raises:
        InputError: missing / unexpected keys, or shapes that cannot be adapted.
    """
    out = dict(state)
    missing = [k for k in model_state if k not in out and not is_lora_key(k)]
    unexpected = [k for k in out if k not in model_state]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {_preview(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_preview(unexpected)}")
        target = f"the {arch} SAM layout" if arch else "the SAM layout"
        raise InputError(
            path,
            f"checkpoint does not match {target} (its keys look like {_guess_arch(list(out))}; set model.size "
            "to the checkpoint's architecture); " + "; ".join(parts),
        )
    wrong = []
    for k, v in out.items():
        target = model_state[k].shape
        if v.shape == target:
            continue
        if k == "image_encoder.pos_embed" and v.dim() == 4 and v.shape[-1] == target[-1]:
            out[k] = _resize_pos_embed(v, target)
        elif k.endswith((".rel_pos_h", ".rel_pos_w")) and v.dim() == 2 and v.shape[1] == target[1]:
            out[k] = _resize_rel_pos(v, target[0])
        else:
            wrong.append(f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(target)}")
    if wrong:
        raise InputError(
            path,
            f"{len(wrong)} tensors have incompatible shapes (is the checkpoint for another SAM size?): "
            + "; ".join(wrong[:_SHOW])
            + ("; ..." if len(wrong) > _SHOW else ""),
        )
    return out


def load_sam_checkpoint(sam: nn.Module, path: PathLike, arch: str | None = None) -> nn.Module:
    """Load a SAM / MedSAM / LiteMedSAM checkpoint into a SAM built by :func:`.sam_builder.build_sam`.

    Works before or after LoRA injection (adapter weights are kept as they are).

    Args:
        sam: ``segment_anything.modeling.Sam`` (any input size / window).
        path: checkpoint file.
        arch: the SAM's architecture name, for error messages.

    Returns:
        ``sam``, with the weights loaded in place.

    Raises:
        InputError: any problem with the file (see :func:`read_state_dict`, :func:`adapt_sam_state_dict`).
    """
    state = read_state_dict(path)
    model_state = sam.state_dict()
    adapted = adapt_sam_state_dict(state, model_state, path, arch)
    result = sam.load_state_dict(adapted, strict=False)
    leftover = [k for k in result.missing_keys if not is_lora_key(k)]
    if leftover or result.unexpected_keys:  # cannot happen after adapt_sam_state_dict; kept as a guard
        raise InputError(path, f"keys not loaded: {_preview(leftover + list(result.unexpected_keys))}")
    return sam
