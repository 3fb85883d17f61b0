"""tagclip_cls.runtime.atomic_io: files written atomically get the permissions of a plain
``open(path, "w")`` under the current umask (not tempfile's 0600), and no temporary file is left."""
import os
import stat

import pytest

from tagclip_cls.runtime.atomic_io import atomic_write, write_json_atomic, write_text_atomic


@pytest.fixture()
def umask():
    """Set the process umask for one test, restoring the previous one afterwards."""
    previous = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)],
                         ids=["umask022", "umask077", "umask002"])
def test_written_files_get_the_umask_mode_of_a_plain_open(tmp_path, umask, mask, expected):
    umask(mask)
    write_text_atomic(tmp_path / "tags.json", "{}\n")
    write_json_atomic(tmp_path / "sub" / "results.json", {"mIoU": 1.0})
    atomic_write(tmp_path / "mask.png", lambda f: f.write(b"\x89PNG"), mode="wb")
    with open(tmp_path / "plain.txt", "w"):
        pass
    modes = {p.name: _mode(p) for p in (*tmp_path.iterdir(), tmp_path / "sub" / "results.json")
             if p.is_file()}
    assert modes == {"tags.json": expected, "results.json": expected, "mask.png": expected,
                     "plain.txt": expected}


def test_replacing_a_file_applies_the_current_umask(tmp_path, umask):
    path = tmp_path / "report.html"
    umask(0o077)
    write_text_atomic(path, "old")
    umask(0o022)  # read per write, not cached: the new file follows the new umask
    write_text_atomic(path, "new")
    assert path.read_text() == "new" and _mode(path) == 0o644
    assert os.listdir(tmp_path) == ["report.html"]


def test_a_failed_write_leaves_no_temporary_file(tmp_path):
    (tmp_path / "tags.json").write_text("before")

    def fail(f):
        f.write("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        atomic_write(tmp_path / "tags.json", fail)
    assert os.listdir(tmp_path) == ["tags.json"]
    assert (tmp_path / "tags.json").read_text() == "before"


def test_nothing_is_written_through_a_link_leading_outside_the_root(tmp_path):
    """A link in place of an output, or a linked sub-folder, that leads outside the output folder
    is refused before anything is written; links that stay inside are followed as before."""
    from tagclip_cls.runtime.errors import UserError

    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    (outside / "x.json").write_text("precious")
    (out / "x.json").symlink_to(outside / "x.json")
    (out / "sub").symlink_to(outside, target_is_directory=True)
    for path, root in ((out / "x.json", None), (out / "x.json", out), (out / "sub" / "y.json", out)):
        with pytest.raises(UserError, match=rf"^{path}: would be written outside "):
            write_text_atomic(path, "new", root)
    assert sorted(os.listdir(outside)) == ["x.json"] and (outside / "x.json").read_text() == "precious"
    (out / "inner").mkdir()
    (out / "alias").symlink_to(out / "inner", target_is_directory=True)
    write_json_atomic(out / "alias" / "r.json", {"mIoU": 1.0}, out)
    assert (out / "inner" / "r.json").is_file()
