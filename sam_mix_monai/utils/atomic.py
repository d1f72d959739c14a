"""Atomic file output: write to a temporary file beside the target, then rename.

An interrupted run leaves no file under the final name, so nothing half-written
ever looks finished.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from sam_mix_monai.utils.errors import InputError, PathLike


def check_writable_dir(path: PathLike, create: bool = True) -> Path:
    """Make sure ``path`` is (or can become) a writable directory.

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
    if not os.access(p, os.W_OK | os.X_OK):
        raise InputError(p, "output folder is not writable")
    return p


@contextlib.contextmanager
def atomic_output(target: PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    On any exception (including ``KeyboardInterrupt``) the temporary file is removed
    and ``target`` is left untouched.

    Args:
        target: the final file path.
        suffix: suffix of the temporary file (defaults to the target's suffixes, so
            that libraries choosing a format by extension still work).

    Yields:
        The temporary path to write to.
    """
    target = Path(target)
    check_writable_dir(target.parent)
    sfx = suffix if suffix is not None else "".join(target.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".part{sfx}", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise
