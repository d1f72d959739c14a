"""Atomic file output: write to a temporary file beside the target, then rename.

An interrupted run leaves no file under the final name, so nothing half-written ever looks
finished. On top of single files:

* :func:`output_set` groups the files of one unit of work (a case's mask, JSON and preview): every
  :func:`atomic_output` inside it is renamed only when the whole set succeeded, so they appear
  together or not at all;
* a full disk or a read-only file system while writing is an :class:`InputError` naming the file;
* outputs get the usual mode of new files (``0666`` less the umask), not ``mkstemp``'s ``0600``;
* :func:`clean_stale_parts` removes temporary files that an earlier, killed run left behind;
* :func:`output_folder` removes a folder it created when the run leaves nothing in it.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator, Sequence

from sam_mix_monai.utils.boundary import disk_problem
from sam_mix_monai.utils.errors import InputError, PathLike

__all__ = ["atomic_output", "check_writable_dir", "clean_stale_parts", "ensure_free_space", "output_folder", "output_set"]

#: Temporary names written by :func:`atomic_output`: ``.<name>.<random>.part<suffix>``.
PART_RE = re.compile(r"^\..+\.part(\..*)?$")

_pending: contextvars.ContextVar[list[tuple[Path, Path]] | None] = contextvars.ContextVar("_pending", default=None)


def _file_mode() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return 0o666 & ~mask


def check_writable_dir(path: PathLike, create: bool = True) -> Path:
    """Make sure ``path`` is (or can become) a writable directory.

    Writability is probed by creating and removing a file, so that ``/proc``, a read-only mount or
    a full disk are found before any work is done (``os.access`` says yes to root everywhere).

    Args:
        path: the directory.
        create: create it (with parents) when missing.

    Returns:
        The directory as a :class:`~pathlib.Path`.

    Raises:
        InputError: when the directory cannot be created or written to.
    """
    p = Path(path)
    try:
        if create:
            p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(p, f"cannot create output folder ({e.strerror or e})") from None
    if not p.is_dir():
        raise InputError(p, "output folder does not exist or is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise InputError(p, f"output folder is not writable ({disk_problem(e) or e.strerror or e})") from None
    return p


def _commit(tmp: Path, target: Path) -> None:
    os.chmod(tmp, _file_mode())
    os.replace(tmp, target)


def _write_error(e: BaseException, target: Path) -> BaseException:
    disk = disk_problem(e)
    return InputError(target, f"cannot write: {disk}") if disk is not None else e


@contextlib.contextmanager
def atomic_output(target: PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    On any exception (including ``KeyboardInterrupt``) the temporary file is removed and ``target``
    is left untouched. Inside :func:`output_set` the rename waits for the whole set.

    Args:
        target: the final file path.
        suffix: suffix of the temporary file (defaults to the target's suffixes, so that libraries
            choosing a format by extension still work).

    Yields:
        The temporary path to write to.

    Raises:
        InputError: the folder is not writable, or the disk is full or read-only while writing.
    """
    target = Path(target)
    check_writable_dir(target.parent)
    sfx = suffix if suffix is not None else "".join(target.suffixes)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".part{sfx}", dir=target.parent)
    except OSError as e:
        raise _write_error(e, target) from e
    os.close(fd)
    tmp_path = Path(tmp)
    pending = _pending.get()
    try:
        yield tmp_path
        if pending is None:
            _commit(tmp_path, target)
        else:
            pending.append((tmp_path, target))
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        err = _write_error(e, target)
        if err is e:
            raise
        raise err from e


@contextlib.contextmanager
def output_set() -> Iterator[list[tuple[Path, Path]]]:
    """Group the :func:`atomic_output` files written inside: all are renamed at the end, or none.

    On an exception every temporary file of the set is removed (and any target already renamed
    in a failed commit is removed again), so a unit of work leaves all of its files or none.

    Yields:
        The ``(temporary, target)`` pairs registered so far.
    """
    if _pending.get() is not None:  # nested: the outer set commits
        yield _pending.get()  # type: ignore[misc]
        return
    pending: list[tuple[Path, Path]] = []
    token = _pending.set(pending)
    done: list[Path] = []
    try:
        yield pending
        _pending.reset(token)
        token = None
        for tmp, target in pending:
            _commit(tmp, target)
            done.append(target)
    except BaseException as e:
        for tmp, _ in pending:
            with contextlib.suppress(OSError):
                tmp.unlink()
        for target in done:
            with contextlib.suppress(OSError):
                target.unlink()
        culprit = next((t for tmp, t in pending if t not in done), None)
        err = _write_error(e, culprit) if culprit is not None else e
        if err is e:
            raise
        raise err from e
    finally:
        if token is not None:
            _pending.reset(token)


def ensure_free_space(folder: PathLike, nbytes: int, target: PathLike, margin: int = 1 << 20) -> None:
    """Refuse to write ``nbytes`` more into ``folder`` when the disk cannot hold them (plus ``margin``).

    For writers that cannot fail cleanly on a full disk: HDF5 reports ``ENOSPC`` from its
    destructors, dozens of times, and has crashed the process.

    Raises:
        InputError: naming ``target``, with the space needed and free.
    """
    free = shutil.disk_usage(folder).free
    if nbytes + margin > free:
        raise InputError(target, f"cannot write: no space left on device (about {(nbytes + margin) / 2**20:.1f} MB "
                                 f"more needed, {free / 2**20:.1f} MB free)")


def clean_stale_parts(folder: PathLike, before: float | None = None, stems: Sequence[str] | None = None) -> list[Path]:
    """Remove the temporary files of :func:`atomic_output` last modified before ``before``.

    Args:
        folder: the output folder.
        before: a ``time.time()`` stamp, normally the start of this run (default: now). Files of a
            run still writing are newer, so they are kept.
        stems: only the temporary files of targets whose names start with one of these (the files
            this run writes), so that another run's files in a shared folder are left alone;
            ``None``: all.

    Returns:
        The files removed.
    """
    cutoff = time.time() if before is None else before
    removed = []
    p = Path(folder)
    if not p.is_dir():
        return removed
    for f in p.iterdir():
        if PART_RE.match(f.name) and (stems is None or f.name[1:].startswith(tuple(stems))) and f.is_file():
            with contextlib.suppress(OSError):
                if f.stat().st_mtime < cutoff:
                    f.unlink()
                    removed.append(f)
    return removed


@contextlib.contextmanager
def output_folder(path: PathLike) -> Iterator[Path]:
    """Create (and check) an output folder; remove the folders it created if they are still empty at the end.

    Yields:
        The folder.

    Raises:
        InputError: as :func:`check_writable_dir`.
    """
    p = Path(path)
    created = []
    q = p.absolute()
    while not q.exists() and q != q.parent:
        created.append(q)
        q = q.parent
    folder = check_writable_dir(p)
    try:
        yield folder
    finally:
        for d in created:  # deepest first
            try:
                d.rmdir()  # only when empty
            except OSError:
                break
