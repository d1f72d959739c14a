"""Case-level train/val/test splits (never by slice, so no case leaks across splits), and a development slab.

Example:
    >>> parse_split("train=0.7,val=0.1,test=0.2")
    {'train': 0.7, 'val': 0.1, 'test': 0.2}
    >>> sorted(assign_splits([f"c{i}" for i in range(10)], {"train": 0.7, "val": 0.1, "test": 0.2}, 0).values()).count("train")
    7
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from sam_mix_monai.data.h5store import SPLIT_NAMES, CaseSlices
from sam_mix_monai.utils.errors import InputError

DEFAULT_SPLIT = {"train": 0.7, "val": 0.1, "test": 0.2}


def parse_split(text: str) -> dict[str, float]:
    """Parse ``"train=0.7,val=0.1,test=0.2"`` into fractions that sum to 1.

    Raises:
        InputError: unknown split name, bad number, or fractions not summing to 1.
    """
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in SPLIT_NAMES:
            raise InputError(None, f"--split: bad entry {part!r} (expected NAME=FRACTION with NAME in {', '.join(SPLIT_NAMES)})")
        try:
            out[name] = float(value)
        except ValueError:
            raise InputError(None, f"--split: {value!r} is not a number") from None
        if out[name] < 0:
            raise InputError(None, f"--split: fraction for {name} is negative")
    if not out or abs(sum(out.values()) - 1.0) > 1e-6:
        raise InputError(None, f"--split: fractions must sum to 1, got {sum(out.values()):g}")
    return out


def assign_splits(case_ids: list[str], fractions: dict[str, float], seed: int = 0) -> dict[str, str]:
    """Assign each case to a split, shuffled with ``seed``.

    Counts are rounded by largest remainder; every split with a positive fraction gets
    at least one case when there are enough cases.

    Args:
        case_ids: the cases.
        fractions: split name -> fraction (summing to 1).
        seed: shuffling seed.

    Returns:
        case id -> split name.
    """
    n = len(case_ids)
    names = [s for s in SPLIT_NAMES if fractions.get(s, 0) > 0]
    raw = np.array([fractions[s] * n for s in names])
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts))[: n - counts.sum()]:
        counts[i] += 1
    # Give an empty split one case taken from the largest, when possible.
    for i in range(len(names)):
        if counts[i] == 0 and n >= len(names):
            j = int(np.argmax(counts))
            counts[j] -= 1
            counts[i] += 1
    order = np.random.default_rng(seed).permutation(n)
    out: dict[str, str] = {}
    start = 0
    for name, c in zip(names, counts):
        for k in order[start : start + c]:
            out[case_ids[k]] = name
        start += c
    return out


def parse_slab(text: str) -> tuple[int, int]:
    """Parse ``"START:STOP"`` (slice indices, STOP excluded) of a development slab.

    Raises:
        InputError: not two integers with ``0 <= START < STOP``.
    """
    start, sep, stop = text.partition(":")
    try:
        a, b = int(start), int(stop)
    except ValueError:
        a = b = -1
    if not sep or a < 0 or b <= a:
        raise InputError(None, f"--dev-slab: bad value {text!r} (expected START:STOP slice indices, 0 <= START < STOP)")
    return a, b


def split_slab(case: CaseSlices, start: int, stop: int, gap: int = 0) -> tuple[CaseSlices, CaseSlices]:
    """Cut a slab of slices out of a case, for development on the same patient.

    A case with one patient cannot be split by case; a contiguous slab can. The slab becomes its own case
    (``<id>_slab<START>-<STOP>``), the rest keeps the case id; ``gap`` slices on each side of the slab go to
    neither, so the training part holds no direct neighbour of a development slice.

    Args:
        case: the slices of one case.
        start, stop: slab bounds in the case's ``slice_index`` (``stop`` excluded).
        gap: slices dropped on each side.

    Returns:
        (the rest, the slab).

    Raises:
        InputError: the slab holds no slice of the case, or nothing would be left to train on.
    """
    z = np.asarray(case.slice_index)
    in_slab = (z >= start) & (z < stop)
    rest = (z < start - gap) | (z >= stop + gap)
    if not in_slab.any() or not rest.any():
        raise InputError(case.source, f"--dev-slab {start}:{stop}: case {case.case_id} has slices "
                         f"{int(z.min())}..{int(z.max())}; the slab must hold some of them and leave others")

    def part(keep: np.ndarray, case_id: str) -> CaseSlices:
        return replace(case, case_id=case_id, image=case.image[keep], mask=case.mask[keep], label=case.label[keep],
                       slice_index=z[keep])

    return part(rest, case.case_id), part(in_slab, f"{case.case_id}_slab{start}-{stop}")
