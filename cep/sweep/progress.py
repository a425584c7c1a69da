"""What a running sweep shows: a line per trial event and a periodic table of the running trials (Tune callbacks).

Also writes trials/<id>/error.txt from the driver when a trial died without writing it (a lost worker).
"""

from __future__ import annotations

import heapq
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ray import tune

from cep.errors import UsageProblem
from cep.results import COMPLETE, ERROR_FILE, read_summary
from cep.safe_files import write_atomic
from cep.text import duration, text_table


def trial_name(trial: Any) -> str:
    """Tune's display name of a trial: our id."""
    return str(trial.config.get("trial_id", trial.trial_id))


def trial_dirname(trial: Any) -> str:
    """Tune's own folder for a trial: the id made flat, plus Tune's unique suffix."""
    flat = trial_name(trial).replace("/", "_")[:100]
    return f"{flat}_{trial.trial_id}"


@dataclass
class _Row:
    epoch: int = 0
    epochs: int = 0
    train_error: float | None = None
    test_error: float | None = None
    status: str = "pending"  # a status of cep.results.STATUSES, or "running" while Tune runs the trial
    failures: int = 0
    collapsed_epoch: int | None = None  # where its train error went back to chance (it may train on)
    epoch_seconds: float | None = None  # of its latest epoch (in a pack: the round's, shared by its members)
    started: float | None = None  # monotonic time this run first started it
    ended: float | None = None  # monotonic time this run saw it end


@dataclass(frozen=True)
class Schedule:
    """What the sweep's ETA needs besides the trials' progress: the cost of one epoch (round) of each Tune trial
    (any unit, e.g. multiply-adds; it scales a measured pack's seconds to the packs not measured yet), and how
    many Tune trials the cluster runs at once (its CPUs / GPUs over the resources per Tune trial)."""

    epoch_cost: dict[str, float] = field(default_factory=dict)  # Tune trial (pack id) -> cost of one round
    slots: int = 1


def makespan(remaining: list[float], waiting: list[float], slots: int) -> float:
    """Seconds until the last of the work ends: `remaining` seconds of the running Tune trials, then each of
    `waiting` (in order) on the first slot that frees (Tune starts pending trials in order)."""
    ends = list(remaining) + [0.0] * max(0, slots - len(remaining))  # a retried trial may briefly exceed slots
    heapq.heapify(ends)
    for w in waiting:
        heapq.heappush(ends, heapq.heappop(ends) + w)
    return max(ends, default=0.0)


class ProgressTable(tune.Callback):
    """Our live progress: a line per trial event, and every `interval` seconds a table of running trials.

    A Ray Tune trial runs a pack of our trials (often one); rows and lines are per trial of ours.
    """

    def __init__(self, epochs: dict[str, int], interval: float = 30.0, out: TextIO | None = None,
                 packs: dict[str, tuple[str, ...]] | None = None, schedule: Schedule | None = None):
        self.epochs = dict(epochs)  # trial id -> epochs it trains
        self.interval = interval
        self.packs = dict(packs or {})  # Tune trial (pack id) -> our trial ids
        self.schedule = schedule or Schedule()
        self._out = out
        self._reset()

    def _reset(self) -> None:
        self.rows: dict[str, _Row] = {i: _Row(epochs=n) for i, n in self.epochs.items()}
        self.t0 = time.monotonic()
        self.last_table = time.monotonic()
        self.changed = False

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles its RunConfig (tuner.pkl): keep only settings
        return {"epochs": self.epochs, "interval": self.interval, "packs": self.packs, "schedule": self.schedule}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.epochs, self.interval, self._out = state["epochs"], state["interval"], None
        self.packs, self.schedule = state.get("packs", {}), state.get("schedule", Schedule())
        self._reset()

    def _print(self, text: str) -> None:
        out = self._out or sys.stdout
        out.write(text + "\n")
        out.flush()

    def _elapsed(self) -> str:
        return duration(time.monotonic() - self.t0, "clock")

    def _members(self, trial: Any) -> list[str]:
        name = trial_name(trial)
        return list(self.packs.get(name, (name,)))

    def _row(self, trial_id: str) -> _Row:
        return self.rows.setdefault(trial_id, _Row())

    def _say(self, mark: str, trial: Any, text: str) -> None:
        """A line about a Tune trial: its pack id, and how many trials of ours it runs."""
        n = len(self._members(trial))
        self._print(f"{mark} {trial_name(trial)}{f' (pack of {n})' if n > 1 else ''}: {text}")

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        now = time.monotonic()
        for i in self._members(trial):
            row = self._row(i)
            if row.status not in COMPLETE:
                row.status = "running"
                row.started = row.started or now
        self.changed = True

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        for rec in result.get("members") or []:
            row = self._row(str(rec.get("id")))
            row.epoch, row.epochs = int(rec.get("epoch", 0)), int(rec.get("epochs", row.epochs))
            row.train_error, row.test_error = rec.get("train_error"), rec.get("test_error")
            row.status = str(rec.get("status"))
            collapsed = rec.get("collapsed_epoch")
            if collapsed is not None and row.collapsed_epoch is None:
                row.collapsed_epoch = int(collapsed)
                then = "stopped there" if row.status == "collapsed" else "training on"
                self._print(f"! {rec.get('id')}: collapsed at epoch {row.collapsed_epoch} ({_collapse_seen(rec)}); "
                            f"{then} [{self._elapsed()}]")
            if isinstance(rec.get("epoch_seconds"), (int, float)) and not result.get("replayed"):
                row.epoch_seconds = float(rec["epoch_seconds"])
            if row.status in COMPLETE and row.started is not None and row.ended is None:
                row.ended = time.monotonic()
            if result.get("replayed"):
                self._print(f"= {rec.get('id')}: already {row.status} earlier (epoch {row.epoch}); not rerun")
        self.changed = True
        self.on_step_end(iteration, trials)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        for i in self._members(trial):
            row = self._row(i)
            if row.status == "running":  # Tune ended it before its last epoch (a stop)
                row.status = "interrupted"
            if row.started is not None and row.ended is None:
                row.ended = time.monotonic()
            err = f", test error {_percent(row.test_error)}" if isinstance(row.test_error, float) else ""
            if row.collapsed_epoch is not None:
                err += f", collapsed at epoch {row.collapsed_epoch}"
            self._print(f"+ {i}: {row.status} at epoch {row.epoch}/{row.epochs}{err} [{self._elapsed()}]")
        self.changed = True

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        for i in self._members(trial):
            row = self._row(i)
            if row.status not in COMPLETE:
                row.status, row.failures = "running", trial.num_failures
        self._say("!", trial, f"failed ({_error_line(trial)}); retrying from its last checkpoint "
                              f"(failure {trial.num_failures})")
        self.changed = True

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        for i in self._members(trial):
            if self._row(i).status not in COMPLETE:
                self._row(i).status = "errored"
        self._say("x", trial, f"errored ({_error_line(trial)}) after {trial.num_failures} failure(s)")
        self.changed = True

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if self.changed and time.monotonic() - self.last_table >= self.interval:
            self._print(self.table())
            self.last_table, self.changed = time.monotonic(), False

    def table(self) -> str:
        counts: dict[str, int] = {}
        for r in self.rows.values():
            counts[r.status] = counts.get(r.status, 0) + 1
        head = f"[{self._elapsed()}] " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        flagged = sum(r.collapsed_epoch is not None for r in self.rows.values())
        if flagged:
            head += f"; {flagged} collapsed so far"
        active = [(i, r) for i, r in self.rows.items() if r.status == "running"]
        if not active:
            return head
        eta = self.eta()
        head += f"; sweep ETA {duration(eta)}" if eta is not None else "; sweep ETA after the first epoch"
        rows = [[i, f"{r.epoch}/{r.epochs}", _percent(r.train_error), _percent(r.test_error),
                 f"{r.epoch_seconds:.1f}" if r.epoch_seconds is not None else "-",
                 duration(_remaining(r)) if r.epoch_seconds is not None else "-",
                 r.status + (f" (retry {r.failures})" if r.failures else "")
                 + (f", collapsed at epoch {r.collapsed_epoch}" if r.collapsed_epoch is not None else "")]
                for i, r in active]
        return head + "\n" + text_table(["trial", "epoch", "train err", "test err", "s/epoch", "ETA", "status"],
                                         rows, indent="  ", right=(1, 2, 3, 4, 5))

    def eta(self) -> float | None:
        """Seconds until the sweep ends: each running Tune trial's measured remaining rounds, then the waiting
        ones (their rounds priced from the measured ones' seconds per unit of cost) on the slots as they free.
        None until some epoch has been measured."""
        packs = self.packs or {}
        groups = [(pid, [self.rows[i] for i in packs.get(pid, (pid,)) if i in self.rows])
                  for pid in self.schedule.epoch_cost] or [(i, [r]) for i, r in self.rows.items()]
        rates = [max(r.epoch_seconds for r in rows if r.epoch_seconds is not None) / self.schedule.epoch_cost[pid]
                 for pid, rows in groups if any(r.epoch_seconds is not None for r in rows)
                 and self.schedule.epoch_cost.get(pid)]
        measured = [r.epoch_seconds for _, rows in groups for r in rows if r.epoch_seconds is not None]
        if not measured:
            return None
        rate = sorted(rates)[len(rates) // 2] if rates else None  # seconds per unit of cost (median)

        def seconds(pid: str, rows: list[_Row]) -> float:
            todo = [r for r in rows if r.status in ("running", "pending", "interrupted")]
            if not todo:
                return 0.0
            per_round = max((r.epoch_seconds for r in todo if r.epoch_seconds is not None), default=None)
            if per_round is None:
                cost = self.schedule.epoch_cost.get(pid)
                per_round = rate * cost if rate is not None and cost else sorted(measured)[len(measured) // 2]
            return max(r.epochs - r.epoch for r in todo) * per_round

        running = [seconds(pid, rows) for pid, rows in groups if any(r.status == "running" for r in rows)]
        waiting = [seconds(pid, rows) for pid, rows in groups
                   if rows and all(r.status in ("pending", "interrupted") for r in rows)]
        return makespan(running, waiting, self.schedule.slots)

    def spans(self) -> dict[str, tuple[float, float]]:
        """(start, end) in monotonic seconds of each trial this run ran (end: now for one still running)."""
        now = time.monotonic()
        return {i: (r.started, r.ended or now) for i, r in self.rows.items() if r.started is not None}


def _remaining(r: _Row) -> float:
    return max(0, r.epochs - r.epoch) * (r.epoch_seconds or 0.0)


def _percent(x: Any) -> str:
    return f"{x:.2f}%" if isinstance(x, float) else "-"


def _error_line(trial: Any) -> str:
    path = getattr(trial, "error_file", None)
    try:
        lines = [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()] if path else []
    except OSError:
        lines = []
    return lines[-1][:200] if lines else "error"


class ErrorFiles(tune.Callback):
    """Writes trials/<id>/error.txt from the driver when a trial died without writing it (e.g. a lost worker)."""

    def __init__(self, folders: dict[str, list[str]]):
        self.folders = folders  # Tune trial (pack id) -> its trials' folders

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._write(trial)

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._write(trial)

    def _write(self, trial: Any) -> None:
        path = getattr(trial, "error_file", None)
        for folder in map(Path, self.folders.get(trial_name(trial), [])):
            if (folder / ERROR_FILE).exists() or _ended(folder):
                continue
            text = Path(path).read_text() if path and Path(path).exists() else "trial failed (no details from Ray)\n"
            try:
                write_atomic(folder / ERROR_FILE, text)
            except (OSError, UsageProblem):  # a full disk, a link: the summary still says the trial failed
                continue


def _ended(folder: Path) -> bool:
    """Whether the trial's summary says it has ended (a pack's finished member keeps a clean folder)."""
    try:
        return read_summary(folder).get("status") in COMPLETE
    except (OSError, ValueError, AttributeError):
        return False


def _collapse_seen(rec: dict[str, Any]) -> str:
    """The error that showed a member's collapse, for the live table's line."""
    if rec.get("collapse_seen_in") == "test_error":
        return (f"seen in test error: test error {_percent(rec.get('test_error'))} at chance while train error "
                f"{_percent(rec.get('train_error'))}")
    return f"train error {_percent(rec.get('train_error'))}"
