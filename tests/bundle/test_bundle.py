"""The MONAI bundle ``bundles/sam_mix_liver_ct``: metadata, configs, ``monai.bundle`` commands."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from sam_mix_monai.cli.main import main
from sam_mix_monai.inference import bundle_network, read_checkpoint
from tests.inference.tiny_model import IMAGE_SIZE, liver_batch, phantom, run_isolated, save_case, tiny_checkpoint

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "sam_mix_liver_ct"
#: Largest allowed |logit| difference between an exported model and eager PyTorch.
ATOL = 1e-3
# The keys the MONAI bundle specification makes mandatory (metadata schema of 2024-07-25).
REQUIRED = {"schema", "version", "monai_version", "pytorch_version", "numpy_version", "required_packages_version",
            "optional_packages_version", "task", "description", "authors", "copyright", "network_data_format"}
TENSOR = {"type", "format", "modality", "num_channels", "spatial_shape", "dtype", "value_range", "is_patch_data",
          "channel_def"}
SMALL = ["--model_config#image_size", str(IMAGE_SIZE)]


def _meta() -> dict:
    return json.loads((BUNDLE / "configs" / "metadata.json").read_text())


def test_layout_and_metadata_keys() -> None:
    for rel in ("LICENSE", "configs/metadata.json", "configs/train.yaml", "configs/evaluate.yaml",
                "configs/inference.yaml", "configs/multi_gpu_train.yaml", "configs/logging.conf", "docs/README.md",
                "docs/data_license.txt", "models/.gitkeep"):
        assert (BUNDLE / rel).is_file(), rel
    assert [p.name for p in (BUNDLE / "models").iterdir()] == [".gitkeep"]  # no weights committed
    meta = _meta()
    assert REQUIRED <= set(meta), REQUIRED - set(meta)
    assert meta["version"] in meta["changelog"]
    fmt = meta["network_data_format"]
    image, pred = fmt["inputs"]["image"], fmt["outputs"]["pred"]
    assert TENSOR <= set(image) and TENSOR - {"modality"} <= set(pred)  # modality is optional (default "n/a")
    assert image["modality"] == "CT" and image["format"] == "hounsfield" and image["num_channels"] == 1
    assert pred["num_channels"] == 1 and image["dtype"] == pred["dtype"] == "float32"
    for name in ("monai_version", "pytorch_version", "numpy_version"):
        assert all(part.isdigit() for part in meta[name].split("."))


def test_configs_name_standard_ids_and_agree() -> None:
    infer = ConfigParser.load_config_file(str(BUNDLE / "configs" / "inference.yaml"))
    train = ConfigParser.load_config_file(str(BUNDLE / "configs" / "train.yaml"))
    for key in ("network_def", "inferer", "dataset_dir", "output_dir", "bundle_root", "device"):
        assert key in infer, key
    for key in ("network_def", "dataset_dir", "output_dir", "bundle_root", "device", "train", "validate"):
        assert key in train, key
    assert {"trainer", "handlers"} <= set(train["train"]) and {"evaluator", "handlers"} <= set(train["validate"])
    assert infer["model_config"] == train["model_config"]  # the weights train.yaml saves fit inference.yaml
    assert _meta()["network_data_format"]["inputs"]["image"]["spatial_shape"] == [infer["model_config"]["image_size"]] * 2
    for extra in ("evaluate.yaml", "multi_gpu_train.yaml"):  # overrides only name ids that train.yaml has
        over = ConfigParser.load_config_file(str(BUNDLE / "configs" / extra))
        for key in over:
            parts = key.split("#")
            node = train
            for part in parts[:-1]:
                assert part in node, f"{extra}: {key}"
                node = node[part]
    text = "".join((BUNDLE / "configs" / f).read_text() for f in ("train.yaml", "inference.yaml"))
    assert "sam_mix_monai.engines.SAMMixTrainer" in text and "sam_mix_monai.inference.VolumeSliceInferer" in text


def test_bundle_train_yaml_schedules_like_the_cli() -> None:
    """The bundle's LR schedule and early stopping are the CLI's (cosine, patience 10), not a hand-wired copy."""
    from sam_mix_monai.engines import val_score
    from sam_mix_monai.engines.config import validate_config
    from sam_mix_monai.engines.schedule import build_scheduler

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.yaml"))
    parser["network"] = "$torch.nn.Linear(2, 2)"  # only the optimiser's parameters are needed here
    sched = parser.get_parsed_content("lr_scheduler")
    opt = sched.optimizer
    cli = validate_config({"name": "x", "data": {"path": "x.h5"}, "output": {"dir": "x"},
                           "train": {"epochs": parser["epochs"], "lr": parser["learning_rate"]}}).train
    ref_opt = torch.optim.Adam(torch.nn.Linear(2, 2).parameters(), lr=cli.lr)
    ref = build_scheduler(ref_opt, cli)
    bundle_lrs, cli_lrs = [], []
    for _ in range(parser["epochs"]):
        bundle_lrs.append(opt.param_groups[0]["lr"])
        cli_lrs.append(ref_opt.param_groups[0]["lr"])
        opt.step(), sched.step(), ref_opt.step(), ref.step()
    assert bundle_lrs == pytest.approx(cli_lrs) and bundle_lrs[-1] < 0.1 * bundle_lrs[0]  # cosine, not constant
    early = parser.get_parsed_content("validate#early_stopping")
    assert early.patience == cli.early_stopping_patience == 10 and early.score_function is val_score
    handlers = ConfigParser.load_config_file(str(BUNDLE / "configs" / "train.yaml"))["validate"]["handlers"]
    assert "@validate#early_stopping" in handlers


def _python_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _bundle_cmd(*args: str, cwd: Path = BUNDLE, timeout: int = 600) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "monai.bundle", *args], cwd=cwd, capture_output=True, text=True,
                         timeout=timeout, env=_python_env())
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])
    return res


@pytest.fixture(scope="module")
def bundle_copy(tmp_path_factory) -> Path:
    """The bundle copied to a temporary folder, with models/model.pt made from the tiny checkpoint."""
    root = tmp_path_factory.mktemp("bundle") / "sam_mix_liver_ct"
    shutil.copytree(BUNDLE, root)
    state, cfg, _ = read_checkpoint(tiny_checkpoint())
    net = bundle_network(cfg)
    net.load_state_dict(state)
    torch.save(net.state_dict(), root / "models" / "model.pt")  # what CheckpointSaver writes from train.yaml
    return root


def _eager(root: Path, x: torch.Tensor) -> np.ndarray:
    _, cfg, _ = read_checkpoint(tiny_checkpoint())
    net = bundle_network(cfg)
    net.load_state_dict(torch.load(root / "models" / "model.pt", weights_only=True))
    with torch.no_grad():
        return net(x).numpy()


def _check_artifact(root: Path, path: Path, fmt: str, tmp: Path) -> None:
    x = liver_batch(5)  # other batch size than traced; slices with liver (not gated)
    eager = _eager(root, x)
    got = run_isolated(path, fmt, x, tmp)
    live = eager > -1e3
    assert live.any()
    np.testing.assert_allclose(got[live], eager[live], rtol=0, atol=ATOL)
    np.testing.assert_array_equal(got > 0, eager > 0)


def test_ckpt_export_and_verify(bundle_copy: Path, tmp_path: Path) -> None:
    r = str(bundle_copy)
    common = ["--meta_file", f"{r}/configs/metadata.json", "--config_file", f"{r}/configs/inference.yaml",
              "--bundle_root", r, *SMALL]
    _bundle_cmd("verify_net_in_out", "network_def", "--device", "cpu", *common)
    # A sam-mix train checkpoint (bare SAM-Mix keys under "network") exports directly; models/model.pt holds
    # the same weights as network_def's plain state dict (checked by the ONNX test).
    _bundle_cmd("ckpt_export", "network_def", "--filepath", f"{r}/models/model.ts", "--ckpt_file",
                str(tiny_checkpoint()), "--key_in_ckpt", "network", "--use_trace", "True", "--input_shape",
                f"[1, 1, {IMAGE_SIZE}, {IMAGE_SIZE}]", *common)
    _check_artifact(bundle_copy, bundle_copy / "models" / "model.ts", "torchscript", tmp_path)
    # The TorchScript file carries the bundle's metadata and configs.
    extra = {"metadata.json": "", "inference.json": ""}
    torch.jit.load(str(bundle_copy / "models" / "model.ts"), _extra_files=extra)
    assert json.loads(extra["metadata.json"])["version"] == _meta()["version"]
    assert "network_def" in json.loads(extra["inference.json"])


def test_onnx_export(bundle_copy: Path, tmp_path: Path) -> None:
    r = str(bundle_copy)
    kwargs = ("{'input_names': ['image'], 'output_names': ['pred'], 'external_data': False, "
              "'dynamic_axes': {'image': {0: 'batch'}, 'pred': {0: 'batch'}}}")
    _bundle_cmd("onnx_export", "network_def", "--filepath", f"{r}/models/model.onnx", "--ckpt_file",
                f"{r}/models/model.pt", "--meta_file", f"{r}/configs/metadata.json", "--config_file",
                f"{r}/configs/inference.yaml", "--bundle_root", r, "--use_trace", "True", "--input_shape",
                f"[2, 1, {IMAGE_SIZE}, {IMAGE_SIZE}]", "--converter_kwargs", kwargs, *SMALL)
    _check_artifact(bundle_copy, bundle_copy / "models" / "model.onnx", "onnx", tmp_path)


def _ct_folder(folder: Path) -> Path:
    for i, codes in enumerate(("LPS", "RAS")):
        c = phantom(i, codes)
        save_case(folder / f"s{i:04d}" / "ct.nii.gz", c.image, c.affine)
    return folder


def test_bundle_run_inference_and_cli(bundle_copy: Path, tmp_path: Path, capsys) -> None:
    data = _ct_folder(tmp_path / "ct")
    out = tmp_path / "out"
    r = str(bundle_copy)
    _bundle_cmd("run", "--config_file", f"{r}/configs/inference.yaml", "--meta_file", f"{r}/configs/metadata.json",
                "--logging_file", f"{r}/configs/logging.conf", "--bundle_root", r, "--dataset_dir", str(data),
                "--output_dir", str(out), *SMALL)
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["s0000_liver.nii.gz", "s0001_liver.nii.gz"]
    ref = nib.load(str(data / "s0000" / "ct.nii.gz"))
    res = nib.load(str(out / "s0000_liver.nii.gz"))
    assert res.shape == ref.shape and np.array_equal(res.affine, ref.affine)
    # `sam-mix infer --bundle` gives the same masks (the bundle sets the model size through model_config).
    cli_out = tmp_path / "cli"
    cfg = bundle_copy / "configs" / "inference.yaml"
    cfg.write_text(cfg.read_text().replace("  image_size: 256\n", f"  image_size: {IMAGE_SIZE}\n"))
    assert main(["-q", "infer", str(data), "--bundle", r, "--output", str(cli_out), "--no-progress"]) == 0
    for name in ("s0000_liver.nii.gz", "s0001_liver.nii.gz"):
        a, b = nib.load(str(out / name)), nib.load(str(cli_out / name))
        np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
    # A missing dataset_dir is an error, not a folder of phantoms.
    res = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", f"{r}/configs/inference.yaml",
                          "--bundle_root", r, "--dataset_dir", str(tmp_path / "typo"), *SMALL],
                         capture_output=True, text=True, env=_python_env())
    assert res.returncode != 0 and "dataset_dir not found" in res.stderr and not (tmp_path / "typo").exists()


def tiny_train(batch: int = 2) -> list[str]:
    """Overrides for a seconds-long training on a small phantom cohort."""
    return ["--n_labelled", "4", "--epochs", "1", "--epoch_length", "2", "--batch_size", str(batch),
            "--unlabelled_batch_size", str(batch), "--phantom#cases_a", "5", "--phantom#cases_b", "1",
            "--phantom#matrix", "64", "--phantom#slices", "24", *SMALL]


def test_bundle_run_training_then_inference(tmp_path: Path) -> None:
    root = tmp_path / "bundle"
    cfg = str(BUNDLE / "configs")
    _bundle_cmd("run", "--config_file", f"{cfg}/train.yaml", "--meta_file", f"{cfg}/metadata.json",
                "--logging_file", f"{cfg}/logging.conf", "--bundle_root", str(root), *tiny_train())
    state = torch.load(root / "models" / "model.pt", weights_only=True)
    assert all(k.startswith("net.") for k in state)  # the plain state dict of network_def
    assert (root / "data" / "phantom" / "phantom_a.h5").is_file()
    data = _ct_folder(tmp_path / "ct")
    _bundle_cmd("run", "--config_file", f"{cfg}/inference.yaml", "--bundle_root", str(root), "--dataset_dir",
                str(data), "--output_dir", str(tmp_path / "out"), *SMALL)
    assert len(list((tmp_path / "out").glob("*_liver.nii.gz"))) == 2


@pytest.mark.slow
def test_bundle_evaluate_and_multi_process_training(tmp_path: Path) -> None:
    root = tmp_path / "bundle"
    cfg = str(BUNDLE / "configs")
    torchrun = Path(sys.executable).with_name("torchrun")
    res = subprocess.run([str(torchrun), "--standalone", "--nnodes=1", "--nproc_per_node=2", "-m", "monai.bundle",
                          "run", "--config_file", f"['{cfg}/train.yaml','{cfg}/multi_gpu_train.yaml']",
                          "--bundle_root", str(root), *tiny_train(batch=1)], capture_output=True, text=True,
                         timeout=600, env=_python_env())
    assert res.returncode == 0, res.stderr[-3000:]
    assert (root / "models" / "model.pt").is_file()
    _bundle_cmd("run", "--config_file", f"['{cfg}/train.yaml','{cfg}/evaluate.yaml']", "--bundle_root", str(root),
                *tiny_train())
    metrics = (root / "eval" / "metrics.csv").read_text()
    assert "slice2d_dice" in metrics and "volume3d_dice" in metrics
