"""Reading and writing the files of a results folder without trusting what is already in it.

A results folder can come from someone else (it is committed to git, so a pull request can carry anything,
and a disk can be shared), so nothing here follows a link or waits on a special file planted in it:

- :func:`write` puts the bytes in a unique temporary file in the target's folder, created exclusively (so
  never through a link, and never the file of another writer), flushes them to disk and renames the file
  over the target in one step: readers and concurrent writers see the old file or the new one, never half;
- :func:`make_folder` creates a folder below a root, refusing any part of the way that is a link or not a
  folder;
- :func:`read` opens without following a link and without blocking, and refuses anything but a regular
  file, and a file larger than its limit before reading it.

Every refusal is an :class:`UnsafePathError` that names the path and what it is.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path


class UnsafePathError(ValueError):
    """A path in a results folder is a link or a special file, where rbdlib expects a plain file or folder."""


def _kind(mode: int) -> str:
    kinds = [(stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
             (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")]
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def _lstat(path: Path):
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def make_folder(folder: Path, root: Path | None = None) -> Path:
    """Create ``folder`` and the folders between ``root`` (default: ``folder`` itself) and it.

    ``root`` and everything below it must be real folders: a link or a file on the way is refused, so that
    nothing is written outside ``root`` through a planted link. Above ``root`` the path is the user's.
    """
    folder = Path(folder)
    root = folder if root is None else Path(root)
    if root != folder and root not in folder.parents:
        raise ValueError(f"{folder} is not inside {root}")
    inside = folder.relative_to(root).parts
    root.parent.mkdir(parents=True, exist_ok=True)
    for part in [root.joinpath(*inside[:i]) for i in range(len(inside) + 1)]:
        st = _lstat(part)
        if st is None:
            try:
                os.mkdir(part)
            except FileExistsError:  # made meanwhile by another writer: check what it is
                st = os.lstat(part)
        if st is not None and not stat.S_ISDIR(st.st_mode):
            raise UnsafePathError(f"{part} is {_kind(st.st_mode)}, not a folder: refusing to write there "
                                  "(remove it, or choose another output folder)")
    return folder


def check_replaceable(path: Path) -> Path:
    """``path`` itself, if it is a regular file or absent; else an :class:`UnsafePathError`."""
    path = Path(path)
    st = _lstat(path)
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise UnsafePathError(f"{path} is {_kind(st.st_mode)}: refusing to replace it (remove it first)")
    return path


def write(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically (see the module's docstring); ``path`` must be a regular
    file or absent, and its folder must exist."""
    path = check_replaceable(path)
    data = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"no space left on the device to write {path} ({len(data):,} bytes); free "
                                        "some space and run the command again: what was there is unchanged") from None
        raise


def read(path: Path, limit: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them (a larger file is refused unread).

    Never follows a link and never blocks (a named pipe is refused, not waited on)."""
    path = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UnsafePathError(f"{path} is a symbolic link: refusing to read through it") from None
        raise
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePathError(f"{path} is {_kind(st.st_mode)}, not a regular file: refusing to read it")
        if st.st_size > limit:
            raise ValueError(f"{path} holds {st.st_size:,} bytes, more than the {limit:,} such a file can need; "
                             "it is not one rbdlib wrote")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path} grew past {limit:,} bytes while being read")
    return data


def exists(path: Path) -> bool:
    """Whether anything is at ``path`` (a dangling link too)."""
    return _lstat(Path(path)) is not None
