"""One process per experiment: an exclusive flock on <experiment>/.cep-sweep.lock, naming its holder.

The kernel releases the lock when its process dies (SIGKILL included), so a lock left by a dead
process is taken over silently; flock works on local disks and on NFSv4. The file stays after the
run (it is one of the experiment's own files, store.OWN_FILES); only the lock on it means "in use".
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from cep.layout import LOCK_FILE
from cep.sweep.spec import SweepError

TRIES = 20  # over ~1 s: a dry run's probe or a --restart's move holds the file for a moment only


def holder(exp_dir: Path) -> str:
    """Who holds the experiment's lock, as the lock file says (pid, host, since when)."""
    try:
        text = (exp_dir / LOCK_FILE).read_text(errors="replace").split()
    except OSError:
        text = []
    info = dict(zip(text[::2], text[1::2], strict=False))
    return (f"cep-sweep pid {info.get('pid', '?')} on host {info.get('host', '?')}"
            + (f" (since {info['started']})" if "started" in info else ""))


def _in_use(exp_dir: Path) -> SweepError:
    who = holder(exp_dir)
    pid = who.split()[2]
    return SweepError([f"{exp_dir}: in use by {who}; wait for it to end, or stop it (Ctrl-C, or kill {pid} on "
                       "that host) and rerun"])


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
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                time.sleep(0.05)
                continue
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino  # not a file moved away (--restart) meanwhile
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
    try:
        fd = os.open(exp_dir / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # held for an instant; a run's acquire() retries past it
    except BlockingIOError:
        raise _in_use(exp_dir) from None
    finally:
        os.close(fd)
