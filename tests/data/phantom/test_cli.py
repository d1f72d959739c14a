"""The ``sam-mix phantom`` sub-command."""

from __future__ import annotations

from sam_mix_monai.cli.main import main


def test_cli_writes_cases(tmp_path, capsys):
    out = tmp_path / "ts"
    rc = main(["-q", "phantom", "--out", str(out), "--cases", "2", "--layout", "totalseg", "--domain", "b",
               "--seed", "3", "--matrix", "48", "--slices", "20", "--workers", "1", "--start-id", "2"])
    assert rc == 0
    assert (out / "s0002" / "ct.nii.gz").is_file() and (out / "s0003" / "segmentations" / "liver.nii.gz").is_file()
    assert "wrote 2 totalseg case(s)" in capsys.readouterr().out


def test_cli_unwritable_folder_exits_2_with_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc = main(["-q", "phantom", "--out", str(blocker / "sub"), "--cases", "1", "--matrix", "48", "--slices", "20"])
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("sam-mix phantom: error:")
    assert str(blocker / "sub") in err


def test_cli_bad_values_exit_2(tmp_path, capsys):
    for extra in (["--layout", "dicom"], ["--cases", "0"], ["--domain", "c"]):
        args = ["-q", "phantom", "--out", str(tmp_path / "x"), "--cases", "1", "--matrix", "48", "--slices", "20"]
        rc = main(args + extra)
        err = capsys.readouterr().err
        assert rc == 2 and len(err.strip().splitlines()) == 1, extra
