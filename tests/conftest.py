"""Shared fixtures: paths to the real CT sample and small synthetic NIfTI cases."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("SAM_MIX_REAL_DATA", ROOT.parent / "shared" / "data" / "real"))
# The TotalSegmentator sample also ships in examples/ (Apache-2.0), so its tests run on a user's clone too.
_EXAMPLE_CT = ROOT / "examples" / "totalseg_example_dicom"
REAL_CT = Path(os.environ.get("SAM_MIX_REAL_CT", REAL_DATA / "totalseg_example_dicom" if (REAL_DATA / "totalseg_example_dicom").is_dir() else _EXAMPLE_CT))


def require_real(name: str) -> Path:
    """``REAL_DATA / name``, or skip the test with the reason (a user's clone has no ``../shared``)."""
    path = REAL_DATA / name
    if not path.exists():
        pytest.skip(f"real CT {name!r} not found at {path} (the developers' ../shared/data/real; absent in a user's clone)")
    return path


def make_case_arrays(shape=(48, 40, 24), seed=0):
    """A small HU volume with a box-shaped 'liver' (1) holding a 'tumour' (2)."""
    rng = np.random.default_rng(seed)
    x, y, z = shape
    img = rng.normal(40, 20, shape).astype(np.int16)
    img[:4] = -1000  # air
    lab = np.zeros(shape, np.uint8)
    lab[x // 4 : 3 * x // 4, y // 3 : 2 * y // 3, z // 4 : 3 * z // 4] = 1
    lab[x // 2 - 2 : x // 2 + 2, y // 2 - 2 : y // 2 + 2, z // 2 - 1 : z // 2 + 1] = 2
    img[lab == 1] = 100
    img[lab == 2] = 20
    return img, lab


def save_nifti(path: Path, arr: np.ndarray, affine: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, affine), str(path))
    return path


def write_lits_cases(root: Path, n: int = 3, shape=(48, 40, 24), spacing=(0.8, 0.8, 2.5), ids=None) -> Path:
    """LiTS-layout folder with ``n`` small cases (RAS headers)."""
    aff = np.diag([*spacing, 1.0])
    for k, i in enumerate(ids if ids is not None else range(n)):
        img, lab = make_case_arrays(shape, seed=k)
        save_nifti(root / f"volume-{i}.nii", img, aff)
        save_nifti(root / f"segmentation-{i}.nii", lab, aff)
    return root


@pytest.fixture()
def lits_dir(tmp_path: Path) -> Path:
    return write_lits_cases(tmp_path / "lits")


@pytest.fixture(scope="session")
def ircadb_07() -> Path:
    """3D-IRCADb-01 patient 7 (CC BY-NC-ND: read in place, never copied into the project)."""
    return require_real("ircadb_07")


@pytest.fixture(scope="session")
def dcmqi_liver_seg() -> Path:
    """3 CT slices with a known-good liver DICOM-SEG (BSD-3)."""
    return require_real("dcmqi_liver_seg")


@pytest.fixture(scope="session")
def real_ct() -> Path:
    if not (REAL_CT / "dicom").is_dir():
        pytest.skip(f"real CT sample not found at {REAL_CT}")
    return REAL_CT


@pytest.fixture(autouse=True)
def _drop_closed_log_streams():
    """Remove logging handlers left writing to a stream pytest has closed since (an earlier test's
    captured stderr, bound when MONAI/Ignite attached a StreamHandler): they print "Logging error"
    tracebacks into the next test's stderr."""
    import logging

    for logger in [logging.getLogger(), *(v for v in logging.root.manager.loggerDict.values() if isinstance(v, logging.Logger))]:
        for h in list(logger.handlers):
            if isinstance(h, logging.StreamHandler) and getattr(h.stream, "closed", False):
                logger.removeHandler(h)
    yield


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread per test: on the shared 2-core machine, two OpenMP threads
    made small ops 10-50x slower while other processes held the cores."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def phantom_store(tmp_path_factory) -> Path:
    """A small converted phantom cohort: 8 domain-a cases (128x128, 48 slices) as 96x96
    slices, the paper's central 30% of slices, split by case into train (6) and test (2)."""
    from sam_mix_monai.data.converter import convert
    from sam_mix_monai.data.phantom import generate_cohort
    from sam_mix_monai.transforms import SlicingConfig

    root = tmp_path_factory.mktemp("phantom")
    generate_cohort(root / "lits", cases=8, layout="lits", domain="a", seed=0, matrix=128, slices=48, workers=2, progress=False)
    out = root / "phantom96.h5"
    convert(root / "lits", out, "lits", SlicingConfig(keep_rate=0.3, image_size=96), {"train": 0.75, "test": 0.25},
            seed=0, workers=2, progress=False)
    return out


def load_split(store: Path, split: str):
    """All slices of one split as tensors ``(images, masks, labels)``."""
    import torch

    from sam_mix_monai.data import SliceDataset

    ds = SliceDataset(store, split=split)
    items = ds.__getitems__(list(range(len(ds))))
    return (torch.stack([i["image"] for i in items]), torch.stack([i["mask"] for i in items]),
            torch.stack([i["label"] for i in items]))


@pytest.fixture(autouse=True, scope="session")
def _onnx_cache_in_tmp(tmp_path_factory):
    """Exported ONNX encoders go to a session temporary folder, not the user's cache."""
    import os

    old = os.environ.get("SAM_MIX_CACHE_DIR")
    os.environ["SAM_MIX_CACHE_DIR"] = str(tmp_path_factory.mktemp("sam_mix_cache"))
    yield
    if old is None:
        os.environ.pop("SAM_MIX_CACHE_DIR", None)
    else:
        os.environ["SAM_MIX_CACHE_DIR"] = old
