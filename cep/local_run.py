"""Where a local run (`cep train`, `cep run`, `cep gdu`) lives, so that the same command finds it again.

A run given no --out writes to runs/NAME-HASH/: NAME is readable (the preset or the model), HASH is a
short digest of the fields that decide what the run computes (TrialConfig.result_dict, the one rule for
"same result"), epochs left out as a sweep does (more epochs continue a run). Rerunning the same command
therefore lands in the same folder and resumes it from its checkpoint; a changed result field is another
run. A seed left to be drawn is part of the identity as "drawn": the rerun adopts the seed the run drew.
"""

from __future__ import annotations

import hashlib
import json
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cep.config import TrialConfig

RUNS_DIR = "runs"
EXIT_SIGTERM = 128 + signal.SIGTERM


def run_identity(cfg: TrialConfig) -> str:
    """A short digest of what the run computes: equal for the same command, different for another result."""
    fields = {k: v for k, v in cfg.result_dict().items() if k != "epochs"}
    blob = json.dumps(fields, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def run_folder(cfg: TrialConfig, name: str) -> str:
    """runs/NAME-HASH: the results folder of a run given no --out (see the module docstring)."""
    return str(Path(RUNS_DIR) / f"{name}-{run_identity(cfg)}")


class Terminated(BaseException):
    """SIGTERM arrived: the run stops like after Ctrl-C (its last finished epoch is saved) and exits 143."""


@contextmanager
def sigterm_stops() -> Iterator[None]:
    """Turn SIGTERM into Terminated while a run trains, so it ends with one line and exit code 143.

    Writes are atomic (temporary, fsync, rename), so stopping mid-epoch keeps the previous epoch whole."""
    def handler(signum: int, frame: Any) -> None:
        raise Terminated

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (a test harness): leave SIGTERM as it is
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
