"""Where and with what a trial ran (summary.json's `provenance`): software versions, the git commit, host, device."""

from __future__ import annotations

import functools
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from cep import __version__


@functools.lru_cache(maxsize=1)
def _software() -> dict[str, str | None]:
    """Versions that decide a run's numbers (asked once per process; no torch or ray import needed)."""
    def version(package: str) -> str | None:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    return {"cep": __version__, "git_commit": _git_commit(), "python": platform.python_version(),
            "torch": version("torch"), "ray": version("ray")}


def _git_commit() -> str | None:
    """The commit of the checkout cep runs from (None when installed from a wheel or without git)."""
    source = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(source), "rev-parse", "--show-toplevel", "HEAD"], capture_output=True,
                             text=True, timeout=5).stdout.split()
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    if len(out) != 2 or Path(out[0]).resolve() != source:  # not our own checkout (e.g. site-packages in a repo)
        return None
    return out[1] + ("-dirty" if dirty else "")


def provenance(device: str, dtype: str) -> dict[str, Any]:
    """Where and with what a trial ran: software versions, git commit, host, device, dtype (summary.json)."""
    return {**_software(), "host": socket.gethostname(), "device": device, "dtype": dtype}
