"""User-facing errors.

Every problem with what a user supplied (a file, a folder, a config) is raised as
:class:`InputError`. The CLI prints it as one line and exits with code 2; the
traceback is shown only with ``--debug``.
"""

from __future__ import annotations

import os
from typing import Union

PathLike = Union[str, "os.PathLike[str]"]


class InputError(Exception):
    """A problem with user input, reported as ``<path>: <problem>``.

    Args:
        path: the file, folder or config key at fault (``None`` when there is none).
        problem: what is wrong, in one line.
    """

    exit_code = 2

    def __init__(self, path: PathLike | None, problem: str) -> None:
        self.path = None if path is None else os.fspath(path)
        self.problem = " ".join(str(problem).split())  # always one line, whatever a library said
        super().__init__(f"{self.path}: {self.problem}" if self.path else self.problem)

    def __reduce__(self) -> tuple:
        # Keep (path, problem) when the error crosses a process boundary.
        return (type(self), (self.path, self.problem))
