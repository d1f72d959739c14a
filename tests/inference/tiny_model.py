"""Shared test material: a compact SAM-Mix trained for a few seconds on phantom slices, phantom NIfTI cases.

The checkpoint is written in the layout of ``sam-mix train`` (``{"network", "config": {"model"}, ...}``) and built
once per test session (cached in a temporary folder removed at exit), whichever module asks first.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor

from sam_mix_monai.data.phantom import generate_case
from sam_mix_monai.networks import ModelConfig, build_model
from sam_mix_monai.transforms import SlicingConfig, volume_to_slices_transform

IMAGE_SIZE = 64
MATRIX, SLICES = 96, 40


@functools.lru_cache(maxsize=None)
def _tmp_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="sam_mix_infer_tests_"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


@functools.lru_cache(maxsize=None)
def phantom(case_id: int = 0, orientation: str = "RAS", matrix: int = MATRIX, slices: int = SLICES):
    """A phantom case (image int16 HU, label, affine) in a header orientation."""
    return generate_case(0, case_id, "a", matrix, slices, orientation=orientation)


def save_case(path: Path, image: np.ndarray, affine: np.ndarray) -> Path:
    """Write an image as NIfTI (sform and qform set)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.asarray(image), affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    nib.save(img, str(path))
    return path


def case_store(tmp_path: Path, keep_rate, case_ids=(5,), orientation: str = "RAS", matrix: int = IMAGE_SIZE,
               split: str = "test") -> tuple[Path, dict[str, tuple[Path, Path]]]:
    """Held-out phantom cases as NIfTI and as a test store at the network's slice size (64).

    Returns:
        ``(store, {case_id: (image, label)})``.
    """
    from sam_mix_monai.data.converter import slice_case
    from sam_mix_monai.data.h5store import SliceStoreWriter
    from sam_mix_monai.data.layouts import CaseFiles
    from sam_mix_monai.transforms import SlicingConfig

    cfg = SlicingConfig(keep_rate=keep_rate, image_size=IMAGE_SIZE)
    tmp_path.mkdir(parents=True, exist_ok=True)
    store = tmp_path / f"store_{keep_rate}_{orientation}_{matrix}.h5"
    files = {}
    with SliceStoreWriter(store, IMAGE_SIZE, cfg.model_dump()) as w:
        for cid in case_ids:
            c = phantom(cid, orientation, matrix)
            image = save_case(tmp_path / f"volume-{cid}.nii", c.image, c.affine)
            label = save_case(tmp_path / f"segmentation-{cid}.nii", c.label.astype("uint8"), c.affine)
            w.append(slice_case(CaseFiles(str(cid), image, label), cfg), split)
            files[str(cid)] = (image, label)
    return store, files


def _plain(x) -> torch.Tensor:
    """A plain tensor (MetaTensor's ``__torch_function__`` slows every op down)."""
    return x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x)


def _training_slices(cases=(1, 2, 3)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    tf = volume_to_slices_transform(SlicingConfig(keep_rate="all", image_size=IMAGE_SIZE))
    xs, ys, ls = [], [], []
    for cid in cases:
        c = phantom(cid)
        aff = torch.as_tensor(c.affine)
        d = tf({"image": MetaTensor(torch.from_numpy(c.image.copy())[None].float(), affine=aff),
                "label": MetaTensor(torch.from_numpy(c.label.copy())[None], affine=aff)})
        xs.append(_plain(d["image"]))
        ys.append(_plain(d["label"]))
        ls.append(_plain(d["slice_label"]))
    return torch.cat(xs)[:, None].float(), torch.cat(ys)[:, None].float(), torch.cat(ls).long()


def train_tiny(steps: int = 80, seed: int = 0) -> tuple[torch.nn.Module, ModelConfig]:
    """Train a compact SAM-Mix (64 px) for ``steps`` Adam steps on phantom slices (about 10 s)."""
    x, y, lab = _training_slices()
    torch.manual_seed(seed)
    cfg = ModelConfig(name="sam_mix", size="compact", image_size=IMAGE_SIZE)
    net = build_model(cfg, load_pretrained=False)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (8,), generator=g)
        out = net(x[idx])
        logits, target, pos = out["mask_logits"], y[idx], lab[idx] == 1
        loss = F.cross_entropy(out["class_logits"], lab[idx]) + F.binary_cross_entropy_with_logits(logits, target)
        if bool(pos.any()):
            p = torch.sigmoid(logits[pos])
            loss = loss + (1 - (2 * (p * target[pos]).sum() + 1) / (p.sum() + target[pos].sum() + 1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval(), cfg


@functools.lru_cache(maxsize=None)
def tiny_checkpoint() -> Path:
    """Path of the session's trained checkpoint (training format)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # may run in a module-scoped fixture, before the autouse one-thread fixture
    try:
        with torch.random.fork_rng():
            net, cfg = train_tiny()
    finally:
        torch.set_num_threads(threads)
    path = _tmp_root() / "tiny_sam_mix.pt"
    # The layout of sam-mix train's best.pt (sam_mix_monai.engines): weights + RunRecord.
    slicing = SlicingConfig(keep_rate="all", image_size=IMAGE_SIZE).model_dump()  # what _training_slices used
    record = {"model": cfg.model_dump(mode="json"), "experiment": {}, "version": "test", "commit": None, "slicing": slicing}
    torch.save({"network": net.state_dict(), "config": record, "checkpointer": {}}, path)
    return path


_ISOLATED = r"""
import sys
sys.modules["sam_mix_monai"] = None  # any import of the package (or MONAI) would fail
sys.modules["monai"] = None
import numpy as np
fmt, model, x_path, out_path = sys.argv[1:5]
x = np.load(x_path)
if fmt == "torchscript":
    import torch
    m = torch.jit.load(model, map_location="cpu")
    with torch.no_grad():
        y = m(torch.from_numpy(x)).numpy()
else:
    import onnxruntime as ort
    s = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    y = s.run(None, {s.get_inputs()[0].name: x})[0]
np.save(out_path, y)
print("OK", [k for k in sys.modules if k.startswith(("sam_mix_monai", "monai")) and sys.modules[k] is not None])
"""


def run_isolated(model: Path, fmt: str, x: torch.Tensor, tmp: Path) -> np.ndarray:
    """Run an exported model in a fresh interpreter where ``sam_mix_monai`` and ``monai`` cannot be imported."""
    import subprocess
    import sys

    np.save(tmp / "x.npy", x.numpy())
    res = subprocess.run([sys.executable, "-c", _ISOLATED, fmt, str(model), str(tmp / "x.npy"), str(tmp / "y.npy")],
                         capture_output=True, text=True, timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert "OK []" in res.stdout
    return np.load(tmp / "y.npy")


def liver_batch(n: int = 6) -> torch.Tensor:
    """``n`` windowed 64 px phantom slices around the liver (non-gated slices for export checks)."""
    c = phantom(4, "RAS")
    tf = volume_to_slices_transform(SlicingConfig(keep_rate="all", image_size=IMAGE_SIZE), with_label=False)
    x = _plain(tf({"image": MetaTensor(torch.from_numpy(c.image.copy())[None].float(),
                                       affine=torch.as_tensor(c.affine))})["image"])
    lo, hi = c.liver_range
    idx = torch.linspace(lo, hi, n).round().long()
    return x[idx][:, None].float().contiguous()


@functools.lru_cache(maxsize=None)
def lite_checkpoint() -> Path:
    """A SAM-Mix checkpoint of the default family (LiteMedSAM TinyViT, packaged weights, LoRA) with the
    compact classifier, untrained, no slice gated (every logit is compared): small enough to export in a test (training format)."""
    from sam_mix_monai.networks import ModelConfig, build_model

    with torch.random.fork_rng():
        torch.manual_seed(0)
        cfg = ModelConfig(name="sam_mix", size="lite_medsam", classifier="compact", cls_threshold=0.0)  # no slice gated
        net = build_model(cfg)
    path = _tmp_root() / "lite_sam_mix.pt"
    slicing = SlicingConfig(keep_rate="all", image_size=cfg.image_size).model_dump()
    record = {"model": cfg.model_dump(mode="json"), "experiment": {}, "version": "test", "commit": None, "slicing": slicing}
    torch.save({"network": net.state_dict(), "config": record, "checkpointer": {}}, path)
    return path
