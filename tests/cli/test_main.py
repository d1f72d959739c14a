"""``sam-mix`` usage errors: one line naming the problem, exit 2, no usage dump, no traceback; ``--help`` unchanged."""

from __future__ import annotations

import pytest

from sam_mix_monai.cli.main import main


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(argv)
    out = capsys.readouterr()
    return int(e.value.code), out.out, out.err


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["infer", "-i", "ct.nii.gz", "-o", "out", "--foo"], "sam-mix infer: error: unrecognized arguments: --foo"),
        (["--bogus"], "sam-mix: error: unrecognized arguments: --bogus"),
        (["infer", "-o"], "sam-mix infer: error: argument -o/--output: expected one argument"),
        (["evaluate", "--pred"], "sam-mix evaluate: error: argument --pred: expected one argument"),
        (["infer", "-i", "a", "-o", "b", "--window", "40"], "sam-mix infer: error: argument --window: expected 2 arguments"),
        (["nosuch"], "sam-mix: error: argument COMMAND: invalid choice: 'nosuch'"),
        (["infer", "-i", "a"], "sam-mix infer: error: the following arguments are required: -o/--output"),
    ],
)
def test_usage_error_is_one_line(argv: list[str], line: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(argv, capsys)
    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith(line), err
    assert "usage:" not in err and "Traceback" not in err


def test_help_keeps_the_full_usage(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["infer", "--help"], capsys)
    assert code == 0
    assert out.startswith("usage: sam-mix infer") and "--box" in out and len(out.splitlines()) > 10
