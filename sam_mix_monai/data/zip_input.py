"""Safe unpacking of zipped DICOM input: size and member caps, no member outside the folder.

Every reader of a ``.zip`` (``infer`` / ``evaluate`` input, DICOM-SEG sources, 3D-IRCADb archives)
unpacks through :func:`extract_members`, which:

* refuses an archive whose members declare more than :attr:`ZipLimits.max_bytes` uncompressed bytes
  in total, or more than :attr:`ZipLimits.max_members` files, before anything is written;
* refuses members that would leave the folder (``..``, an absolute path, a drive letter) and
  symbolic-link members (Unix mode in the external attributes);
* streams each member to disk in 1 MiB chunks and stops at the cap even when a header lies about
  the size (peak memory stays a few MiB whatever the archive declares);
* names the zip in every error.

The limits default to :data:`DEFAULT_LIMITS` (2 GiB, 10,000 files: a 2,000-slice 512x512 CT series
is about 1 GiB); ``sam-mix --max-zip-size GB --max-zip-members N`` raises them
(:func:`set_zip_limits`).
"""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path, PurePosixPath
from typing import Sequence

from pydantic import BaseModel, Field

from sam_mix_monai.utils.errors import InputError, PathLike

__all__ = ["DEFAULT_LIMITS", "ZipLimits", "extract_all", "extract_members", "open_zip", "safe_members", "set_zip_limits",
           "zip_limits"]

_CHUNK = 1 << 20


class ZipLimits(BaseModel):
    """Caps on what one zip input may unpack to."""

    max_bytes: int = Field(2 << 30, gt=0, description="total uncompressed size of the members, bytes")
    max_members: int = Field(10_000, gt=0, description="number of file members")


DEFAULT_LIMITS = ZipLimits()
_limits = DEFAULT_LIMITS


def set_zip_limits(max_gb: float | None = None, max_members: int | None = None) -> ZipLimits:
    """Set the process-wide zip caps (``None``: keep the default); returns the new limits.

    Raises:
        InputError: a cap that is not a positive finite number.
    """
    global _limits
    values = {}
    if max_gb is not None:
        if not (max_gb > 0 and max_gb < float("inf")):
            raise InputError(None, f"--max-zip-size: expected a positive number of GB, got {max_gb}")
        values["max_bytes"] = max(1, int(max_gb * (1 << 30)))
    if max_members is not None:
        if max_members <= 0:
            raise InputError(None, f"--max-zip-members: expected a positive integer, got {max_members}")
        values["max_members"] = int(max_members)
    _limits = ZipLimits(**{**DEFAULT_LIMITS.model_dump(), **values})
    return _limits


def zip_limits() -> ZipLimits:
    """The current process-wide caps."""
    return _limits


def open_zip(path: PathLike) -> zipfile.ZipFile:
    """Open ``path`` as a zip archive; an unreadable one is an :class:`InputError` naming it."""
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise InputError(path, f"cannot read zip file ({type(e).__name__}: {e})") from None


def _gb(n: int) -> str:
    return f"{n / (1 << 30):.3g} GB"


def safe_members(zf: zipfile.ZipFile, path: PathLike, limits: ZipLimits | None = None) -> list[zipfile.ZipInfo]:
    """The file members of ``zf``, after checking names, links, count and declared total size.

    Raises:
        InputError: naming ``path``: a member outside the folder, a link, or a cap exceeded.
    """
    lim = limits or _limits
    files = []
    for info in zf.infolist():
        name = info.filename.replace("\\", "/")
        parts = PurePosixPath(name).parts
        if name.startswith("/") or ".." in parts or (parts and parts[0].endswith(":")):
            raise InputError(path, f"zip member {info.filename!r} points outside the archive's folder (absolute "
                                   "path or '..'): refused")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise InputError(path, f"zip member {info.filename!r} is a symbolic link: refused")
        if not info.is_dir():
            files.append(info)
    if len(files) > lim.max_members:
        raise InputError(path, f"zip holds {len(files)} files, more than the limit of {lim.max_members} "
                               "(raise it with --max-zip-members)")
    total = sum(i.file_size for i in files)
    if total > lim.max_bytes:
        raise InputError(path, f"zip unpacks to {_gb(total)}, more than the limit of {_gb(lim.max_bytes)} "
                               "(a zip bomb? raise the limit with --max-zip-size GB)")
    return files


def extract_members(zf: zipfile.ZipFile, members: Sequence[zipfile.ZipInfo], dest: PathLike, path: PathLike,
                    names: Sequence[str] | None = None, limits: ZipLimits | None = None) -> list[Path]:
    """Stream ``members`` into ``dest`` under our own flat names, never past the size cap.

    Args:
        zf: the open archive.
        members: members from :func:`safe_members`.
        dest: an existing folder.
        path: the zip, named in errors.
        names: file names to write (default ``<k>_<basename>``); member paths are never used as paths.
        limits: the caps (default: the process-wide ones).

    Raises:
        InputError: naming ``path``: the cap reached while unpacking, or a corrupt member.
    """
    lim = limits or _limits
    written, out = 0, []
    for k, info in enumerate(members):
        target = Path(dest) / (names[k] if names else f"{k:06d}_{PurePosixPath(info.filename).name}")
        try:
            with zf.open(info) as src, open(target, "wb") as dst:
                for chunk in iter(lambda: src.read(_CHUNK), b""):
                    written += len(chunk)
                    if written > lim.max_bytes:
                        raise InputError(path, f"zip unpacks to more than the limit of {_gb(lim.max_bytes)} (its "
                                               "headers understate the size: a zip bomb?); raise it with --max-zip-size GB")
                    dst.write(chunk)
        except InputError:
            raise
        except (zipfile.BadZipFile, EOFError, RuntimeError, ValueError, NotImplementedError) as e:
            raise InputError(path, f"cannot unpack zip member {info.filename!r} ({type(e).__name__}: {e})") from None
        except OSError as e:
            raise InputError(path, f"cannot unpack zip member {info.filename!r} ({type(e).__name__}: {e}; "
                                   "is the temporary folder full?)") from None
        out.append(target)
    return out


def extract_all(path: PathLike, dest: PathLike) -> list[Path]:
    """Check and unpack every file member of the zip ``path`` into ``dest`` (flat, our own names)."""
    with open_zip(path) as zf:
        return extract_members(zf, safe_members(zf, path), dest, path)

