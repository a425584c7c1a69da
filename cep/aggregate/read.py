"""Reading an experiment folder: sweep.json's planned trials, each trial's folder, and the table's groups.

It reads plain files only: no Ray, no torch (a copy of the folder moved to another
machine reads the same), and never crashes on a half-written or damaged trial
folder: what cannot be read is a note (cep.results.read_folder), not an exception.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cep.aggregate.stats import Stat, as_float, finite, fmt_value
from cep.config import result_differences, rule_label
from cep.health import find_collapse
from cep.layout import SWEEP_FILE, read_sweep_json, trial_dir
from cep.results import STATUSES, FolderState, best_epoch, config_edit_line, config_edits, read_folder
from cep.safe_files import LinkRefused

# how the banner says each status; from the files alone an interrupted trial may still be running
STATUS_WORDS = {"finished": "finished", "diverged": "diverged", "collapsed": "stopped at its collapse",
                "errored": "errored", "interrupted": "running or interrupted", "pending": "pending",
                "stopped": "stopped by the search's scheduler"}
# The statuses whose numbers count in the means: trials that ran to their end, and trials that ended at their
# collapse (stop_on_collapse; leaving them out would hide the collapses in the means).
COUNTED = ("finished", "collapsed")


class NotAnExperiment(ValueError):
    """The directory is not a readable cep-sweep experiment directory (one line: what and what to do)."""


# ------------------------------------------------------------------ trials
@dataclass
class TrialResult:
    """A trial as the aggregator reads it back: its sweep.json entry (config as written, a plain dict: no
    validation, an older cep's record reads too) and what its folder holds (cep.layout.Trial is the planned one)."""

    id: str
    experiment: str
    grid: dict[str, Any]
    config: dict[str, Any]
    path: Path
    folder: FolderState = field(default_factory=lambda: FolderState("pending", 0, 0))

    @property
    def status(self) -> str:
        return self.folder.status

    @property
    def summary(self) -> dict[str, Any] | None:
        return self.folder.summary

    @property
    def metrics(self) -> list[dict[str, float]]:
        return self.folder.metrics

    @property
    def error(self) -> str | None:
        return self.folder.error

    @property
    def notes(self) -> list[str]:
        return self.folder.notes

    @property
    def action(self) -> str:
        return str(self.config.get("action", "train"))

    @property
    def variant(self) -> tuple[tuple[str, Any], ...]:
        """The grid values that make this trial's row of the table: everything but the seed."""
        return tuple((k, _hashable(v)) for k, v in self.grid.items() if k != "seed")

    def final(self, key: str) -> float:
        """Final value of a metric: summary.json's, else the last row of metrics.csv."""
        if self.summary is not None and isinstance(self.summary.get("final"), dict):
            return as_float(self.summary["final"].get(key))
        return self.metrics[-1].get(key, math.nan) if self.metrics else math.nan

    def best(self, key: str) -> float:
        if key == "test_error" and self.summary is not None and "best_test_error" in self.summary:
            return as_float(self.summary["best_test_error"])
        vals = [row.get(key, math.nan) for row in self.metrics]
        vals = [v for v in vals if finite(v)]
        return min(vals) if vals else math.nan

    @property
    def best_test_epoch(self) -> int | None:
        """The epoch of the best test error: summary.json's, else found in metrics.csv."""
        if self.summary is not None and finite(self.summary.get("best_test_epoch")):
            return int(self.summary["best_test_epoch"])
        best = best_epoch(self.metrics)
        return int(best["epoch"]) if best and finite(best.get("epoch")) else None

    @property
    def collapsed(self) -> dict[str, Any] | None:
        """summary.json's collapse record; a summary from before collapse detection has none, and then the
        same rule finds it in metrics.csv (cep.health.find_collapse)."""
        if self.summary is not None and "collapsed" in self.summary:
            c = self.summary["collapsed"]
            return c if isinstance(c, dict) else None
        return find_collapse(self.metrics) if self.action == "train" else None

    @property
    def collapsed_epoch(self) -> int | None:
        epoch = (self.collapsed or {}).get("epoch")
        return int(epoch) if finite(epoch) else None

    @property
    def epochs_done(self) -> int:
        return self.folder.epochs_done

    @property
    def epochs(self) -> int | None:
        e = self.config.get("epochs")
        return int(e) if finite(e) else None

    @property
    def angle_grad(self) -> float:
        return as_float(self.summary.get("angle_grad")) if self.summary else math.nan

    @property
    def measured_angle(self) -> list[float]:
        values = self.summary.get("measured_angle") if self.summary else None
        return [as_float(v) for v in values] if isinstance(values, list) else []

    @property
    def angle(self) -> float:
        """The initial weight angle: the mean measured one over the layer pairs, else the requested one."""
        measured = [a for a in self.measured_angle if finite(a)]
        return math.fsum(measured) / len(measured) if measured else as_float(self.config.get("angle", 0.0))

    @property
    def wall_seconds(self) -> float:
        if not self.summary:
            return math.nan
        return as_float(self.summary.get("wall_seconds", self.summary.get("seconds")))  # older gdu folders: seconds


def _hashable(v: Any) -> Any:
    return tuple(_hashable(x) for x in v) if isinstance(v, list) else v


def read_trial(experiment_dir: Path, entry: dict[str, Any]) -> TrialResult:
    """One trial's status and data from its folder; damaged or missing files become notes, never exceptions."""
    tid = str(entry["id"])
    parts = [p for p in tid.split("/") if p]
    config = entry.get("config") if isinstance(entry.get("config"), dict) else {}
    grid = entry.get("grid") if isinstance(entry.get("grid"), dict) else {}
    experiment = entry.get("experiment") or (parts[0] if parts else tid)
    trial = TrialResult(id=tid, experiment=str(experiment), grid=dict(grid), config=dict(config),
                  path=trial_dir(experiment_dir, "/".join(parts)))
    if any(p in (".", "..") for p in parts) or not parts:
        trial.notes.append("trial id is not a relative folder path; not read")
        return trial
    trial.folder = read_folder(trial.path, trial.action, trial.epochs or 1, root=experiment_dir)
    edits = config_edits(trial.path, trial.config) if not trial.folder.refused else []
    if edits:  # sweep.json's configuration is the trial's: the one used here
        trial.notes.append(config_edit_line(tid, edits))
    if trial.summary and isinstance(trial.summary.get("config"), dict):
        ran = trial.summary["config"]
        if trial.config.get("seed") is None and ran.get("seed") is not None:
            trial.config["seed"] = ran["seed"]  # drawn by the trainer and recorded
        differ = result_differences(ran, trial.config)
        if differ:
            trial.notes.append(f"summary.json config differs from sweep.json in {', '.join(differ)} (stale folder?)")
    return trial


# -------------------------------------------------------------- experiment
def count_statuses(trials: Sequence[TrialResult]) -> dict[str, int]:
    return {s: sum(t.status == s for t in trials) for s in STATUSES}


@dataclass
class Group:
    """One row of the table: the trials of an experiment with the same grid values but the seed."""

    experiment: str
    variant: tuple[tuple[str, Any], ...]
    trials: list[TrialResult]

    @property
    def label(self) -> str:
        return " ".join([self.experiment] + [f"{k}={fmt_value(v)}" for k, v in self.variant])

    @property
    def config(self) -> dict[str, Any]:
        return self.trials[0].config

    @property
    def rule(self) -> str:
        return rule_label(self.config.get("rule", "?"), self.config.get("continual"))

    @property
    def done(self) -> list[TrialResult]:
        """The trials whose numbers count: finished ones (and ones stopped at their collapse) with a finite
        final test error."""
        return [t for t in self.trials if t.status in COUNTED and finite(t.final("test_error"))]

    @property
    def collapsed(self) -> list[TrialResult]:
        """The trials that collapsed, whether they trained on (finished) or stopped there."""
        return [t for t in self.trials if t.collapsed_epoch is not None]

    def collapsed_text(self) -> str:
        """'2 of 5 (epochs 41, 63)': the Collapsed column."""
        epochs = sorted(t.collapsed_epoch for t in self.collapsed if t.collapsed_epoch is not None)
        at = f" (epoch{'s' if len(epochs) > 1 else ''} {', '.join(map(str, epochs))})" if epochs else ""
        return f"{len(epochs)} of {len(self.trials)}{at}"

    def stat(self, key: str, best: bool = False) -> Stat:
        return Stat.of(t.best(key) if best else t.final(key) for t in self.done)

    @property
    def angle_grad(self) -> Stat:
        return Stat.of(t.angle_grad for t in self.done)

    def status_text(self) -> str:
        """'3/5 finished, 1 running (epoch 12 of 100), 1 errored': the Trials column."""
        c = count_statuses(self.trials)
        parts = [f"{c['finished']}/{len(self.trials)} finished"]
        counted = c["finished"] + c["collapsed"]
        if counted > len(self.done):
            parts.append(f"{counted - len(self.done)} of them without a finite final error")
        for s in STATUSES[1:]:
            if not c[s]:
                continue
            part = f"{c[s]} {STATUS_WORDS[s]}"
            if s == "interrupted":
                done = sorted({t.epochs_done for t in self.trials if t.status == "interrupted"})
                at = str(done[0]) if len(done) == 1 else f"{done[0]}–{done[-1]}"
                part += f" (epoch {at} of {self.config.get('epochs', '?')})"
            parts.append(part)
        return ", ".join(parts)


@dataclass
class Experiment:
    """An experiment directory as read: the sweep's description and every planned trial."""

    path: Path
    sweep: dict[str, Any]
    trials: list[TrialResult]

    @property
    def name(self) -> str:
        return str(self.sweep.get("name") or self.path.name)

    @property
    def train_trials(self) -> list[TrialResult]:
        return [t for t in self.trials if t.action == "train"]

    @property
    def gdu_trials(self) -> list[TrialResult]:
        return [t for t in self.trials if t.action == "gdu"]

    @functools.cached_property
    def groups(self) -> list[Group]:
        """Table rows in the order sweep.json lists their first trial."""
        rows: dict[tuple[str, Any], Group] = {}
        for t in self.train_trials:
            key = (t.experiment, t.variant)
            if key not in rows:
                rows[key] = Group(t.experiment, t.variant, [])
            rows[key].trials.append(t)
        return list(rows.values())

    @property
    def partial(self) -> bool:
        """Anything still to run or rerun (diverged trials have ended: their outcome is final)."""
        c = count_statuses(self.trials)
        return bool(c["interrupted"] or c["errored"] or c["pending"])

    @property
    def banner(self) -> str:
        c = count_statuses(self.trials)
        total = len(self.trials)
        rest = [f"{c[s]} {STATUS_WORDS[s]}" for s in STATUSES[1:] if c[s]]
        if self.partial:
            return (f"PARTIAL: {c['finished']} of {total} trials finished"
                    + (f" ({', '.join(rest)})" if rest else "") + "; numbers use finished trials only"
                    + (" (and those stopped at their collapse)" if c["collapsed"] else ""))
        return f"COMPLETE: {c['finished']} of {total} trials finished" + (f" ({', '.join(rest)})" if rest else "")


def _hint(path: Path) -> str:
    """Where a sweep.json is near `path`: the usual mistakes are the storage folder or a subfolder."""
    below = sorted(p.parent for p in path.glob(f"*/{SWEEP_FILE}"))
    if below:
        names = ", ".join(str(p) for p in below[:3]) + (" ..." if len(below) > 3 else "")
        return f"; did you mean {names}?"
    for parent in list(path.resolve().parents)[:4]:
        if (parent / SWEEP_FILE).is_file():
            return f"; did you mean {parent}?"
    return "; give the folder <storage>/<sweep name>/ that cep-sweep wrote"


def load_experiment(path: str | Path) -> Experiment:
    """Read an experiment directory; raises NotAnExperiment with a one-line reason."""
    path = Path(path)
    if not path.exists():
        raise NotAnExperiment(f"{path} does not exist")
    if not path.is_dir():
        raise NotAnExperiment(f"{path} is not a directory; give an experiment directory (it holds {SWEEP_FILE})")
    if not any(path.iterdir()):
        raise NotAnExperiment(f"{path} is empty, not an experiment directory"
                              "; give the folder <storage>/<sweep name>/ that cep-sweep wrote")
    sweep_path = path / SWEEP_FILE
    if not sweep_path.is_file():
        raise NotAnExperiment(f"{path} is not an experiment directory (no {SWEEP_FILE}){_hint(path)}")
    try:
        sweep = read_sweep_json(path)
    except LinkRefused as e:
        raise NotAnExperiment(str(e)) from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise NotAnExperiment(f"{sweep_path} is unreadable: {e}") from None
    trials = sweep.get("trials") if isinstance(sweep, dict) else None
    if not isinstance(trials, list) or not trials:
        raise NotAnExperiment(f"{sweep_path} lists no trials (expected a non-empty 'trials' list)")
    bad = [i for i, t in enumerate(trials) if not (isinstance(t, dict) and isinstance(t.get("id"), str))]
    if bad:
        raise NotAnExperiment(f"{sweep_path}: trials[{bad[0]}] has no string 'id' ({len(bad)} such entries)")
    return Experiment(path, sweep, [read_trial(path, t) for t in trials])


