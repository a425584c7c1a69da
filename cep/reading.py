"""Reading a file that a user or another node can place: a regular file only, and at most a budget of bytes.

A device (/dev/zero), a FIFO or a socket given as a config, checkpoint or metrics file would otherwise
be read until memory runs out, or block forever; every reader of such files goes through here.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO

from cep.errors import UsageProblem

KB, MB = 1_000, 1_000_000
YAML_BYTES = 1 * MB  # a sweep file or trial config is a few KB
JSON_BYTES = 64 * MB  # sweep.json of the largest sweep allowed (cep.sweep.spec.MAX_TRIALS), summary.json
EPOCH_ROW_BYTES = 4 * KB  # one row of metrics.csv (a few dozen numbers)
TEXT_BYTES = 16 * MB  # logs and error.txt: only their last lines are shown


class ReadRefused(UsageProblem, OSError):
    """A file that is not a regular file, or larger than its budget: one line naming it (an OSError too, so
    that every reader's handling of an unreadable file applies)."""


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def open_limited(path: str | os.PathLike[str], limit: int, what: str = "file", follow: bool = True) -> BinaryIO:
    """A regular file of at most `limit` bytes, opened for binary reading; anything else is a ReadRefused.

    Opened without blocking (a FIFO with no writer would wait forever) and checked on the open file
    descriptor, so that the path cannot be swapped between the check and the read. `follow=False`: the
    file itself must not be a symbolic link (inside a results folder, cep.safe_files).
    """
    name = os.fspath(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(name, flags)
    except OSError as e:
        if e.errno == errno.ELOOP and not follow:
            raise ReadRefused(f"{name}: a symbolic link; cep does not read through links inside a results "
                              "folder; replace it with a real copy (cp -L) or remove it") from None
        raise ReadRefused(f"{name}: cannot read the {what} ({e.strerror or e})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ReadRefused(f"{name}: the {what} is {file_kind(st.st_mode)}, not a regular file; "
                              "use a regular file there")
        if st.st_size > limit:
            raise ReadRefused(_too_large(name, st.st_size, limit, what))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes_limited(path: str | os.PathLike[str], limit: int, what: str = "file", follow: bool = True) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (see open_limited); at most limit + 1 are read."""
    with open_limited(path, limit, what, follow) as f:
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise ReadRefused(f"{os.fspath(path)}: cannot read the {what} ({e.strerror or e})") from None
    if len(data) > limit:  # it grew since it was opened
        raise ReadRefused(_too_large(os.fspath(path), len(data), limit, what))
    return data


def read_text_limited(path: str | os.PathLike[str], limit: int, what: str = "file", errors: str = "strict") -> str:
    """read_bytes_limited as UTF-8 text (a UnicodeDecodeError, a ValueError, when `errors` is strict)."""
    return read_bytes_limited(path, limit, what).decode("utf-8", errors=errors)


def parse_json(text: str | bytes) -> Any:
    """json.loads, with nesting deep enough to exhaust Python's stack a ValueError like any other damage."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply to be one of our files") from None


def regular_file_problem(path: str | Path) -> str:
    """Why `path` is not a regular file ("" when it is, or does not exist), without opening it."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return ""
    return "" if stat.S_ISREG(mode) else f"{path}: {file_kind(mode)}, not a regular file"


def _too_large(name: str, size: int, limit: int, what: str) -> str:
    return f"{name}: {size:,} bytes is too large for a {what} (at most {limit:,}); is it the right file?"
