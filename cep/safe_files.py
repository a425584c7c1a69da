"""Files inside a results folder, never through a symbolic link, and our temporaries recognisable as ours.

A folder the user names (an experiment folder, `--out`) may itself be a link (results kept on another
disk); nothing below it is followed: a copied, unpacked or shared folder holding a link would otherwise
make us read, overwrite or delete files outside it. Checks use lstat on each component; the last
component is opened with O_NOFOLLOW. A full disk is one line (DiskFull), not a traceback.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cep.errors import UsageProblem
from cep.reading import read_bytes_limited

TEMP_PREFIX = ".cep-tmp-"  # .cep-tmp-<pid>@<host>~<file name>: an atomic write in progress (or a killed one)
STALE_TEMP_S = 3600.0  # a temporary of another host is stale after this long (its pid cannot be checked here)
LOW_SPACE = 1 << 20  # bytes: a write that fails with less free than this failed because the disk is full


class LinkRefused(UsageProblem):
    """A symbolic link where cep would read, write or delete inside a results folder (one line)."""

    def __init__(self, link: Path, doing: str):
        self.link, self.doing = link, doing
        try:
            target = f" to {os.readlink(link)}"
        except OSError:
            target = ""
        super().__init__(f"{link}: a symbolic link{target}; cep does not {doing} through links inside a results "
                         "folder; replace the link with a real copy (cp -rL) or remove it, and rerun")

    def __reduce__(self) -> tuple:  # crosses processes (a Ray trial's error) with its own arguments
        return type(self), (self.link, self.doing)


class DiskFull(UsageProblem):
    """No space left where a file is written (one line; the old file is kept)."""

    def __init__(self, path: Path):
        self.path = path
        super().__init__(f"{path}: no space left on device; free space and rerun the same command to resume")

    def __reduce__(self) -> tuple:
        return type(self), (self.path,)


def find_link(root: str | Path, path: str | Path) -> Path | None:
    """The first component of `path` below `root` (root excluded, `path` included) that is a symbolic link
    (or a `..`); None when there is none. Components that do not exist yet are no link."""
    root, path = Path(root), Path(path)
    try:
        parts = path.relative_to(root).parts
    except ValueError:  # not below root: only the path itself can be judged
        root, parts = path.parent, (path.name,)
    cur = root
    for part in parts:
        cur = cur / part
        if part == "..":
            return cur
        try:
            if stat.S_ISLNK(os.lstat(cur).st_mode):
                return cur
        except OSError:  # missing (made later as a real folder) or unreadable (the operation itself will say)
            return None
    return None


def refuse_links(root: str | Path, path: str | Path, doing: str = "write") -> None:
    """Raise LinkRefused when a component of `path` below `root` is a symbolic link."""
    link = find_link(root, path)
    if link is not None:
        raise LinkRefused(link, doing)


def read_bytes(path: str | Path, root: str | Path | None = None, *, limit: int, what: str = "file") -> bytes:
    """A regular file's bytes (at most `limit`: cep.reading), never through a link below `root` or at the
    file itself: LinkRefused."""
    path = Path(path)
    refuse_links(root if root is not None else path.parent, path, "read")
    return read_bytes_limited(path, limit, what, follow=False)


def read_text(path: str | Path, root: str | Path | None = None, *, limit: int, what: str = "file",
              errors: str = "strict") -> str:
    return read_bytes(path, root, limit=limit, what=what).decode("utf-8", errors=errors)


def append_text(path: str | Path, text: str) -> None:
    """Append to a log file (made when missing), never through a link; a full disk raises DiskFull."""
    path = Path(path)
    refuse_links(path.parent, path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        with open(fd, "a") as f:
            f.write(text)
    except OSError as e:
        if disk_full(e, path):
            raise DiskFull(path) from None
        raise


# ----------------------------------------------------------------- temporaries
def temp_path(path: Path) -> Path:
    """The temporary name of an atomic write of `path`: same folder, same suffix (matplotlib picks the
    format by it), named so that a leftover of a killed run is recognisably ours."""
    return path.with_name(f"{TEMP_PREFIX}{os.getpid()}@{socket.gethostname()}~{path.name}")


def create_exclusive(path: Path) -> None:
    """Create `path` empty, as a new regular file (never through a link left there)."""
    path.unlink(missing_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666))


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (best effort: not every filesystem allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` of this host exists (the one liveness check; another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid > 0
    return True


def stale_temp(name: str, mtime: float, host: str | None = None) -> bool:
    """Whether `name` is a temporary of ours whose writer is gone (this host: its pid; others: its age)."""
    if not name.startswith(TEMP_PREFIX) or "~" not in name:
        return False
    who = name[len(TEMP_PREFIX):].split("~", 1)[0]
    pid, _, where = who.partition("@")
    if where == (host or socket.gethostname()) and pid.isdigit():
        return int(pid) != os.getpid() and not pid_alive(int(pid))
    return time.time() - mtime > STALE_TEMP_S


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Remove the temporaries that killed runs left in `folder` (never following a link); returns them."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        try:
            if stale_temp(entry.name, entry.stat(follow_symlinks=False).st_mtime):
                os.unlink(entry.path)  # a link is removed itself, never its target
                removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


# ------------------------------------------------------------------ full disk
def disk_full(error: BaseException, path: Path) -> bool:
    """Whether a failed write of `path` failed for want of space (torch.save says only RuntimeError)."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(error, RuntimeError) and out_of_space(path.parent)


def out_of_space(folder: Path) -> bool:
    """Whether the filesystem of `folder` is (nearly) full: then a failure there is reported as that."""
    try:
        return shutil.disk_usage(folder).free < LOW_SPACE
    except OSError:
        return False


@contextmanager
def atomic_path(path: str | Path, root: str | Path | None = None) -> Iterator[Path]:
    """A temporary name beside `path` to write to; fsynced and renamed to `path` when the block ends without error.

    Readers see either the old or the new file, never half of it (a crash leaves the old one, and the next run
    removes the temporary: remove_stale_temps). The temporary name keeps the suffix, for writers that choose
    the format by it (matplotlib). No component of `path` below `root` (default: its folder), nor `path`
    itself, may be a symbolic link (LinkRefused); a full disk raises DiskFull.
    """
    path = Path(path)
    refuse_links(root if root is not None else path.parent, path)
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        create_exclusive(tmp)
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except (OSError, RuntimeError) as e:
        if disk_full(e, path):
            raise DiskFull(path) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, data: str | bytes, root: str | Path | None = None) -> None:
    """Write a whole file atomically (see atomic_path)."""
    with atomic_path(path, root) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
