"""2D promptable-segmentation samples of the phantom's organs *other than the liver*.

Pretraining data for a compact SAM (:mod:`sam_mix_monai.engines.sam_pretrain`): phantom cases
are generated in memory and cut into axial slices exactly as the converter does it for the
training stores (:func:`~sam_mix_monai.transforms.volume_to_slices_transform`: RAS
canonicalisation, display orientation, HU window 40/400 to [0, 1], bilinear resize to
``image_size``); the case's tissue map goes through the same pipeline as a label (nearest
resize), and every organ instance on a slice becomes one binary mask.

* An instance is one 4-connected component of an organ's tissues on the resized slice
  (two kidneys are two masks, each bowel loop is one mask); components smaller than
  ``min_pixels`` are dropped.
* Hollow organs (stomach, bowel) and the kidneys are hole-filled, so that their lumen or sinus
  belongs to them, as in TotalSegmentator-style labels.
* **Liver and lesion pixels never belong to a mask** (they are removed after hole filling as
  well), and the liver is no organ here: the point of the data is transfer to an unseen organ.

The default cohort seed (1000) is disjoint from the demo / study cohorts (seed 0, and the
phantom CLI's usual seeds), and the default volume size (256 x 256 x 48) is the demo's.

Example:
    >>> data = build_organ_slices(cases=1, image_size=64, matrix=64, slices=16, progress=False)
    >>> data.images.shape[1:], data.masks.dtype
    ((64, 64), dtype('bool'))
    >>> "liver" in data.organs
    False
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import CastToTyped, Compose, Resized
from scipy import ndimage
from tqdm.auto import tqdm

from sam_mix_monai.data.phantom.tissues import LESION_TISSUES, LIVER_TISSUES, Tissue, mask_lut
from sam_mix_monai.data.phantom.volume import PhantomCase, generate_case
from sam_mix_monai.transforms import AxialSliced, HUWindowd
from sam_mix_monai.utils.errors import InputError

__all__ = [
    "DEFAULT_SEED",
    "ORGANS",
    "OrganSpec",
    "OrganSlices",
    "build_organ_slices",
    "case_organ_slices",
    "organ_instances",
]

#: Cohort seed of the pretraining phantoms; the demo and the study use seed 0.
DEFAULT_SEED = 1000


@dataclass(frozen=True)
class OrganSpec:
    """One organ class: the tissues it is made of, and whether enclosed holes belong to it."""

    tissues: tuple[Tissue, ...]
    fill_holes: bool = False


#: Organ classes of the pretraining data (never the liver or its lesions).
ORGANS: dict[str, OrganSpec] = {
    "spleen": OrganSpec((Tissue.SPLEEN,)),
    "kidney": OrganSpec((Tissue.KIDNEY_CORTEX, Tissue.KIDNEY_MEDULLA, Tissue.URINE), fill_holes=True),
    "stomach": OrganSpec((Tissue.STOMACH_WALL,), fill_holes=True),
    "bowel": OrganSpec((Tissue.BOWEL_WALL,), fill_holes=True),
    "pancreas": OrganSpec((Tissue.PANCREAS,)),
    "gallbladder": OrganSpec((Tissue.BILE,)),
    "aorta": OrganSpec((Tissue.AORTA,), fill_holes=True),
    "ivc": OrganSpec((Tissue.IVC,)),
    "portal_vein": OrganSpec((Tissue.PORTAL_VEIN,)),
    "bone": OrganSpec((Tissue.CORTICAL_BONE, Tissue.CANCELLOUS_BONE, Tissue.POSTERIOR_ELEMENT)),
    "heart": OrganSpec((Tissue.MYOCARDIUM, Tissue.BLOOD_POOL)),
    "lung": OrganSpec((Tissue.LUNG, Tissue.LUNG_VESSEL), fill_holes=True),
}

_FORBIDDEN = mask_lut((*LIVER_TISSUES, *LESION_TISSUES))
_LUTS = {name: mask_lut(spec.tissues) for name, spec in ORGANS.items()}


@dataclass
class OrganSlices:
    """Windowed slices and their organ-instance masks, all in memory.

    Attributes:
        images: (N, S, S) float32 slices in [0, 1] (display orientation).
        masks: (M, S, S) bool organ-instance masks.
        mask_slice: (M,) index into ``images`` of each mask's slice.
        mask_organ: (M,) index into ``organs`` of each mask's organ.
        slice_case: (N,) case id of each slice.
        organs: organ names.
        tissue: (N, S, S) uint8 resized tissue maps, or ``None`` when not kept.
    """

    images: np.ndarray
    masks: np.ndarray
    mask_slice: np.ndarray
    mask_organ: np.ndarray
    slice_case: np.ndarray
    organs: tuple[str, ...]
    tissue: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    @property
    def image_size(self) -> int:
        """Side of the square slices."""
        return int(self.images.shape[-1])

    def counts(self) -> dict[str, int]:
        """Number of masks per organ."""
        n = np.bincount(self.mask_organ, minlength=len(self.organs))
        return {o: int(c) for o, c in zip(self.organs, n)}

    def split_by_case(self, cases) -> tuple["OrganSlices", "OrganSlices"]:
        """``(rest, selected)``: the slices (and their masks) of ``cases``, and of all other cases."""
        sel = np.isin(self.slice_case, np.asarray(list(cases)))
        return self._take(~sel), self._take(sel)

    def _take(self, keep_slices: np.ndarray) -> "OrganSlices":
        new_index = np.cumsum(keep_slices) - 1
        keep_masks = keep_slices[self.mask_slice]
        return OrganSlices(
            images=self.images[keep_slices],
            masks=self.masks[keep_masks],
            mask_slice=new_index[self.mask_slice[keep_masks]].astype(np.int64),
            mask_organ=self.mask_organ[keep_masks],
            slice_case=self.slice_case[keep_slices],
            organs=self.organs,
            tissue=None if self.tissue is None else self.tissue[keep_slices],
        )


def organ_instances(tissue: np.ndarray, min_pixels: int = 20) -> list[tuple[str, np.ndarray]]:
    """Organ-instance masks of one resized tissue-map slice.

    Args:
        tissue: (S, S) uint8 tissue map.
        min_pixels: smallest component kept.

    Returns:
        ``[(organ, mask), ...]`` in :data:`ORGANS` order, components in label order; masks
        are bool (S, S) and hold no liver or lesion pixel.
    """
    forbidden = _FORBIDDEN[tissue]
    out: list[tuple[str, np.ndarray]] = []
    for name, spec in ORGANS.items():
        m = _LUTS[name][tissue]
        if int(m.sum()) < min_pixels:
            continue
        if spec.fill_holes:
            m = ndimage.binary_fill_holes(m)
        m &= ~forbidden
        comps, n = ndimage.label(m)
        if n == 0:
            continue
        sizes = np.bincount(comps.ravel(), minlength=n + 1)
        for k in np.flatnonzero(sizes >= min_pixels):
            if k > 0:
                out.append((name, comps == k))
    return out


def _slicer(image_size: int) -> Compose:
    keys = ["image", "tissue"]
    return Compose([
        AxialSliced(keys=keys, keep_rate="all"),
        HUWindowd(keys="image"),
        Resized(keys=keys, spatial_size=(image_size, image_size), mode=("bilinear", "nearest")),
        CastToTyped(keys=keys, dtype=("float32", "uint8")),
    ])


def case_organ_slices(case: PhantomCase, image_size: int = 128, min_pixels: int = 20):
    """Slice one case like the converter and collect its organ instances.

    Args:
        case: a generated phantom case.
        image_size: side of the output slices.
        min_pixels: smallest instance kept (pixels at ``image_size``).

    Returns:
        ``(images (N, S, S) float32, tissue (N, S, S) uint8, [(slice, organ, mask), ...], kept)``
        for the N slices that hold at least one instance; ``kept`` are their indices among all
        the case's slices (RAS z order, as in a converted store with ``keep_rate="all"``).
    """
    affine = torch.as_tensor(case.affine, dtype=torch.float64)
    # The tissue map as a float label: Resized(nearest) keeps the ids, CastToTyped restores uint8.
    data = {
        "image": MetaTensor(torch.from_numpy(np.ascontiguousarray(case.image))[None], affine=affine),
        "tissue": MetaTensor(torch.from_numpy(np.ascontiguousarray(case.tissue).astype(np.float32))[None], affine=affine),
    }
    out = _slicer(int(image_size))(data)
    images = np.asarray(out["image"], dtype=np.float32)
    tissue = np.asarray(out["tissue"], dtype=np.uint8)
    keep, records = [], []
    for z in range(images.shape[0]):
        inst = organ_instances(tissue[z], min_pixels)
        if inst:
            records.extend((len(keep), name, m) for name, m in inst)
            keep.append(z)
    return images[keep], tissue[keep], records, np.asarray(keep, np.int64)


def build_organ_slices(
    cases: int = 24,
    seed: int = DEFAULT_SEED,
    domain: str = "a",
    image_size: int = 128,
    matrix: int = 256,
    slices: int = 48,
    min_pixels: int = 20,
    keep_tissue: bool = False,
    progress: bool = True,
) -> OrganSlices:
    """Generate ``cases`` phantom cases and turn them into organ-instance samples.

    Deterministic for its arguments (the generator is; slicing has no randomness).

    Args:
        cases: number of cases (ids ``0 .. cases-1`` of cohort ``seed``).
        seed: cohort seed (default 1000, disjoint from the demo's seed 0).
        domain: phantom domain (``"a"``: the demo's training domain).
        image_size: side of the slices (the demo's SAM input is 128).
        matrix, slices: generated volume size (the demo's 256 x 48).
        min_pixels: smallest instance kept, in pixels at ``image_size``.
        keep_tissue: also keep the resized tissue maps (for checks).
        progress: show a progress bar.

    Returns:
        The samples.

    Raises:
        InputError: bad arguments.
    """
    if int(cases) < 1:
        raise InputError(None, f"cases must be at least 1 (got {cases})")
    if int(image_size) < 16:
        raise InputError(None, f"image_size must be at least 16 (got {image_size})")
    if int(min_pixels) < 1:
        raise InputError(None, f"min_pixels must be at least 1 (got {min_pixels})")
    names = tuple(ORGANS)
    imgs, tis, masks, m_slice, m_organ, s_case = [], [], [], [], [], []
    offset = 0
    for cid in tqdm(range(int(cases)), desc="organ slices", unit="case", disable=not progress):
        case = generate_case(seed, cid, domain, matrix, slices)
        im, ts, records, _ = case_organ_slices(case, image_size, min_pixels)
        imgs.append(im)
        if keep_tissue:
            tis.append(ts)
        s_case.append(np.full(len(im), cid, np.int64))
        for z, name, m in records:
            masks.append(m)
            m_slice.append(offset + z)
            m_organ.append(names.index(name))
        offset += len(im)
    s = int(image_size)
    return OrganSlices(
        images=np.concatenate(imgs) if offset else np.zeros((0, s, s), np.float32),
        masks=np.stack(masks) if masks else np.zeros((0, s, s), bool),
        mask_slice=np.asarray(m_slice, np.int64),
        mask_organ=np.asarray(m_organ, np.int64),
        slice_case=np.concatenate(s_case),
        organs=names,
        tissue=(np.concatenate(tis) if offset else np.zeros((0, s, s), np.uint8)) if keep_tissue else None,
    )
