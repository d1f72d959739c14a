import pytest

from sam_mix_monai.utils.atomic import atomic_output, check_writable_dir
from sam_mix_monai.utils.errors import InputError


def test_success_renames_and_failure_leaves_nothing(tmp_path):
    target = tmp_path / "out.h5"
    with atomic_output(target) as tmp:
        tmp.write_text("ok")
        assert not target.exists()
    assert target.read_text() == "ok"
    with pytest.raises(RuntimeError):
        with atomic_output(tmp_path / "b.h5") as tmp:
            tmp.write_text("half")
            raise RuntimeError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5"]


def test_unwritable_parent(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="cannot create"):
        check_writable_dir(tmp_path / "file" / "sub")


def test_error_survives_pickling():
    import pickle

    e = pickle.loads(pickle.dumps(InputError("a.nii", "broken")))
    assert str(e) == "a.nii: broken" and e.path == "a.nii"


def test_output_set_all_or_nothing(tmp_path):
    from sam_mix_monai.utils.atomic import output_set

    with pytest.raises(RuntimeError):
        with output_set():
            with atomic_output(tmp_path / "a.nii.gz") as tmp:
                tmp.write_text("mask")
            assert not (tmp_path / "a.nii.gz").exists()  # waits for the set
            with atomic_output(tmp_path / "a.json") as tmp:
                raise RuntimeError("preview failed")
    assert list(tmp_path.iterdir()) == []
    with output_set():
        for name in ("a.nii.gz", "a.json"):
            with atomic_output(tmp_path / name) as tmp:
                tmp.write_text(name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.nii.gz"]


def test_modes_stale_parts_and_created_folders(tmp_path):
    import os
    import time

    from sam_mix_monai.utils.atomic import clean_stale_parts, output_folder

    old = os.umask(0o027)
    try:
        with atomic_output(tmp_path / "x.json") as tmp:
            tmp.write_text("{}")
    finally:
        os.umask(old)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o640
    stale, fresh = tmp_path / ".x.json.ab12.part.json", tmp_path / ".x.json.cd34.part.json"
    stale.write_text("")
    fresh.write_text("")
    os.utime(stale, (time.time() - 60, time.time() - 60))
    assert clean_stale_parts(tmp_path, before=time.time() - 30, stems=["x.json."]) == [stale]
    assert fresh.exists()
    with output_folder(tmp_path / "new" / "deeper"):
        pass
    assert not (tmp_path / "new").exists()
    with output_folder(tmp_path / "kept") as d:
        (d / "f").write_text("x")
    assert (tmp_path / "kept" / "f").exists()
