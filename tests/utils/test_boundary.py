"""Error boundary: exceptions become one InputError line; storage errors are named."""

from __future__ import annotations

import errno
import os

import pytest

from sam_mix_monai.utils.boundary import UnexpectedError, disk_problem, stage
from sam_mix_monai.utils.errors import InputError


def test_stage_wraps_unexpected_exceptions_with_file_stage_and_type():
    with pytest.raises(UnexpectedError) as err:
        with stage("inference", "ct.nii.gz"):
            raise ValueError("row 7\nsecond line")
    assert str(err.value) == "ct.nii.gz: inference failed: ValueError: row 7 second line"
    assert isinstance(err.value.__cause__, ValueError)


def test_stage_passes_input_errors_and_interrupts():
    original = InputError("a.nii", "broken")
    with pytest.raises(InputError) as err:
        with stage("read", "b.nii"):
            raise original
    assert err.value is original
    with pytest.raises(KeyboardInterrupt):
        with stage("read", "b.nii"):
            raise KeyboardInterrupt


@pytest.mark.parametrize("exc, said", [
    (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "no space left on device"),
    (OSError(errno.EROFS, os.strerror(errno.EROFS)), "read-only file system"),
    (OSError("Can't write data (file write failed: errno = 28, error message = 'No space left on device')"),
     "no space left on device"),
    (OSError(errno.ENOENT, "gone"), None),
    (ValueError("x"), None),
])
def test_disk_problems(exc, said):
    assert disk_problem(exc) == said


def test_storage_error_names_the_file_it_carries():
    with pytest.raises(InputError) as err:
        with stage("write", "case"):
            raise OSError(errno.ENOSPC, "No space left on device", "/out/mask.nii.gz")
    assert str(err.value) == "/out/mask.nii.gz: write: no space left on device"


def test_one_line_even_for_multi_line_problems():
    assert str(InputError("t.nii", "cannot read\n  truncated")) == "t.nii: cannot read truncated"
