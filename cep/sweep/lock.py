"""One process per experiment: an exclusive flock on <experiment>/.cep-sweep.lock, naming its holder.

The kernel releases the lock when its process dies (SIGKILL included), so a lock left by a dead
process is taken over silently; flock works on local disks and on NFSv4. The file stays after the
run (it is one of the experiment's own files, store.OWN_FILES); only the lock on it means "in use".
It is opened like every other file of an experiment: never through a link, without blocking, a regular
file only (a copied or tampered folder could hold a link, a FIFO or a folder there); and what it says is
shown as a claim, never turned into advice (a forged one could name any pid).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import socket
import stat
import time
from pathlib import Path

from cep.layout import LOCK_FILE
from cep.reading import KB, file_kind
from cep.safe_files import LinkRefused, read_text
from cep.sweep.spec import SweepError

TRIES = 20  # over ~1 s: a dry run's probe or a --restart's move holds the file for a moment only
_CLAIM = {"pid": re.compile(r"[0-9]{1,10}"), "host": re.compile(r"[A-Za-z0-9._-]{1,64}"),
          "started": re.compile(r"[0-9T:+-]{8,30}")}  # what a lock file of ours holds; anything else is shown as ?


def holder(exp_dir: Path) -> str:
    """Who holds the experiment's lock, as the lock file claims (pid, host, since when); unchecked, so it is only
    shown, and only in the shape our own lock files have."""
    try:
        text = read_text(exp_dir / LOCK_FILE, limit=KB, what="lock file", errors="replace").split()
    except (OSError, LinkRefused):
        text = []
    info = {k: v for k, v in zip(text[::2], text[1::2], strict=False) if k in _CLAIM and _CLAIM[k].fullmatch(v)}
    return (f"pid {info.get('pid', '?')} on host {info.get('host', '?')}"
            + (f" since {info['started']}" if "started" in info else ""))


def _in_use(exp_dir: Path) -> SweepError:
    return SweepError([f"{exp_dir}: in use by another cep-sweep (its {LOCK_FILE} says: {holder(exp_dir)}); wait "
                       "for it to end, or stop it (Ctrl-C where it runs) and rerun"])


def _refused(path: Path, why: str) -> SweepError:
    return SweepError([f"{path}: {why}; the experiment's lock file must be a regular file of cep-sweep: remove "
                       "it (rm, or rmdir for a folder) and rerun"])


def open_lock(path: Path, flags: int) -> int | None:
    """The lock file's descriptor: never through a link, never blocking, a regular file only (else SweepError);
    None when it does not exist and `flags` does not create it."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), 0o644)
    except (FileNotFoundError, NotADirectoryError):  # no lock file (no folder: what else is wrong is said elsewhere)
        return None
    except OSError as e:
        if e.errno == errno.ELOOP or os.path.islink(path):
            raise SweepError([str(LinkRefused(path, "lock"))]) from None
        if e.errno in (errno.EISDIR, errno.ENXIO):
            raise _refused(path, "a folder" if e.errno == errno.EISDIR else "not a regular file") from None
        raise _refused(path, f"cannot open it ({e.strerror or e})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _refused(path, f"{file_kind(mode)}, not a regular file")
    return fd


class ExperimentLock:
    """The exclusive lock of one experiment folder, held from acquire() to release() (or the process's end)."""

    def __init__(self, exp_dir: Path):
        self.exp_dir = exp_dir
        self.fd: int | None = None

    def acquire(self) -> None:
        """Take the lock (making the folder if needed), or refuse (SweepError) while a live process holds it."""
        path = self.exp_dir / LOCK_FILE
        self.exp_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(TRIES):
            fd = open_lock(path, os.O_RDWR | os.O_CREAT)
            assert fd is not None  # O_CREAT
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                time.sleep(0.05)
                continue
            try:
                same = os.lstat(path).st_ino == os.fstat(fd).st_ino  # not a file moved away (--restart) meanwhile
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} host {socket.gethostname()} "
                         f"started {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n".encode())
            old, self.fd = self.fd, fd
            if old is not None:  # re-taken after --restart moved the old folder (and its lock file) away
                os.close(old)
            return
        if self.fd is not None:  # the lock of a folder --restart moved away: nothing to release there any more
            os.close(self.fd)
            self.fd = None
        raise _in_use(self.exp_dir)

    def release(self, remove: bool = False) -> None:
        """Give the lock back; `remove`: also delete the lock file (a refused start leaves nothing)."""
        if self.fd is None:
            return
        if remove:
            (self.exp_dir / LOCK_FILE).unlink(missing_ok=True)
        os.close(self.fd)
        self.fd = None


def check_unlocked(exp_dir: Path) -> None:
    """For --dry-run: refuse (SweepError) an experiment that a live process runs, without taking its lock."""
    fd = open_lock(exp_dir / LOCK_FILE, os.O_RDONLY)
    if fd is None:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # held for an instant; a run's acquire() retries past it
    except BlockingIOError:
        raise _in_use(exp_dir) from None
    finally:
        os.close(fd)
