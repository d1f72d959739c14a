"""Generating a cohort of phantom cases in parallel, with a manifest of per-case parameters."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from sam_mix_monai.data.phantom.domains import get_domain
from sam_mix_monai.data.phantom.patient import MIN_SLICES
from sam_mix_monai.data.phantom.volume import generate_case
from sam_mix_monai.data.phantom.writer import check_layout, write_case
from sam_mix_monai.utils.atomic import atomic_output, check_writable_dir
from sam_mix_monai.utils.errors import InputError, PathLike

MANIFEST = "phantom_manifest.json"


def default_workers(cases: int) -> int:
    """Worker processes used when none are asked for: the CPU count, at most 4 and at most ``cases``."""
    return max(1, min(int(cases), os.cpu_count() or 1, 4))


def _int_arg(name: str, value, minimum: int, maximum: int | None = None) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise InputError(None, f"{name} must be an integer (got {value!r})") from None
    if v != value and not isinstance(value, str):
        raise InputError(None, f"{name} must be an integer (got {value!r})")
    if v < minimum or (maximum is not None and v > maximum):
        bound = f"at least {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise InputError(None, f"{name} must be {bound} (got {value})")
    return v


def make_case(out_dir: str, layout: str, domain: str, seed: int, case_id: int, matrix: int, slices: int) -> dict:
    """Generate and write one case; return its manifest record (runs in a worker process).

    Args:
        out_dir: output folder.
        layout: ``"lits"`` or ``"totalseg"``.
        domain: ``"a"`` or ``"b"``.
        seed: cohort seed.
        case_id: case number.
        matrix: in-plane matrix.
        slices: number of slices.

    Returns:
        The case record.
    """
    t0 = time.perf_counter()
    case = generate_case(seed, case_id, domain, matrix, slices, layout=layout)
    files = write_case(case, out_dir, layout, case_id)
    rec = {"id": case_id, **files, "seed": seed, "layout": layout}
    rec.update(case.patient.summary())
    rec["shape"] = list(case.image.shape)
    rec["liver_slices"] = case.liver_slices
    rec["liver_slice_range_ras"] = list(case.liver_range) if case.liver_range else None
    rec["lesion_list"] = [{k: (round(v, 2) if isinstance(v, float) else v) for k, v in les.items() if k != "axes"} for les in case.patient.lesions]
    rec["seconds"] = round(time.perf_counter() - t0, 3)
    return rec


def _write_manifest(out: Path, records: list[dict], layout: str) -> Path:
    """Merge ``records`` into ``out/phantom_manifest.json`` (by case id) and write it atomically."""
    path = out / MANIFEST
    old: dict[int, dict] = {}
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("layout") == layout:
                old = {int(r["id"]): r for r in data.get("cases", [])}
        except (OSError, ValueError, KeyError, TypeError):
            old = {}
    old.update({int(r["id"]): r for r in records})
    doc = {
        "generator": "sam_mix_monai.data.phantom",
        "layout": layout,
        "note": "synthetic CT phantom; converters ignore this file",
        "cases": [old[k] for k in sorted(old)],
    }
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return path


def generate_cohort(
    out_dir: PathLike,
    cases: int,
    layout: str = "lits",
    domain: str = "a",
    seed: int = 0,
    matrix: int = 512,
    slices: int = 120,
    workers: int | None = None,
    start_id: int = 0,
    progress: bool = True,
) -> list[dict]:
    """Generate ``cases`` phantom cases with ids ``start_id ...`` into ``out_dir``.

    The result does not depend on ``workers``: case ``i`` is drawn from
    ``SeedSequence(seed, spawn_key=(i, domain))`` alone.

    Args:
        out_dir: output folder (created if missing).
        cases: number of cases (>= 1).
        layout: ``"lits"`` or ``"totalseg"``.
        domain: ``"a"`` or ``"b"``.
        seed: cohort seed (>= 0).
        matrix: in-plane matrix size (32-2048).
        slices: slices per case (16-2048).
        workers: worker processes (None: :func:`default_workers`; 1: in this process).
        start_id: id of the first case (>= 0).
        progress: show a progress bar.

    Returns:
        The case records (as in the manifest), sorted by id.

    Raises:
        InputError: for bad arguments or an unwritable output folder.
    """
    cases = _int_arg("cases", cases, 1)
    check_layout(layout)
    dom = get_domain(domain).name
    seed = _int_arg("seed", seed, 0)
    matrix = _int_arg("matrix", matrix, 32, 2048)
    slices = _int_arg("slices", slices, MIN_SLICES, 2048)
    start_id = _int_arg("start_id", start_id, 0)
    workers = default_workers(cases) if workers is None else _int_arg("workers", workers, 1)
    out = check_writable_dir(out_dir)
    jobs = [(str(out), layout, dom, seed, start_id + i, matrix, slices) for i in range(cases)]
    records: list[dict] = []
    bar = tqdm(total=cases, desc=f"phantom {layout}/{dom}", unit="case", disable=not progress)
    try:
        if workers == 1 or cases == 1:
            for job in jobs:
                records.append(make_case(*job))
                bar.update(1)
        else:
            # fork (where available) so workers inherit the loaded modules instead of
            # re-importing the whole package; results do not depend on the start method.
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            with ProcessPoolExecutor(max_workers=min(workers, cases), mp_context=ctx) as pool:
                futures = [pool.submit(make_case, *job) for job in jobs]
                try:
                    for fut in as_completed(futures):
                        records.append(fut.result())
                        bar.update(1)
                except BaseException:
                    for fut in futures:
                        fut.cancel()
                    raise
    finally:
        bar.close()
    records.sort(key=lambda r: r["id"])
    _write_manifest(out, records, layout)
    return records
