"""Test-only switches of a trial, read from the environment where the trial runs (as Ray's RAY_testing_*):

  CEP_FAULT_INJECT="<trial id glob>:<epoch>[:<times>|always][:pack]" raises before that epoch trains, as that
  trial's own failure (with `pack`: as a failure of its pack's shared program);
  CEP_TEST_EPOCH_SLEEP=<seconds> sleeps after each epoch (lets tests interrupt mid-sweep).
The driver checks them once (`test_env`) and the trial sets them in its own environment (`set_switches`: a
Ray worker keeps the environment its node started with, not the driver's); the sweep's trainable calls
`between_rounds` in its loop over a pack's rounds. Nothing else carries or checks them: the production path
threads no test hook (`cep train` and `--local` never see them). No Ray here.
"""

from __future__ import annotations

import fnmatch
import os
import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cep.member import Member, own_failure
from cep.safe_files import write_atomic
from cep.sweep.spec import SweepError

FAULTS_FILE = ".faults_injected"  # counts the injections in the trial folder, so that retries see them
FAULT_ENV = "CEP_FAULT_INJECT"
SLEEP_ENV = "CEP_TEST_EPOCH_SLEEP"


class FaultInjected(RuntimeError):
    """Raised by the CEP_FAULT_INJECT hook."""


@dataclass(frozen=True)
class Fault:
    """Test-only: make trials matching `pattern` raise during `epoch`, `times` times in all (None: always), as
    their own failure or (`pack`) as one of their pack's shared program."""

    pattern: str
    epoch: int
    times: int | None = 1
    pack: bool = False


def parse_faults(text: str | None) -> list[Fault]:
    """`CEP_FAULT_INJECT="<trial id glob>:<epoch>[:<times>|always][:pack]"`, several separated by `;`."""
    faults = []
    for item in (text or "").split(";"):
        if not item.strip():
            continue
        parts = item.strip().split(":")
        pack = len(parts) > 2 and parts[-1] == "pack"
        parts = parts[:-1] if pack else parts
        try:
            if len(parts) not in (2, 3):
                raise ValueError
            times = None if len(parts) == 3 and parts[2] == "always" else int(parts[2]) if len(parts) == 3 else 1
            faults.append(Fault(parts[0], int(parts[1]), times, pack))
        except ValueError:
            raise SweepError([f"{FAULT_ENV}={text}: expected <trial id glob>:<epoch>[:<times>|always][:pack] "
                              "(test-only)"]) from None
    return faults


def fault_due(faults: Sequence[Fault], trial_id: str, epoch: int, folder: str | Path) -> Fault | None:
    """The fault to inject now, if any; counts injections in the trial folder so that retries see them."""
    for f in faults:
        if f.epoch == epoch and fnmatch.fnmatchcase(trial_id, f.pattern):
            counter = Path(folder) / FAULTS_FILE
            n = int(counter.read_text()) if counter.exists() else 0
            if f.times is None or n < f.times:
                write_atomic(counter, str(n + 1))
                return f
    return None


def epoch_sleep(text: str | None) -> float:
    """CEP_TEST_EPOCH_SLEEP: seconds to sleep after each epoch."""
    try:
        return float(text or 0)
    except ValueError:
        raise SweepError([f"{SLEEP_ENV}={text}: expected seconds (test-only)"]) from None


def test_env() -> dict[str, str]:
    """The test switches set here, checked (SweepError naming the variable), for the trials' environment."""
    env = {k: os.environ[k] for k in (FAULT_ENV, SLEEP_ENV) if os.environ.get(k)}
    parse_faults(env.get(FAULT_ENV))
    epoch_sleep(env.get(SLEEP_ENV))
    return env


def set_switches(switches: Mapping[str, str]) -> None:
    """In a trial: exactly the driver's test switches (`test_env`), whatever its worker process started with."""
    for name in (FAULT_ENV, SLEEP_ENV):
        if name in switches:
            os.environ[name] = switches[name]
        else:
            os.environ.pop(name, None)


def between_rounds(members: Sequence[Member], trained: Sequence[Any] = ()) -> None:
    """The trial's test seam between two rounds of cep.runner.rounds (and before the first): sleep after each
    epoch just saved (`trained`), then raise the fault injected into the next epoch of a member that trains
    it, before that round trains, as that member's own failure (cep.runner.own_failure: it alone ends, the
    others train on) or, for a `pack` fault, as the pack's (the round is lost whole, as a crash in it would
    lose it). Nothing when the switches are unset (every production run)."""
    faults, sleep = os.environ.get(FAULT_ENV), os.environ.get(SLEEP_ENV)
    if sleep:
        time.sleep(epoch_sleep(sleep) * len(trained))
    for m in members if faults else ():
        st = m.state or (m.resumed.state if m.resumed else None)
        epoch = st.epoch + 1 if st is not None else 1
        if m.error is not None or (st is not None and st.status != "running") or epoch > m.cfg.epochs:
            continue
        fault = fault_due(parse_faults(faults), m.id, epoch, m.folder)
        if fault is not None:
            with nullcontext() if fault.pack else own_failure(m):
                raise FaultInjected(f"fault injected by CEP_FAULT_INJECT in epoch {epoch} of {m.id}"
                                    + (" (as its pack's)" if fault.pack else ""))
