"""Helpers of the bad-input and fault tests: broken inputs, input hashes, and the one check they share.

Every fault test asserts the promise of the README: exit code 2, one stderr line naming the file,
no traceback, nothing left in the output, and the inputs unchanged (by content hash).
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import time
from pathlib import Path
from typing import Iterable

import nibabel as nib
import numpy as np
import pytest


def tree_hash(*paths: Path) -> dict[str, str]:
    """SHA-256 of every file under ``paths`` (files or folders), by path."""
    out = {}
    for root in paths:
        root = Path(root)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def leftovers(folder: Path) -> list[str]:
    """Every file and folder under ``folder`` (empty when it does not exist)."""
    folder = Path(folder)
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def error_line(capfd: pytest.CaptureFixture[str]) -> str:
    """The one line on stderr (C-level writes included: ITK warnings would count)."""
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


class Snapshot:
    """Content hashes of the inputs of a test, to show that a failed run left them unchanged."""

    def __init__(self, *paths: Path) -> None:
        self.paths = [Path(p) for p in paths]
        self.hashes = tree_hash(*self.paths)
        assert self.hashes, "nothing to hash"

    def unchanged(self) -> bool:
        """Whether every file is still there with the same content, and no file was added."""
        return tree_hash(*self.paths) == self.hashes


def assert_clean_failure(rc: int, capfd, names: Iterable[str], inputs: Snapshot, outputs: Iterable[Path] = (),
                         match: str | None = None) -> str:
    """Exit 2, one line naming each of ``names`` (and holding ``match``), no output left, inputs unchanged.

    ``outputs``: folders that must be absent or empty, or files that must be absent (with no
    temporary ``.<name>.*`` beside them).
    """
    line = error_line(capfd)
    assert rc == 2, line
    for name in names:
        assert str(name) in line, line
    if match is not None:
        assert match in line, line
    for out in map(Path, outputs):
        if out.is_dir() or not out.suffix:
            assert leftovers(out) == [], leftovers(out)
        else:
            assert not out.exists(), out
            assert not (out.parent.exists() and list(out.parent.glob(f".{out.name}.*"))), leftovers(out.parent)
    assert inputs.unchanged()
    return line


def nifti_with_header(path: Path, image: np.ndarray, affine: np.ndarray, edit=None) -> Path:
    """Write a NIfTI, then apply ``edit(header)`` to its raw header (sform rows etc.) and rewrite it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.asarray(image), affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    if edit is not None:
        edit(img.header)
        img = nib.Nifti1Image(np.asarray(image), None, header=img.header)
    nib.save(img, str(path))
    return path


def write_dicom_series(folder: Path, n: int = 12, dz: float = 2.5, size: int = 32, positions=None,
                       values: np.ndarray | None = None) -> Path:
    """A CT-like DICOM series of ``n`` axial slices (SimpleITK), one file per slice ``slice<k>.dcm``."""
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    if values is None:
        values = np.full((n, size, size), -1000, np.int16)
        values[:, 6 : size - 6, 6 : size - 6] = 40
        values[:, 10:20, 10:20] = 120
    img = sitk.GetImageFromArray(values)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    uid = f"1.2.826.0.1.3680043.2.1125.{os.getpid()}.{time.time_ns() % 10**9}"
    for i in range(n):
        s = img[:, :, i]
        z = positions[i] if positions is not None else i * dz
        for key, value in (("0008|0060", "CT"), ("0020|000d", uid), ("0020|000e", uid + ".1"),
                           ("0008|0018", f"{uid}.2.{i}"), ("0020|0013", str(i + 1)), ("0020|0032", f"0\\0\\{z:g}"),
                           ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0028|0030", "0.8\\0.8"), ("0018|0050", f"{dz:g}"),
                           ("0028|1052", "0"), ("0028|1053", "1")):
            s.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice{i:03d}.dcm"))
        writer.Execute(s)
    return folder


def enospc(*_args, **_kwargs):
    """A writer replacement that fails as a full disk does."""
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def erofs(*_args, **_kwargs):
    """A writer replacement that fails as a read-only file system does."""
    raise OSError(errno.EROFS, os.strerror(errno.EROFS))


class SmallDisk:
    """A ``tmpfs`` of a few hundred KB mounted for a test (root only); ``skip`` where mounting is refused."""

    def __init__(self, where: Path, size_kb: int = 1024) -> None:
        self.where = Path(where)
        self.where.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs needs root; the monkeypatched ENOSPC tests cover this")
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(self.where)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip()}); the monkeypatched ENOSPC tests cover this")

    def fill(self, leave_kb: int) -> None:
        """Fill the disk until about ``leave_kb`` KB are free."""
        free = os.statvfs(self.where).f_bavail * os.statvfs(self.where).f_frsize
        with open(self.where / ".filler", "wb") as f:
            f.write(b"\0" * max(0, free - leave_kb * 1024))

    def close(self) -> None:
        if subprocess.run(["umount", str(self.where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(self.where)], capture_output=True)  # busy: detach now, free later


@pytest.fixture()
def small_disk(tmp_path):
    """A 1 MB tmpfs at ``tmp_path / "disk"`` (skipped where it cannot be mounted)."""
    disk = SmallDisk(tmp_path / "disk")
    yield disk
    disk.close()


def write_store(path: Path, size: int = 64, n: int = 6, splits=("train", "train", "train", "val", "test")) -> Path:
    """A small valid slice store: one case per entry of ``splits``, ``n`` slices each, a bright square 'liver'."""
    from sam_mix_monai.data.h5store import CaseSlices, SliceStoreWriter

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with SliceStoreWriter(path, size, {"window_center": 40.0, "window_width": 400.0}) as w:
        for c, split in enumerate(splits):
            mask = np.zeros((n, size, size), np.uint8)
            for k in range(1, n - 1):
                mask[k, size // 4 : size // 2 + c, size // 4 + k : 3 * size // 4] = 1
            image = np.clip(0.2 + 0.5 * mask + rng.normal(0, 0.05, mask.shape), 0, 1).astype(np.float32)
            w.append(CaseSlices(f"case{c}", "synthetic", image, mask, mask.reshape(n, -1).max(1), np.arange(n),
                                np.array((0.8, 0.8, 2.5), np.float32), np.eye(4), (size, size, n)), split=split)
    return path


def zip_bomb(path: Path, gib: float = 2.5, name: str = "slice000.dcm", declared: int | None = None) -> Path:
    """A real zip bomb: one deflate member of ``gib`` GiB of zeros, a few MB on disk, built in seconds.

    The deflate stream is one full-flushed block of 64 MiB of zeros repeated (a full flush makes each
    repeat independent) and an empty final block. ``declared``: the uncompressed size written in the
    headers instead of the true one (a lying bomb). Sizes stay below 4 GiB (no Zip64 records).
    """
    import struct
    import zlib

    block = 64 << 20
    reps = int(gib * (1 << 30)) // block
    size = reps * block
    assert size < 1 << 32
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = c.compress(bytes(block)) + c.flush(zlib.Z_FULL_FLUSH)
    end = zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    crc, zeros = 0, bytes(block)
    for _ in range(reps):
        crc = zlib.crc32(zeros, crc)
    comp = len(chunk) * reps + len(end)
    usize = size if declared is None else declared
    fn = name.encode()
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, comp, usize, len(fn), 0) + fn
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, crc, comp, usize, len(fn),
                          0, 0, 0, 0, 0o100644 << 16, 0) + fn
    with open(path, "wb") as f:
        f.write(local)
        for _ in range(reps):
            f.write(chunk)
        f.write(end)
        cd_at = f.tell()
        f.write(central)
        f.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), cd_at, 0))
    return path


def dicom_zip(path: Path, folder: Path, extra: dict[str, bytes] | None = None, link: str | None = None) -> Path:
    """Zip the files of ``folder`` into ``path``; ``extra`` adds raw members by name, ``link`` a symlink member."""
    import zipfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f"series/{f.name}")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
        if link is not None:
            info = zipfile.ZipInfo(link)
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, "/etc/passwd")
    return path
