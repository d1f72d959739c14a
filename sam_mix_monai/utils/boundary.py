"""Error boundaries: any exception of a stage of work becomes one :class:`InputError` line.

The project's promise is that every failure is one line naming the file, with exit code 2 and no
traceback (``--debug`` shows it). Expected problems raise :class:`InputError` where they are found;
:func:`stage` catches the rest at a case or command boundary and says where it happened:

* ``OSError`` of a full disk (``ENOSPC``, ``EDQUOT``, ``EFBIG``), a read-only file system
  (``EROFS``) or a permission problem becomes ``<file>: <stage>: no space left on device`` and the like;
* any other ``Exception`` becomes ``<file>: <stage> failed: <Type>: <message>``.

``KeyboardInterrupt`` and ``SystemExit`` pass through.

Example:
    >>> with stage("read", "ct.nii.gz"):  # doctest: +SKIP
    ...     vol = read_volume("ct.nii.gz")
"""

from __future__ import annotations

import contextlib
import errno
import os
from typing import Iterator

from sam_mix_monai.utils.errors import InputError, PathLike

__all__ = ["UnexpectedError", "describe", "disk_problem", "stage", "to_input_error"]

#: errno -> what the user is told.
_DISK = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for the file system",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
_DISK_TEXT = {"no space left on device": errno.ENOSPC, "errno = 28": errno.ENOSPC,
              "read-only file system": errno.EROFS, "errno = 30": errno.EROFS}


class UnexpectedError(InputError):
    """An exception that no check foresaw, reported as one line (``--debug`` shows its traceback)."""


def describe(exc: BaseException, limit: int = 300) -> str:
    """``<Type>: <first line of the message>`` of an exception, at most ``limit`` characters."""
    msg = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def disk_problem(exc: BaseException) -> str | None:
    """What a storage error means for the user (``None`` when ``exc`` is not one).

    Recognises the ``errno`` of an ``OSError`` and, for libraries that re-raise with text only
    (HDF5: ``errno = 28, error message = 'No space left on device'``), the message.
    """
    if not isinstance(exc, OSError):
        return None
    if exc.errno in _DISK:
        return _DISK[exc.errno]
    text = str(exc).lower()
    for needle, code in _DISK_TEXT.items():
        if needle in text:
            return _DISK[code]
    return None


def to_input_error(exc: BaseException, path: PathLike | None, what: str) -> InputError:
    """The one-line :class:`InputError` of an exception raised while doing ``what`` on ``path``."""
    if isinstance(exc, InputError):
        return exc
    disk = disk_problem(exc)
    if disk is not None:
        where = getattr(exc, "filename", None) or path
        return InputError(where, f"{what}: {disk}")
    return UnexpectedError(path, f"{what} failed: {describe(exc)}")


@contextlib.contextmanager
def stage(what: str, path: PathLike | None = None) -> Iterator[None]:
    """Turn any ``Exception`` raised inside into an :class:`InputError` naming ``path`` and ``what``.

    An :class:`InputError` passes unchanged. The original exception is chained (``__cause__``), so
    ``--debug`` still shows where it came from.
    """
    try:
        yield
    except InputError:
        raise
    except Exception as e:  # the boundary: everything else becomes one line
        raise to_input_error(e, None if path is None else os.fspath(path), what) from e
