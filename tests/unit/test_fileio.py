"""The one atomic writer (stylize.contract.fileio): outputs get the umask's mode like any open(); the repository's explicit
modes hold under any umask; no temporary file is left behind."""

from __future__ import annotations

import os
import stat
from contextlib import contextmanager
from pathlib import Path

import pytest
from stylize.contract.fileio import PUBLIC_DIR_MODE, PUBLIC_FILE_MODE, chmod_tree, make_dirs, write_atomic

pytestmark = pytest.mark.unit


@contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_outputs_get_the_mode_open_would_give(tmp_path, mask):
    with umask(mask):
        write_atomic(tmp_path / "new" / "out.png", b"png")
        with open(tmp_path / "reference", "wb"):
            pass
        (tmp_path / "reference-dir").mkdir()
    assert mode(tmp_path / "new" / "out.png") == mode(tmp_path / "reference") == 0o666 & ~mask
    assert mode(tmp_path / "new") == mode(tmp_path / "reference-dir") == 0o777 & ~mask
    assert (tmp_path / "new" / "out.png").read_bytes() == b"png"
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["out.png"]  # no temporary left


def test_explicit_modes_do_not_depend_on_the_umask(tmp_path):
    with umask(0o077):
        assert write_atomic(
            tmp_path / "a" / "b" / "config.pbtxt", b"x", mode=PUBLIC_FILE_MODE, dir_mode=PUBLIC_DIR_MODE
        )
    assert mode(tmp_path / "a" / "b" / "config.pbtxt") == 0o644
    assert mode(tmp_path / "a") == mode(tmp_path / "a" / "b") == 0o755


def test_an_unchanged_file_is_not_rewritten_but_its_mode_is_repaired(tmp_path):
    dst = tmp_path / "config.pbtxt"
    dst.write_bytes(b"same")
    dst.chmod(0o600)  # what the mkstemp-based writer left
    before = dst.stat().st_mtime_ns
    assert not write_atomic(dst, b"same", mode=0o644, skip_unchanged=True)
    assert dst.stat().st_mtime_ns == before and mode(dst) == 0o644
    assert write_atomic(dst, b"other", mode=0o644, skip_unchanged=True)
    assert dst.read_bytes() == b"other"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    dst = tmp_path / "out.png"
    dst.write_bytes(b"old")

    with pytest.raises(TypeError):
        write_atomic(dst, object())  # type: ignore[arg-type]
    assert dst.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_make_dirs_sets_the_mode_of_what_it_creates_only(tmp_path):
    existing = tmp_path / "mine"
    existing.mkdir(mode=0o700)
    with umask(0o077):
        make_dirs(existing / "x" / "y", mode=0o755)
    assert mode(existing) == 0o700  # not ours to change
    assert mode(existing / "x") == mode(existing / "x" / "y") == 0o755
    make_dirs(existing / "x" / "y", mode=0o755)  # idempotent
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(FileExistsError):
        make_dirs(tmp_path / "file", mode=0o755)


def test_chmod_tree_opens_a_private_staging_folder_without_following_links(tmp_path):
    import tempfile

    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"")
    outside.chmod(0o600)
    staging = Path(tempfile.mkdtemp(dir=tmp_path))  # 0700, as the build's staging folders are made
    (staging / "sub").mkdir(mode=0o700)
    fd, name = tempfile.mkstemp(dir=staging / "sub")  # 0600
    os.close(fd)
    (staging / "link").symlink_to(outside)
    chmod_tree(staging)
    assert mode(staging) == mode(staging / "sub") == 0o755
    assert mode(Path(name)) == 0o644
    assert mode(outside) == 0o600  # a link's target is left alone
