"""``sam-mix export``: a training checkpoint (or bundle) to TorchScript or ONNX, checked against eager."""

from __future__ import annotations

import argparse

from sam_mix_monai.utils.errors import InputError

_DESCRIPTION = """\
Export the single-output SAM-Mix network (input (B,1,S,S) windowed slices in [0,1], output
(B,1,S,S) mask logits, liver-free slices gated to -1e4) to TorchScript (traced) or ONNX (input
"image", output "pred", dynamic batch). The exported file runs without sam_mix_monai installed.
After writing, the export is run on a batch of another size and compared with the eager model.

--format bundle writes the bundle's weight file instead: the state dict of the bundle's network_def
(what configs/train.yaml's CheckpointSaver writes), e.g.

  sam-mix export --checkpoint runs/lits_sammix_50/best.pt --format bundle \
      --output bundles/sam_mix_liver_ct/models/model.pt

then checked by loading it back through the bundle's network_def. Set the bundle's model_config
(configs/inference.yaml and train.yaml) to the checkpoint's (printed) before running the bundle.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``sam-mix export``."""
    p = sub.add_parser("export", help="export a checkpoint to TorchScript or ONNX", description=_DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", metavar="CKPT", help="training checkpoint (sam-mix train)")
    src.add_argument("--bundle", metavar="DIR", help="MONAI bundle folder (configs/inference.yaml + models/model.pt)")
    p.add_argument("--format", required=True, choices=("torchscript", "onnx", "bundle"),
                   help="export format (bundle: models/model.pt of the MONAI bundle)")
    p.add_argument("--output", required=True, metavar="FILE", help="file to write (e.g. model.ts / model.onnx)")
    p.add_argument("--tolerance", type=float, default=1e-3, metavar="TOL",
                   help="largest allowed |logit| difference to eager (default %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export, check, print one line; exit 1 when the check fails the tolerance."""
    from pathlib import Path

    from sam_mix_monai.utils.atomic import output_folder

    with output_folder(Path(args.output).parent):  # removed again when nothing was written into it
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sam_mix_monai import __version__
    from sam_mix_monai.inference import load_bundle, load_checkpoint
    from sam_mix_monai.inference.export import (check_export, default_check_batch, export_network, export_summary,
                                                require_finite_outputs)
    from sam_mix_monai.inference.loading import bundle_network
    from sam_mix_monai.networks import SAMMixInference
    from sam_mix_monai.utils.atomic import output_set

    if args.checkpoint:
        net, cfg, _ = load_checkpoint(args.checkpoint)
        if cfg.name != "sam_mix":
            raise InputError(args.checkpoint, f"export supports SAM-Mix checkpoints (this one is '{cfg.name}')")
        wrapper = bundle_network(cfg)
        wrapper.net.load_state_dict(net.state_dict())
        meta = {"model_config": cfg.model_dump(mode="json")}
    else:
        wrapper, _ = load_bundle(args.bundle)
        if not isinstance(wrapper, SAMMixInference):
            raise InputError(args.bundle, "the bundle's network_def is not a SAM-Mix inference network")
        meta = {}
    if args.format == "bundle":
        return _bundle_weights(wrapper, meta.get("model_config"), args.output)
    size = wrapper.net.image_size
    meta.update(sam_mix_monai_version=__version__, input="image (B,1,S,S) windowed CT in [0,1]",
                output="pred (B,1,S,S) mask logits; liver-free slices -1e4", image_size=size)
    batch = default_check_batch(size)
    require_finite_outputs(wrapper, batch, args.checkpoint or args.bundle)
    with output_set() as pending:  # the file appears only once its check passed
        path = export_network(wrapper, args.format, args.output, size, meta=meta)
        check = check_export(pending[-1][0], args.format, wrapper, batch)
    print(f"wrote {path} ({args.format}); vs eager: {export_summary(check)}")
    if check.max_abs_diff > args.tolerance:
        print(f"sam-mix export: warning: difference {check.max_abs_diff:.2e} exceeds --tolerance {args.tolerance:g}")
        return 1
    return 0


def _bundle_weights(wrapper, model_config: dict | None, output: str) -> int:
    """Write the bundle weight file (the network_def state dict), load it back strictly, print one line."""
    import json

    import torch

    from sam_mix_monai.inference.loading import bundle_network, load_weights, read_weights
    from sam_mix_monai.utils.atomic import atomic_output

    with atomic_output(output) as tmp:
        torch.save(wrapper.state_dict(), tmp)
    if model_config is not None:  # the check: a fresh network_def of this config takes the file strictly
        load_weights(bundle_network(model_config), read_weights(output), output)
    cfg = "" if model_config is None else f"; bundle model_config: {json.dumps(model_config, sort_keys=True)}"
    print(f"wrote {output} (bundle weights, {len(wrapper.state_dict())} tensors){cfg}")
    return 0
