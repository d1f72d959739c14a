"""Zipped DICOM input under attack: caps on size and member count, escaping members, a real zip bomb.

Each case: exit 2, one line naming the zip and the problem, nothing written, the zip unchanged.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sam_mix_monai.cli.main import main
from tests.faults import Snapshot, assert_clean_failure, dicom_zip, write_dicom_series, zip_bomb
from tests.inference.tiny_model import tiny_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def _infer(*args: str) -> int:
    return main(["-q", "infer", *args, "--checkpoint", str(tiny_checkpoint()), "--no-progress"])


@pytest.fixture()
def series_zip(tmp_path) -> Path:
    return dicom_zip(tmp_path / "in" / "ct.zip", write_dicom_series(tmp_path / "series", n=12))


@pytest.mark.parametrize("member, match", [("../evil.dcm", "outside the archive's folder"),
                                           ("/abs/evil.dcm", "outside the archive's folder")])
def test_zip_member_escaping_the_folder_is_refused(tmp_path, capfd, member, match):
    src = dicom_zip(tmp_path / "in" / "ct.zip", write_dicom_series(tmp_path / "series", n=12), extra={member: b"x"})
    inputs = Snapshot(tmp_path / "in")
    rc = _infer(str(src), "-o", str(tmp_path / "out"))
    assert_clean_failure(rc, capfd, [src], inputs, [tmp_path / "out"], match)


def test_zip_symlink_member_is_refused_naming_the_zip(tmp_path, capfd):
    src = dicom_zip(tmp_path / "in" / "ct.zip", write_dicom_series(tmp_path / "series", n=12), link="series/link.dcm")
    inputs = Snapshot(tmp_path / "in")
    rc = _infer(str(src), "-o", str(tmp_path / "out"))
    assert_clean_failure(rc, capfd, [src], inputs, [tmp_path / "out"], "symbolic link")


def test_zip_member_count_cap_and_flag(tmp_path, capfd, series_zip):
    inputs = Snapshot(tmp_path / "in")
    rc = main(["-q", "infer", str(series_zip), "-o", str(tmp_path / "out"), "--checkpoint", str(tiny_checkpoint()),
               "--no-progress", "--max-zip-members", "5"])
    line = assert_clean_failure(rc, capfd, [series_zip], inputs, [tmp_path / "out"], "more than the limit of 5")
    assert "--max-zip-members" in line


def test_zip_size_cap_and_flag_to_raise_it(tmp_path, capfd, series_zip):
    inputs = Snapshot(tmp_path / "in")
    rc = main(["-q", "infer", str(series_zip), "-o", str(tmp_path / "out"), "--checkpoint", str(tiny_checkpoint()),
               "--no-progress", "--max-zip-size", "0.000001"])
    line = assert_clean_failure(rc, capfd, [series_zip], inputs, [tmp_path / "out"], "more than the limit")
    assert "--max-zip-size" in line
    rc = main(["-q", "infer", str(series_zip), "-o", str(tmp_path / "out"), "--checkpoint", str(tiny_checkpoint()),
               "--no-progress", "--max-zip-size", "1"])
    capfd.readouterr()
    assert rc == 0 and (tmp_path / "out" / "ct_liver.nii.gz").is_file()


def test_bad_max_zip_size_flag(tmp_path, capfd, series_zip):
    inputs = Snapshot(tmp_path / "in")
    rc = main(["-q", "infer", str(series_zip), "-o", str(tmp_path / "out"), "--checkpoint", str(tiny_checkpoint()),
               "--no-progress", "--max-zip-size", "nan"])
    assert_clean_failure(rc, capfd, [], inputs, [tmp_path / "out"], "--max-zip-size")


def _peak_rss_run(args: list[str], tmp: Path) -> tuple[int, str, int]:
    """Run ``sam-mix`` in a child process; return its exit code, stderr and peak RSS in bytes."""
    rss_file = tmp / "rss.txt"
    # VmHWM of the child's own address space. getrusage(RUSAGE_SELF).ru_maxrss would not do: Linux carries
    # the parent's peak over fork + exec, so a pytest session that once held 3.4 GB reported 3.4 GB here.
    code = ("import re, sys\nfrom sam_mix_monai.cli.main import main\nrc = main(sys.argv[1:])\n"
            "hwm = re.search(r'VmHWM:\\s*(\\d+)', open('/proc/self/status').read()).group(1)\n"
            f"open({str(rss_file)!r}, 'w').write(hwm)\n"
            "sys.exit(rc)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp)}
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=600)
    return res.returncode, res.stderr, int(rss_file.read_text()) * 1024


@pytest.mark.parametrize("gib, extra", [(2.5, []), (1.25, ["--max-zip-size", "1"])])
def test_zip_bomb_refused_from_its_headers_with_small_memory(tmp_path, gib, extra):
    (tmp_path / "in").mkdir()
    bomb = zip_bomb(tmp_path / "in" / "bomb.zip", gib)
    assert bomb.stat().st_size < 5 << 20  # small on disk
    inputs = Snapshot(tmp_path / "in")
    rc, err, rss = _peak_rss_run([*extra, "-q", "infer", str(bomb), "-o", str(tmp_path / "out"), "--checkpoint",
                                  str(tiny_checkpoint()), "--no-progress"], tmp_path)
    lines = [x for x in err.splitlines() if x.strip()]
    assert rc == 2 and len(lines) == 1 and str(bomb) in lines[0] and "more than the limit" in lines[0], err
    assert rss < 2 << 30, rss
    assert not (tmp_path / "out").exists() and inputs.unchanged()
    assert not list(tmp_path.glob("sam_mix_dicom_zip_*"))  # nothing unpacked


def test_zip_bomb_under_the_cap_streams_to_disk_with_small_memory(tmp_path):
    """1.25 GiB of zeros admitted by the 2 GB default: unpacked in 1 MiB chunks, then refused as not DICOM."""
    (tmp_path / "in").mkdir()
    bomb = zip_bomb(tmp_path / "in" / "bomb.zip", 1.25)
    inputs = Snapshot(tmp_path / "in")
    rc, err, rss = _peak_rss_run(["-q", "infer", str(bomb), "-o", str(tmp_path / "out"), "--checkpoint",
                                  str(tiny_checkpoint()), "--no-progress"], tmp_path)
    lines = [x for x in err.splitlines() if x.strip()]
    assert rc == 2 and len(lines) == 1 and str(bomb) in lines[0] and "no DICOM series" in lines[0], err
    print(f"peak RSS {rss / 2**20:.0f} MiB")
    assert rss < 2 << 30, rss
    assert not (tmp_path / "out").exists() and inputs.unchanged()
    assert not list(tmp_path.glob("sam_mix_dicom_zip_*"))  # the unpacked 1.25 GiB is gone again


def test_lying_zip_header_is_refused(tmp_path, capfd):
    """Headers that understate the size: unpacking stops at the declared size and the CRC check names the zip."""
    (tmp_path / "in").mkdir()
    bomb = zip_bomb(tmp_path / "in" / "bomb.zip", 0.0625, declared=1024)
    inputs = Snapshot(tmp_path / "in")
    rc = _infer(str(bomb), "-o", str(tmp_path / "out"))
    assert_clean_failure(rc, capfd, [bomb], inputs, [tmp_path / "out"], "cannot unpack zip member")
