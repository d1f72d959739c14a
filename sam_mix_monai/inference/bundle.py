"""Entry functions that the MONAI bundle ``bundles/sam_mix_liver_ct`` calls from its configs.

``configs/inference.yaml`` runs::

    initialize: $sam_mix_monai.inference.ensure_phantom_ct(@dataset_dir, @phantom_dir)
    run:        $@evaluator.run()     # a BundleEvaluator: bundle_inference(@network, @inferer, @dataset_dir, ...)

so ``python -m monai.bundle run --config_file configs/inference.yaml`` segments every case of
``dataset_dir`` exactly like ``sam-mix infer --bundle``; without ``models/model.pt`` it segments with the
packaged default liver model (the config's ``default_model``, on its own design; :func:`.loading.bundle_weights`)
and logs which weights it used. The config also names the ids MONAI's
``InferProperties`` require (``dataset``: :func:`bundle_cases` with ``preprocessing``;
``evaluator``: :class:`BundleEvaluator`) and ``postprocessing``: what MONAI Label's bundle task runs
(``preprocessing`` -> ``inferer(image[None], network)`` -> ``postprocessing``). ``configs/train.yaml`` finds (or generates)
its HDF5 slice store with :func:`training_store`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from torch import nn

from sam_mix_monai.inference.distributed import dist_info
from sam_mix_monai.inference.loading import bundle_weights
from sam_mix_monai.inference.predictor import SlicePredictor
from sam_mix_monai.inference.runner import Model, RunReport, segment_cases
from sam_mix_monai.inference.settings import InferenceSettings, OutputSettings
from sam_mix_monai.inference.volume import VolumeSliceInferer
from sam_mix_monai.utils.errors import InputError, PathLike

__all__ = ["BundleEvaluator", "bundle_cases", "bundle_inference", "ensure_phantom_ct", "training_store"]

logger = logging.getLogger(__name__)


def _same(a: PathLike, b: PathLike) -> bool:
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def ensure_phantom_ct(dataset_dir: PathLike, phantom_dir: PathLike | None = None, cases: int = 2, matrix: int = 256,
                      slices: int = 64, seed: int = 0) -> Path:
    """Make sure the inference ``dataset_dir`` exists; generate phantom CT there when it is the phantom folder.

    Phantom cases (TotalSegmentator layout, domain b) are written only when ``dataset_dir`` is
    ``phantom_dir`` (the bundle's default) and is missing or empty, so a mistyped real data folder
    is an error rather than a folder of phantoms.

    Args:
        dataset_dir: the bundle's ``dataset_dir``.
        phantom_dir: the default phantom folder (``None``: ``dataset_dir`` is one).
        cases, matrix, slices, seed: phantom size (see ``sam-mix phantom``).

    Returns:
        ``dataset_dir``.

    Raises:
        InputError: ``dataset_dir`` does not exist (and is not the phantom folder).
    """
    from sam_mix_monai.data.phantom import generate_cohort

    root = Path(dataset_dir)
    if root.is_dir() and any(not p.name.startswith(".") for p in root.iterdir()):
        return root
    if phantom_dir is not None and not _same(root, phantom_dir):
        raise InputError(root, "dataset_dir not found or empty")
    logger.info("dataset_dir %s is empty: generating %d phantom CT cases", root, cases)
    generate_cohort(root, cases, layout="totalseg", domain="b", seed=seed, matrix=matrix, slices=slices, workers=1,
                    progress=False)
    return root


def training_store(dataset_dir: PathLike, phantom: Any = None) -> Path:
    """The HDF5 slice store the bundle trains and evaluates on.

    Args:
        dataset_dir: a folder holding one slice store (``sam-mix convert`` output, e.g. ``lits.h5``), or
            the store itself. When it is ``phantom.root``, the phantom stores are generated there first
            if missing (:func:`sam_mix_monai.engines.phantom_data.ensure_phantom_data`; by rank 0 only
            when a process group is initialised) and domain a is used.
        phantom: a :class:`sam_mix_monai.engines.config.PhantomDataConfig` (``None``: no phantom default).

    Returns:
        The store path.

    Raises:
        InputError: no store, or several stores, in ``dataset_dir``.
    """
    root = Path(dataset_dir)
    if phantom is not None and _same(root, phantom.root):
        import torch.distributed as dist

        from sam_mix_monai.engines.phantom_data import ensure_phantom_data

        shared = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if shared and dist.get_rank() > 0:
            dist.barrier()  # rank 0 writes the phantom stores first
        store = ensure_phantom_data(phantom, workers=1, progress=False)[0]
        if shared and dist.get_rank() == 0:
            dist.barrier()
        return store
    if root.is_file():
        return root
    stores = sorted(root.glob("*.h5")) + sorted(root.glob("*.hdf5")) if root.is_dir() else []
    if len(stores) != 1:
        found = ", ".join(p.name for p in stores) or "none"
        raise InputError(root, f"dataset_dir must hold exactly one HDF5 slice store (sam-mix convert output); found {found}")
    return stores[0]


def bundle_inference(network: nn.Module, inferer: VolumeSliceInferer, dataset_dir: PathLike, output_dir: PathLike,
                     ckpt_path: PathLike | None = None, outputs: OutputSettings | None = None,
                     settings: InferenceSettings | None = None, default_model: PathLike | None = None,
                     default_model_config: Mapping[str, Any] | None = None) -> RunReport:
    """Load the bundle weights into ``network`` and segment every case of ``dataset_dir``.

    Args:
        network: the bundle's ``network`` (``network_def`` on its device).
        inferer: the bundle's ``inferer``.
        dataset_dir: NIfTI files / DICOM series folders / ``<case>/ct.nii.gz`` folders.
        output_dir: where masks, summaries (and previews) go.
        ckpt_path: weight file (``None``: use ``network`` as it is).
        outputs: what to write per case (:class:`.settings.OutputSettings`).
        settings: ``largest_component`` and ``progress`` (:class:`.settings.InferenceSettings`; default:
            progress bars on).
        default_model, default_model_config: without ``ckpt_path`` on disk, segment with this trained-parts
            file on its own design (:func:`.loading.bundle_weights`; the bundle: the packaged default liver model).

    Returns:
        The run report.

    Raises:
        InputError: missing weights (and no default model), no cases, or (after all cases ran) any failed case.
    """
    settings = settings or InferenceSettings(progress=True)
    if ckpt_path is not None:
        network = bundle_weights(network, ckpt_path, default_model, default_model_config)
    inferer.progress = settings.progress
    rank, world, _ = dist_info()
    report = segment_cases([dataset_dir], Model(SlicePredictor(network), inferer), output_dir, outputs, settings,
                           rank, world)
    logger.info("segmented %d case(s) in %.1f s", len(report.results) - len(report.failed), report.seconds)
    if report.failed:
        raise InputError(None, "; ".join(r.error or "" for r in report.failed))
    return report


def bundle_cases(dataset_dir: PathLike) -> list[dict[str, str]]:
    """The cases of ``dataset_dir`` as MONAI dataset items ``{"image": path, "case": name}`` (:func:`.cases.find_cases`)."""
    from sam_mix_monai.inference.cases import find_cases

    return [{"image": str(c.path), "case": c.name} for c in find_cases([dataset_dir])]


class BundleEvaluator:
    """The bundle's ``evaluator``: ``run()`` segments every case of ``dataset_dir`` (:func:`bundle_inference`).

    An object with ``run()``, as MONAI's bundle workflows expect of an evaluator; the work is the same
    per-case loop as ``sam-mix infer`` (streamed slices, mask on the input grid, atomic outputs). The
    config's options are turned into the run's settings once, here.

    Args:
        network, inferer, dataset_dir, output_dir, ckpt_path, default_model, default_model_config: see
            :func:`bundle_inference`.
        preview: also write preview PNGs.
        largest_component: keep only the largest 3D component.
        progress: progress bars.
    """

    def __init__(self, network: nn.Module, inferer: VolumeSliceInferer, dataset_dir: PathLike, output_dir: PathLike,
                 ckpt_path: PathLike | None = None, preview: bool = False, largest_component: bool = True,
                 progress: bool = True, default_model: PathLike | None = None,
                 default_model_config: Mapping[str, Any] | None = None) -> None:
        self.network, self.inferer = network, inferer
        self.dataset_dir, self.output_dir, self.ckpt_path = dataset_dir, output_dir, ckpt_path
        self.default_model, self.default_model_config = default_model, default_model_config
        self.outputs = OutputSettings(preview=preview)
        self.settings = InferenceSettings(largest_component=largest_component, progress=progress)

    def run(self) -> RunReport:
        """Load the weights and segment the cases."""
        return bundle_inference(self.network, self.inferer, self.dataset_dir, self.output_dir, self.ckpt_path,
                                self.outputs, self.settings, self.default_model, self.default_model_config)
