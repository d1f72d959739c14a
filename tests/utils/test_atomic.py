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
