"""A member of a pack run (cep.runner.rounds; a trial alone is a pack of one): its identity, folder and log,
where it stands, how it ended, and its own failure (`own_failure`), which ends it alone."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cep.checkpoint import TrainState
from cep.config import TrialConfig
from cep.results import append_log

RESTART_HINT = "delete it to start afresh"  # what to do when none of a trial's saved states can be used
START = "the start"  # the source of a trial that has no saved state

SHARED_FAILURES = (MemoryError, torch.OutOfMemoryError, torch.AcceleratorError)  # the device's or the process's:
# never one member's own, whichever member's step met them


class TrialLog:
    """trial.log of a run; lines wait until the folder exists (a run that fails early leaves no folder)."""

    def __init__(self, folder: str | Path | None):
        self.folder = folder
        self.pending: list[str] = []

    def __call__(self, line: str) -> None:
        if self.folder is None:
            return
        self.pending.append(line)
        if Path(self.folder).is_dir():
            for ln in self.pending:
                append_log(self.folder, ln)
            self.pending.clear()


@dataclass
class Resumed:
    """Where a trial continues from: a saved TrainState (None: from the start) and where it was read."""

    state: TrainState | None
    source: str = START

    @property
    def epoch(self) -> int:
        return self.state.epoch if self.state is not None else 0


@dataclass
class Outcome:
    """How a run ended: the trainer's final state (None for the gdu action) and whether it only replayed."""

    status: str  # finished | diverged | collapsed | errored (its own failure: Member.error)
    state: TrainState | None = None
    replayed: bool = False


@dataclass
class Member:
    """One trial of a pack run: its configuration, its results folder, where it continues from, its trial id
    (its one identity; default: its folder) and what to do when none of its saved states can be used."""

    cfg: TrialConfig
    folder: Path | None
    resumed: Resumed | None = None  # None: resume(cfg, folder)
    root: Path | None = None  # the folder no link may be below (a sweep's experiment folder); None: `folder`
    id: str = ""
    hint: str = RESTART_HINT
    state: TrainState | None = field(default=None, init=False)  # its latest state, once it is started
    error: Exception | None = field(default=None, init=False)  # its own failure (own_failure): it runs no more
    outcome: Outcome | None = field(default=None, init=False)  # how it ended, once it has
    prepared: bool = field(default=False, init=False)
    log: TrialLog = field(init=False)

    def __post_init__(self) -> None:
        self.id = self.id or str(self.folder)
        self.log = TrialLog(self.folder)


@dataclass(frozen=True)
class MemberEpoch:
    """One member's epoch in a saved round: its trial id, its state after the epoch, the epoch's metrics
    (a member that diverged in the round: those of its last finite epoch) and status."""

    id: str
    state: TrainState
    metrics: dict[str, Any]

    @property
    def status(self) -> str:
        return self.metrics["status"]


@contextmanager
def own_failure(m: Member) -> Iterator[None]:
    """A step of member `m` alone (its folder, its saved states, its files, a fault injected into it): an
    exception there is its own failure: it is set on `m`, which runs no more, and the pack goes on without it.
    A failure of memory or of the device (SHARED_FAILURES) is the pack's: it propagates."""
    try:
        yield
    except SHARED_FAILURES:
        raise
    except Exception as e:
        m.error = e
        m.outcome = Outcome("errored", m.state)
