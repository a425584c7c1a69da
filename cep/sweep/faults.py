"""Test-only hooks of a sweep's trials: inject a fault in a given epoch, or sleep after each epoch.

  CEP_FAULT_INJECT="<trial id glob>:<epoch>[:<times>|always]" raises in that epoch (before it is saved);
  CEP_TEST_EPOCH_SLEEP=<seconds> sleeps after each epoch (lets tests interrupt mid-sweep).
The driver reads them once and passes them to every trial; no Ray here.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cep.safe_files import write_atomic
from cep.sweep.spec import SweepError

FAULTS_FILE = ".faults_injected"  # counts the injections in the trial folder, so that retries see them
FAULT_ENV = "CEP_FAULT_INJECT"
SLEEP_ENV = "CEP_TEST_EPOCH_SLEEP"


class FaultInjected(RuntimeError):
    """Raised by the CEP_FAULT_INJECT hook."""


@dataclass(frozen=True)
class Fault:
    """Test-only: make trials matching `pattern` raise during `epoch`, `times` times in all (None: always)."""

    pattern: str
    epoch: int
    times: int | None = 1


def parse_faults(text: str | None) -> list[Fault]:
    """`CEP_FAULT_INJECT="<trial id glob>:<epoch>[:<times>|always]"`, several separated by `;`."""
    faults = []
    for item in (text or "").split(";"):
        if not item.strip():
            continue
        parts = item.strip().split(":")
        try:
            if len(parts) not in (2, 3):
                raise ValueError
            times = None if len(parts) == 3 and parts[2] == "always" else int(parts[2]) if len(parts) == 3 else 1
            faults.append(Fault(parts[0], int(parts[1]), times))
        except ValueError:
            raise SweepError([f"{FAULT_ENV}={text}: expected <trial id glob>:<epoch>[:<times>|always] "
                              "(test-only)"]) from None
    return faults


def fault_due(faults: Sequence[Fault], trial_id: str, epoch: int, folder: str | Path) -> bool:
    """Whether to inject a fault now; counts injections in the trial folder so that retries see them."""
    for f in faults:
        if f.epoch == epoch and fnmatch.fnmatchcase(trial_id, f.pattern):
            counter = Path(folder) / FAULTS_FILE
            n = int(counter.read_text()) if counter.exists() else 0
            if f.times is None or n < f.times:
                write_atomic(counter, str(n + 1))
                return True
    return False


def epoch_sleep(text: str | None) -> float:
    """CEP_TEST_EPOCH_SLEEP: seconds to sleep after each epoch."""
    try:
        return float(text or 0)
    except ValueError:
        raise SweepError([f"{SLEEP_ENV}={text}: expected seconds (test-only)"]) from None
