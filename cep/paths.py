"""Paths a user gives (--out, --storage, --data-dir, names): within the file system's length limits, said
before anything is made (otherwise an ENAMETOOLONG traceback from deep inside a run)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_NAME_MAX, DEFAULT_PATH_MAX = 255, 4096  # Linux's, where the file system does not say


def _limits(path: Path) -> tuple[int, int]:
    """NAME_MAX and PATH_MAX of the file system holding the nearest existing folder of `path`."""
    for folder in [path, *path.parents]:
        try:
            if folder.is_dir():
                return os.pathconf(folder, "PC_NAME_MAX"), os.pathconf(folder, "PC_PATH_MAX")
        except (OSError, ValueError):
            break
    return DEFAULT_NAME_MAX, DEFAULT_PATH_MAX


SAFE_NAME, SAFE_PATH = 143, 1024  # within every common file system's limits (eCryptfs: 143 bytes a name)


def length_problem(path: str | os.PathLike[str]) -> str:
    """Why the file system cannot hold `path` ("" when it can): a component or the whole path too long."""
    text = os.fspath(path)
    if len(text) <= SAFE_PATH and all(len(os.fsencode(part)) <= SAFE_NAME for part in text.split(os.sep)):
        return ""  # the common case, without a system call
    p = Path(path).expanduser()
    try:
        name_max, path_max = _limits(p.absolute())
    except OSError:  # the working folder itself is gone
        name_max, path_max = DEFAULT_NAME_MAX, DEFAULT_PATH_MAX
    for part in p.parts:
        size = len(os.fsencode(part))
        if size > name_max:
            shown = part if len(part) <= 40 else part[:37] + "..."
            return (f"the path component {shown!r} is {size:,} bytes, more than the {name_max} the file system "
                    "allows for one name; use a shorter name")
    size = len(os.fsencode(str(p.absolute())))
    if size > path_max:
        return f"the path is {size:,} bytes, more than the {path_max:,} the file system allows; use a shorter path"
    return ""
