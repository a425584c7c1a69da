"""Waiting on subprocesses and picking ports, shared by the Ray tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def wait(predicate: Callable[[], object], timeout: float, what: str, proc: subprocess.Popen | None = None,
         log: Path | None = None) -> None:
    """Poll until predicate() holds; with proc, fail at once (showing the end of log) if it exits first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the driver exited ({proc.returncode}) before {what}:\n{tail(log)}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}" + (f":\n{tail(log)}" if log else ""))


def tail(log: Path | None, lines: int = 60) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log and log.exists() else ""


def free_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pids_matching(marker: str) -> list[int]:
    """Processes (not this one) whose command line mentions `marker` (a temp folder only this test uses)."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if marker in (d / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(d.name))
            except OSError:
                continue
    return found


def kill_all(pids: list[int]) -> None:
    """SIGKILL each process (one already gone is fine)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def trials_stopped(exp: Path) -> bool:
    """The trial processes of a killed driver have exited (Ray kills a dead driver's actors): no pid that a
    trial's node.txt names is alive."""
    for node in (exp / "trials").rglob("node.txt"):
        pid = int(dict(ln.split(" ", 1) for ln in node.read_text().splitlines())["pid"])
        try:
            os.kill(pid, 0)
            return False
        except ProcessLookupError:
            continue
    return True
