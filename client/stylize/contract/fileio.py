"""Files written the way their readers expect: atomically (a hidden temporary name in the same folder, then a
rename), with the permissions a plain ``open()`` gives or with explicit ones.

``tempfile.mkstemp`` / ``mkdtemp`` make 0600 files and 0700 folders: right for secrets, wrong for outputs. A user's
images get the mode of any file they write (0666 less the umask). The model repository gets 0644 files in 0755
folders whatever the builder's umask: the server that reads it runs as another user (uid 1000 in the image, the
files owned by root), so a private file there is a model that cannot load.

The SDK, the CLI and the repository build share this one writer; it imports nothing of ours.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

PUBLIC_FILE_MODE = 0o644
PUBLIC_DIR_MODE = 0o755


def make_dirs(path: str | os.PathLike, *, mode: int | None = None) -> None:
    """``mkdir -p``: the folders it creates get exactly ``mode`` (None: what ``mkdir`` gives under the umask).
    Existing folders are left as they are."""
    missing: list[Path] = []
    p = Path(path)
    while not p.is_dir():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            if not d.is_dir():
                raise
            continue  # made meanwhile by another writer
        if mode is not None:
            os.chmod(d, mode)  # mkdir's mode argument is masked by the umask


def write_atomic(
    dst: str | os.PathLike,
    data: bytes,
    *,
    mode: int | None = None,
    dir_mode: int | None = None,
    skip_unchanged: bool = False,
) -> bool:
    """Write ``data`` to ``dst``: readers see the old file or the new one, never a part of it.

    ``mode``: the file's permissions, exactly (None: 0666 less the umask, as ``open()`` gives). Missing parent
    folders are made with ``dir_mode`` (None: the umask's). ``skip_unchanged``: a file that already holds ``data``
    is not rewritten (its mode is still corrected). Returns True when the content was written.
    """
    dst = Path(dst)
    if skip_unchanged and dst.is_file() and dst.read_bytes() == data:
        if mode is not None and stat.S_IMODE(dst.stat().st_mode) != mode:
            os.chmod(dst, mode)
        return False
    make_dirs(dst.parent, mode=dir_mode)
    fd, tmp = _create_temporary(dst, 0o666 if mode is None else mode)
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)  # the creation mode was masked by the umask
            f.write(data)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return True


def _create_temporary(dst: Path, mode: int) -> tuple[int, Path]:
    """A new hidden file next to ``dst``, created with ``mode`` under the umask (as ``open()`` does; mkstemp
    would force 0600)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = dst.with_name(f".{dst.name}.{secrets.token_hex(4)}.partial")
        try:
            return os.open(tmp, flags, mode), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name next to {dst}")


def chmod_tree(root: str | os.PathLike, *, file_mode: int = PUBLIC_FILE_MODE, dir_mode: int = PUBLIC_DIR_MODE) -> None:
    """Give ``root`` and every folder below it ``dir_mode``, every file ``file_mode`` (symlinks are not followed).
    For folders assembled in a private temporary folder before they are renamed into place."""
    root = Path(root)
    if root.is_symlink() or not root.is_dir():
        return
    _chmod(root, dir_mode)
    for base, dirs, files in os.walk(root):
        for name in dirs:
            p = Path(base, name)
            if not p.is_symlink():
                _chmod(p, dir_mode)
        for name in files:
            p = Path(base, name)
            if not p.is_symlink():
                _chmod(p, file_mode)


def _chmod(path: Path, mode: int) -> None:
    if stat.S_IMODE(path.lstat().st_mode) != mode:
        os.chmod(path, mode)


__all__ = ["PUBLIC_FILE_MODE", "PUBLIC_DIR_MODE", "make_dirs", "write_atomic", "chmod_tree"]
