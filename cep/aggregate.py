"""The aggregator: reads a sweep's experiment directory and writes its tables and figures into `summary/`.

It owns reading (sweep.json, each trial's summary.json, metrics.csv, error.txt),
the status of every trial (finished, diverged, running, errored, pending), the
numbers (mean ± std over seeds per experiment row, the published values of
`published.json` when the configuration matches) and the text outputs
(trials.csv, groups.csv, table.md, the terminal table). Figures are drawn by
`cep.aggregate_plots` from the data prepared here.

It reads plain files only: no Ray, no torch (a copy of the directory moved to
another machine aggregates the same), and it never crashes on a half-written
or damaged trial folder: what cannot be read is reported, not raised. The same
directory always gives byte-identical outputs.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cep.config import FIELD_NAMES
from cep.results import METRICS_FILE, SUMMARY_FILE, read_metrics, read_summary, write_atomic
from cep.sweep_store import ERROR_FILE, SWEEP_FILE, trial_dir  # the experiment folder's layout

SUMMARY_DIR = "summary"
PUBLISHED_FILE = Path(__file__).with_name("published.json")

STATUSES = ("finished", "diverged", "running", "errored", "pending")
STATUS_WORDS = {"finished": "finished", "diverged": "diverged", "running": "running or interrupted",
                "errored": "errored", "pending": "pending"}
# outputs of this module and of aggregate_plots; stale ones (a figure that no longer applies) are removed
OUTPUT_FILES = ("trials.csv", "groups.csv", "table.md", "gdu_agreement.csv", "angle_curve.csv",
                "fig4_angle_curve.png", "fig4_angle_curve.pdf", "learning_curves.png",
                "fig5a_angle_grad.png", "fig5a_angle_grad.pdf")
# config fields that do not change what a trial computes (paths differ on another machine): a trial folder whose
# config differs from sweep.json in any other field is flagged as stale
NOT_RESULT_FIELDS = frozenset({"seed", "out_dir", "data_dir", "device", "dtype", "checkpoint", "gdu_units",
                               "test_batch_size", "angle_grad"})
FIGURE_TITLES = {"fig4_angle_curve": "Final error versus initial angle between V and Wᵀ (Fig. 4)",
                 "learning_curves": "Learning curves",
                 "fig5a_angle_grad": "Final error versus initial angle between the EP update and the BPTT gradient "
                                     "(Fig. 5a)"}
TABLE_FILES = {"trials.csv": "one row per trial (status, final and best errors, angles, every trial field)",
               "groups.csv": "the table's numbers at full precision",
               "angle_curve.csv": "the points of the Fig. 4 curves",
               "gdu_agreement.csv": "per-layer agreement of the gradient-analysis trials"}
MAX_LISTED = 20  # trials listed by name in the "needs attention" part of table.md


class NotAnExperiment(ValueError):
    """The directory is not a readable cep-sweep experiment directory (one line: what and what to do)."""


# ----------------------------------------------------------------- numbers
def finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def as_float(x: Any) -> float:
    """A number from JSON/CSV, NaN for anything missing or not numeric."""
    return float(x) if finite(x) else math.nan


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (n - 1) of the finite values; std is NaN below two values."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Stat:
        vals = [float(v) for v in values if finite(v)]
        if not vals:
            return cls(math.nan, math.nan, 0)
        return cls(math.fsum(vals) / len(vals), statistics.stdev(vals) if len(vals) > 1 else math.nan, len(vals))

    def fmt(self, digits: int = 2) -> str:
        """'2.31 ± 0.05'; one value alone has no ± part; none gives '—'."""
        if self.n == 0:
            return "—"
        if self.n == 1:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


def fmt_value(v: Any) -> str:
    """Short label text of a trial field value (45.0 -> '45', [10, 512, 784] -> '10-512-784')."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "-".join(fmt_value(x) for x in v)
    return str(v)


def rule_label(config: dict[str, Any]) -> str:
    """EP, C-EP, VF or C-VF: the learning rule of spec section 4.5."""
    return ("C-" if config.get("continual") else "") + str(config.get("rule", "?")).upper()


def hidden_layers(config: dict[str, Any]) -> int | None:
    sizes = config.get("size_tab")
    return len(sizes) - 2 if isinstance(sizes, list) and len(sizes) >= 2 else None


# ------------------------------------------------------------------ trials
@dataclass
class Trial:
    """One trial of the sweep: what sweep.json planned and what its folder holds."""

    id: str
    experiment: str
    grid: dict[str, Any]
    config: dict[str, Any]
    path: Path
    status: str = "pending"
    summary: dict[str, Any] | None = None
    metrics: list[dict[str, float]] = field(default_factory=list)
    error: str | None = None  # first line of error.txt
    notes: list[str] = field(default_factory=list)  # what could not be read, and oddities

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
    def epochs_done(self) -> int:
        if self.summary is not None and finite(self.summary.get("epochs_done")):
            return int(self.summary["epochs_done"])
        return len(self.metrics)

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
        return as_float(self.summary.get("wall_seconds", self.summary.get("seconds")))  # gdu trials: seconds


def _hashable(v: Any) -> Any:
    return tuple(_hashable(x) for x in v) if isinstance(v, list) else v


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return "(error.txt is empty)"
    # a Python traceback ends with the exception line, which is the informative one
    line = lines[-1] if lines[0].startswith("Traceback") else lines[0]
    return line if len(line) <= 200 else line[:197] + "..."


def read_trial(experiment_dir: Path, entry: dict[str, Any]) -> Trial:
    """One trial's status and data from its folder; damaged or missing files become notes, never exceptions."""
    tid = str(entry["id"])
    parts = [p for p in tid.split("/") if p]
    config = entry.get("config") if isinstance(entry.get("config"), dict) else {}
    grid = entry.get("grid") if isinstance(entry.get("grid"), dict) else {}
    experiment = entry.get("experiment") or (parts[0] if parts else tid)
    trial = Trial(id=tid, experiment=str(experiment), grid=dict(grid), config=dict(config),
                  path=trial_dir(experiment_dir, "/".join(parts)))
    if any(p in (".", "..") for p in parts) or not parts:
        trial.notes.append("trial id is not a relative folder path; not read")
        return trial
    if not trial.path.is_dir():
        return trial  # pending: not started yet
    if (trial.path / SUMMARY_FILE).exists():
        try:
            summary = read_summary(trial.path)
            if not isinstance(summary, dict):
                raise ValueError("not a JSON object")
            trial.summary = summary
        except (OSError, ValueError) as e:
            trial.notes.append(f"{SUMMARY_FILE} unreadable ({type(e).__name__}: {e})")
    elif trial.action == "train":
        trial.notes.append(f"no {SUMMARY_FILE} yet (no epoch reported)")
    if (trial.path / METRICS_FILE).exists():
        try:
            trial.metrics = read_metrics(trial.path)
        except (OSError, ValueError, csv.Error) as e:
            trial.notes.append(f"{METRICS_FILE} unreadable ({type(e).__name__}: {e})")
    elif trial.action == "train" and trial.summary is not None and trial.summary.get("epochs_done"):
        trial.notes.append(f"no {METRICS_FILE}")
    if (trial.path / ERROR_FILE).exists():
        try:
            trial.error = _first_line((trial.path / ERROR_FILE).read_text(errors="replace"))
        except OSError as e:
            trial.error = f"error.txt unreadable ({e})"

    state = trial.summary.get("status") if trial.summary else None
    if state in ("finished", "diverged"):
        trial.status = str(state)
        if trial.error:
            trial.notes.append("error.txt from an earlier, retried attempt")
    elif trial.error:
        trial.status = "errored"
    else:
        trial.status = "running"
    if trial.summary and isinstance(trial.summary.get("config"), dict):
        ran = trial.summary["config"]
        if trial.config.get("seed") is None and ran.get("seed") is not None:
            trial.config["seed"] = ran["seed"]  # drawn by the trainer and recorded
        differ = sorted(k for k in set(ran) | set(trial.config)
                        if k not in NOT_RESULT_FIELDS and ran.get(k) != trial.config.get(k))
        if differ:
            trial.notes.append(f"{SUMMARY_FILE} config differs from sweep.json in {', '.join(differ)} (stale folder?)")
    return trial


# -------------------------------------------------------------- experiment
def count_statuses(trials: Sequence[Trial]) -> dict[str, int]:
    return {s: sum(t.status == s for t in trials) for s in STATUSES}


@dataclass
class Group:
    """One row of the table: the trials of an experiment with the same grid values but the seed."""

    experiment: str
    variant: tuple[tuple[str, Any], ...]
    trials: list[Trial]

    @property
    def label(self) -> str:
        return " ".join([self.experiment] + [f"{k}={fmt_value(v)}" for k, v in self.variant])

    @property
    def config(self) -> dict[str, Any]:
        return self.trials[0].config

    @property
    def done(self) -> list[Trial]:
        """The trials whose numbers count: finished ones with a finite final test error."""
        return [t for t in self.trials if t.status == "finished" and finite(t.final("test_error"))]

    def stat(self, key: str, best: bool = False) -> Stat:
        return Stat.of(t.best(key) if best else t.final(key) for t in self.done)

    @property
    def angle_grad(self) -> Stat:
        return Stat.of(t.angle_grad for t in self.done)

    def status_text(self) -> str:
        """'3/5 finished, 1 running (epoch 12 of 100), 1 errored': the Trials column."""
        c = count_statuses(self.trials)
        parts = [f"{c['finished']}/{len(self.trials)} finished"]
        if c["finished"] > len(self.done):
            parts.append(f"{c['finished'] - len(self.done)} of them without a finite final error")
        for s in STATUSES[1:]:
            if not c[s]:
                continue
            part = f"{c[s]} {s}"
            if s == "running":
                done = sorted({t.epochs_done for t in self.trials if t.status == "running"})
                at = str(done[0]) if len(done) == 1 else f"{done[0]}–{done[-1]}"
                part += f" (epoch {at} of {self.config.get('epochs', '?')})"
            parts.append(part)
        return ", ".join(parts)


@dataclass
class Experiment:
    """An experiment directory as read: the sweep's description and every planned trial."""

    path: Path
    sweep: dict[str, Any]
    trials: list[Trial]

    @property
    def name(self) -> str:
        return str(self.sweep.get("name") or self.path.name)

    @property
    def train_trials(self) -> list[Trial]:
        return [t for t in self.trials if t.action == "train"]

    @property
    def gdu_trials(self) -> list[Trial]:
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
        return bool(c["running"] or c["errored"] or c["pending"])

    @property
    def banner(self) -> str:
        c = count_statuses(self.trials)
        total = len(self.trials)
        rest = [f"{c[s]} {STATUS_WORDS[s]}" for s in STATUSES[1:] if c[s]]
        if self.partial:
            return (f"PARTIAL: {c['finished']} of {total} trials finished"
                    + (f" ({', '.join(rest)})" if rest else "") + "; numbers use finished trials only")
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
        sweep = json.loads(sweep_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise NotAnExperiment(f"{sweep_path} is unreadable: {e}") from None
    trials = sweep.get("trials") if isinstance(sweep, dict) else None
    if not isinstance(trials, list) or not trials:
        raise NotAnExperiment(f"{sweep_path} lists no trials (expected a non-empty 'trials' list)")
    bad = [i for i, t in enumerate(trials) if not (isinstance(t, dict) and isinstance(t.get("id"), str))]
    if bad:
        raise NotAnExperiment(f"{sweep_path}: trials[{bad[0]}] has no string 'id' ({len(bad)} such entries)")
    return Experiment(path, sweep, [read_trial(path, t) for t in trials])


# ---------------------------------------------------------- published rows
@dataclass(frozen=True)
class Match:
    """The paper's number for a row, or why there is none."""

    value: Any  # a float (test error) or a [low, high] pair (angle-grad); None when no match
    name: str | None  # the published row compared with
    why: str  # empty when matched


@functools.cache
def load_published() -> dict[str, Any]:
    """The paper's numbers with their source (cep/published.json); read once."""
    return json.loads(PUBLISHED_FILE.read_text())


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if finite(a) and finite(b) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def match_published(config: dict[str, Any], key: str, published: dict[str, Any] | None = None,
                    shown: Iterable[str] = ()) -> Match:
    """The published `key` (test_error or angle_grad) for a configuration, matched on every field that
    changes the result (the dataset included), not on the name. `shown`: fields whose value the row's
    label already shows; `why` names them without it, so that rows differing only there share a note."""
    pub = published or load_published()
    ignore = set(pub.get("angle_grad_ignores", {})) if key == "angle_grad" else set()

    def wanted(row: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in {**pub["common"], **row["config"]}.items() if k not in ignore}

    def differ(row: dict[str, Any]) -> list[str]:
        return [k for k, v in wanted(row).items() if not _same(config.get(k), v)]

    family = [r for r in pub["rows"] if (r["config"]["rule"], r["config"]["continual"], len(r["config"]["size_tab"]))
              == (config.get("rule"), bool(config.get("continual")), len(config.get("size_tab") or []))]
    for row in family:
        if not differ(row):
            return Match(row[key], row["name"], "")
    if not family:
        depth = hidden_layers(config)
        return Match(None, None, f"the paper has no {rule_label(config)} row with {depth} hidden layer"
                                 f"{'s' if depth != 1 else ''}")
    row, shown = family[0], set(shown)

    def value(v: Any) -> str:  # null in the sample-count fields means every image
        return "all" if v is None else fmt_value(v)

    why = ", ".join(f"{k}{'' if k in shown else ' ' + (value(config[k]) if k in config else 'unset')}"
                    f" (paper {value(wanted(row)[k])})" for k in differ(row))
    return Match(None, row["name"], f"differs from the paper's {row['name']} in {why}")


def fmt_published_angle(value: Any) -> str:
    if not value:
        return "—"
    lo, hi = value
    return f"≈{lo:g}" if lo == hi else f"{lo:g}–{hi:g}"


# ------------------------------------------------------------ table model
@dataclass
class TableRow:
    group: Group
    test: Stat
    train: Stat
    best_test: Stat
    angle_grad: Stat
    paper_test: Match
    paper_angle: Match
    note: int | None = None  # footnote number when the paper column is empty


@dataclass
class Table:
    """The Fig. 4 table: rows, footnotes, and whether the angle-grad columns apply."""

    rows: list[TableRow]
    notes: list[str]
    with_angle_grad: bool

    def header(self) -> list[str]:
        h = ["Experiment", "Rule", "Hidden", "Seeds", "Test error (%)", "Paper test (%)", "Train error (%)"]
        if self.with_angle_grad:
            h += ["Angle-grad (°)", "Paper angle-grad (°)"]
        return h + ["Trials"]

    def cells(self, row: TableRow) -> list[str]:
        g = row.group
        paper = f"{row.paper_test.value:.2f}" if row.paper_test.value is not None else "—"
        if row.note is not None:
            paper += f" [{row.note}]"
        c = [g.label, rule_label(g.config), fmt_value(hidden_layers(g.config)), str(row.test.n),
             row.test.fmt(), paper, row.train.fmt()]
        if self.with_angle_grad:
            c += [row.angle_grad.fmt(1), fmt_published_angle(row.paper_angle.value)]
        return c + [g.status_text()]


def build_table(exp: Experiment, published: dict[str, Any] | None = None) -> Table:
    """The table's rows; rows without a published number share one footnote per reason."""
    pub = published or load_published()
    rows: list[TableRow] = []
    reasons: dict[str, list[str]] = {}  # why -> labels of the rows it explains
    for g in exp.groups:
        shown = [k for k, _ in g.variant]
        row = TableRow(g, g.stat("test_error"), g.stat("train_error"), g.stat("test_error", best=True),
                       g.angle_grad, match_published(g.config, "test_error", pub, shown),
                       match_published(g.config, "angle_grad", pub, shown))
        if row.paper_test.value is None:
            reasons.setdefault(row.paper_test.why, []).append(g.label)
            row.note = list(reasons).index(row.paper_test.why) + 1
        rows.append(row)
    notes = [f"{', '.join(labels) if len(labels) <= 3 else f'{labels[0]}, …, {labels[-1]} ({len(labels)} rows)'}"
             f": no published number: {why}." for why, labels in reasons.items()]
    with_angle = any(finite(t.angle_grad) for t in exp.train_trials)
    return Table(rows, notes, with_angle)


# ------------------------------------------------------------ figure data
@dataclass
class AnglePoint:
    """One angle of a Fig. 4 curve: x is the measured initial angle where recorded (else the requested one)."""

    angle: float  # requested
    x: Stat
    measured: bool
    test: Stat
    train: Stat


@dataclass
class AngleLine:
    label: str
    points: list[AnglePoint]


def angle_lines(exp: Experiment) -> list[AngleLine]:
    """Fig. 4 curves: one line per experiment (and per other grid value), one point per requested angle
    that has finished trials. Only lines whose trials span two or more angles: a sweep without an
    angle dimension gets none."""
    lines: dict[tuple[str, Any], dict[float, list[Trial]]] = {}
    for t in exp.train_trials:
        key = (t.experiment, tuple((k, v) for k, v in t.variant if k != "angle"))
        lines.setdefault(key, {}).setdefault(as_float(t.config.get("angle", 0.0)), []).append(t)
    out = []
    for (experiment, rest), by_angle in lines.items():
        if len(by_angle) < 2:
            continue
        points = []
        for angle in sorted(by_angle):
            done = [t for t in by_angle[angle] if t.status == "finished" and finite(t.final("test_error"))]
            if done:
                points.append(AnglePoint(angle, Stat.of(t.angle for t in done), any(t.measured_angle for t in done),
                                         Stat.of(t.final("test_error") for t in done),
                                         Stat.of(t.final("train_error") for t in done)))
        label = " ".join([experiment] + [f"{k}={fmt_value(v)}" for k, v in rest])
        out.append(AngleLine(label, points))
    return out if any(line.points for line in out) else []


def angle_curve_csv(lines: list[AngleLine]) -> str:
    return _csv(["line", "angle", "x_angle_mean", "x_is_measured", "test_error_mean", "test_error_std",
                 "train_error_mean", "train_error_std", "n"],
                [[ln.label, p.angle, p.x.mean, p.measured, p.test.mean, p.test.std, p.train.mean, p.train.std,
                  p.test.n] for ln in lines for p in ln.points])


@dataclass
class Run:
    """One trial's learning curve."""

    seed: Any
    status: str
    epoch: list[float]
    test: list[float]
    train: list[float]


@dataclass
class Curve:
    """The seeds of one table row and their per-epoch mean (over the seeds that reached the epoch)."""

    label: str
    runs: list[Run]
    epoch: list[float]
    test: list[float]
    train: list[float]


@dataclass
class Panel:
    experiment: str
    seeds: int
    curves: list[Curve]


def learning_panels(exp: Experiment) -> list[Panel]:
    """Learning curves, one panel per experiment, one curve per table row; running trials included."""
    panels: dict[str, Panel] = {}
    for g in exp.groups:
        runs = [Run(t.config.get("seed"), t.status, [r.get("epoch", math.nan) for r in t.metrics],
                    [r.get("test_error", math.nan) for r in t.metrics],
                    [r.get("train_error", math.nan) for r in t.metrics]) for t in g.trials if t.metrics]
        if not runs:
            continue
        epochs = sorted({e for r in runs for e in r.epoch if finite(e)})

        def mean(attr: str, epoch: float, runs: list[Run] = runs) -> float:
            return Stat.of(getattr(r, attr)[i] for r in runs for i, e in enumerate(r.epoch) if e == epoch).mean

        curve = Curve(" ".join(f"{k}={fmt_value(v)}" for k, v in g.variant), runs, epochs,
                      [mean("test", e) for e in epochs], [mean("train", e) for e in epochs])
        panel = panels.setdefault(g.experiment, Panel(g.experiment, 0, []))
        panel.curves.append(curve)
    for p in panels.values():
        p.seeds = len({r.seed for c in p.curves for r in c.runs})
    return list(panels.values())


@dataclass
class Fig5aPoint:
    """A table row in Fig. 5(a): angle-grad against final errors, mean ± std over finished seeds."""

    label: str
    rule: str
    hidden: int | None
    angle: Stat
    test: Stat
    train: Stat
    seeds: list[tuple[float, float, float]]  # (angle-grad, test, train) of each finished trial
    diverged: list[tuple[float, float, float]]  # same, last finite epoch of the diverged ones


def fig5a_points(exp: Experiment) -> list[Fig5aPoint]:
    """Rows whose trials recorded angle-grad (finished or diverged ones); empty when none did."""
    out = []
    for g in exp.groups:
        def triple(t: Trial) -> tuple[float, float, float]:
            return t.angle_grad, t.final("test_error"), t.final("train_error")

        seeds = [triple(t) for t in g.done if finite(t.angle_grad)]
        diverged = [triple(t) for t in g.trials if t.status == "diverged" and finite(t.angle_grad)]
        if seeds or diverged:
            out.append(Fig5aPoint(g.label, rule_label(g.config), hidden_layers(g.config),
                                  Stat.of(s[0] for s in seeds), Stat.of(s[1] for s in seeds),
                                  Stat.of(s[2] for s in seeds), seeds, diverged))
    return out


# ----------------------------------------------------------------- writing
def _csv_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ""
    if isinstance(v, (list, tuple)):
        return " ".join(_csv_value(x) for x in v)
    return str(v)


def _csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow([_csv_value(v) for v in r])
    return buf.getvalue()


TRIAL_COLUMNS = ("id", "experiment", "status", "epochs_done", "final_test_error", "final_train_error",
                 "best_test_error", "best_train_error", "final_test_loss", "final_train_loss", "angle_grad_deg",
                 "measured_angle_deg", "wall_seconds", "host", "note")


def trials_csv(exp: Experiment) -> str:
    """One row per trial: status, final and best errors (%), angles (degrees), then every trial field."""
    extra = sorted({k for t in exp.trials for k in t.config} - set(FIELD_NAMES))
    fields = [*FIELD_NAMES, *extra]
    rows = []
    for t in exp.trials:
        note = [f"error: {t.error}"] if t.error else []
        rows.append([t.id, t.experiment, t.status, t.epochs_done if t.status != "pending" else None,
                     t.final("test_error"), t.final("train_error"), t.best("test_error"), t.best("train_error"),
                     t.final("test_loss"), t.final("train_loss"), t.angle_grad, t.measured_angle or None,
                     t.wall_seconds, t.summary.get("host") if t.summary else None, "; ".join(note + t.notes),
                     *[t.config.get(k) for k in fields]])
    return _csv([*TRIAL_COLUMNS, *fields], rows)


def groups_csv(table: Table) -> str:
    """The table's numbers at full precision, for other tools."""
    header = ["row", "experiment", "variant", "rule", "hidden_layers", "trials", *STATUSES]
    for name in ("test_error", "train_error", "best_test_error", "angle_grad_deg"):
        header += [f"{name}_mean", f"{name}_std", f"{name}_n"]
    header += ["paper_row", "paper_test_error", "paper_angle_grad_low", "paper_angle_grad_high", "paper_note"]
    rows = []
    for r in table.rows:
        g = r.group
        c = count_statuses(g.trials)
        angle = r.paper_angle.value or (None, None)
        rows.append([g.label, g.experiment, " ".join(f"{k}={fmt_value(v)}" for k, v in g.variant),
                     rule_label(g.config), hidden_layers(g.config), len(g.trials), *[c[s] for s in STATUSES],
                     *[x for s in (r.test, r.train, r.best_test, r.angle_grad) for x in (s.mean, s.std, s.n)],
                     r.paper_test.name, r.paper_test.value, angle[0], angle[1], r.paper_test.why])
    return _csv(header, rows)


def gdu_rows(exp: Experiment) -> list[dict[str, Any]]:
    """Per-layer agreement rows of every gradient-analysis trial (gdu/agreement.csv, else summary.json)."""
    out = []
    for t in exp.gdu_trials:
        rows: list[dict[str, Any]] = []
        path = t.path / "gdu" / "agreement.csv"
        if path.is_file():
            try:
                with open(path, newline="") as f:
                    rows = list(csv.DictReader(f))
            except (OSError, csv.Error, UnicodeDecodeError) as e:
                t.notes.append(f"gdu/agreement.csv unreadable ({e})")
        elif t.summary and isinstance(t.summary.get("agreement"), list):
            rows = [r for r in t.summary["agreement"] if isinstance(r, dict)]
        for r in rows:
            out.append({"id": t.id, "name": r.get("name"), "kind": r.get("kind"),
                        "cosine": _num(r.get("cosine")), "rel_rmse": _num(r.get("rel_rmse"))})
    return out


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def gdu_figures(t: Trial) -> list[Path]:
    folder = t.path / "gdu"
    return sorted(p for p in folder.glob("*") if p.suffix in (".png", ".pdf")) if folder.is_dir() else []


# ------------------------------------------------------------ text tables
def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain aligned table for the terminal."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    esc = [[str(c).replace("|", "\\|") for c in r] for r in [header, *rows]]
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in esc[1:]])


def attention(exp: Experiment) -> list[str]:
    """One line per trial that is not finished or has a note; pending ones summarised."""
    lines = []
    for t in exp.trials:
        if t.status == "pending":
            continue
        bits = []
        if t.status == "errored":
            bits.append(f"errored: {t.error}")
        elif t.status == "running":
            bits.append(f"running or interrupted at epoch {t.epochs_done} of {t.epochs}")
        elif t.status == "diverged":
            at = t.summary.get("diverged_at_epoch") if t.summary else None
            bits.append(f"diverged{f' at epoch {at}' if at else ''}; left out of the means")
        elif t.action == "train" and not finite(t.final("test_error")):
            bits.append("finished without a finite final test error; left out of the means")
        bits += t.notes
        if bits:
            lines.append(f"{t.id}: " + "; ".join(bits))
    pending = [t.id for t in exp.trials if t.status == "pending"]
    if pending:
        shown = ", ".join(pending[:5]) + (f" and {len(pending) - 5} more" if len(pending) > 5 else "")
        lines.append(f"{len(pending)} pending (not started): {shown}")
    return lines


def table_md(exp: Experiment, table: Table, written: Sequence[Path], gdu: list[dict[str, Any]]) -> str:
    """table.md: the banner, the Fig. 4 table with the paper's numbers, what needs attention, the figures,
    the other files (`written`: what this aggregation wrote before it)."""
    figures = [p for p in written if p.suffix in (".png", ".pdf")]
    out = [f"# {exp.name}", ""]
    if exp.sweep.get("description"):
        out += [str(exp.sweep["description"]), ""]
    out += [f"**{exp.banner}**", ""]
    if table.rows:
        out += ["## Error rates (the table of Fig. 4)", "", md_table(table.header(), [table.cells(r) for r in
                                                                                   table.rows]), ""]
        out += ["Final MNIST error rates in %, mean ± sample standard deviation (n − 1) over the finished "
                "seeds of each row (Seeds counts them). Paper: the published numbers "
                f"({load_published()['paper']}), shown only where the row's configuration matches the "
                "published one field by field, dataset included.", ""]
        if table.with_angle_grad:
            out += ["Angle-grad: initial angle between the total EP update and the total BPTT gradient "
                    "(Fig. 5a); paper values are approximate, read off the published plot.", ""]
        out += [f"[{i}] {n}" for i, n in enumerate(table.notes, 1)] + ([""] if table.notes else [])
    lines = attention(exp)
    if lines:
        out += ["## Trials needing attention", ""]
        out += [f"- {ln}" for ln in lines[:MAX_LISTED]]
        if len(lines) > MAX_LISTED:
            out.append(f"- ... and {len(lines) - MAX_LISTED} more: see trials.csv")
        out.append("")
        if any(t.status == "running" for t in exp.trials):
            out += ["Running or interrupted: the trial's folder says it has not ended; from the files alone the "
                    "aggregator cannot tell whether the sweep is still running it.", ""]
    if exp.gdu_trials:
        out += ["## Gradient analysis (EP updates versus BPTT gradients)", ""]
        for t in exp.gdu_trials:
            out += [f"### {t.id} ({t.status})", ""]
            if finite(t.angle_grad):
                out += [f"Angle between the total EP update and the total BPTT gradient: {t.angle_grad:.1f}°", ""]
            rows = [r for r in gdu if r["id"] == t.id]
            if rows:
                out += [md_table(["Layer", "Kind", "Cosine", "Relative RMSE"],
                                 [[str(r["name"]), str(r["kind"]), f"{r['cosine']:.4f}", f"{r['rel_rmse']:.4f}"]
                                  for r in rows]), ""]
            figs = gdu_figures(t)
            if figs:
                out += ["Figures: " + ", ".join(f"[{p.name}]({_rel(p, exp.path / SUMMARY_DIR)})" for p in figs), ""]
                out += [f"![{t.id}: {p.stem}]({_rel(p, exp.path / SUMMARY_DIR)})" for p in figs if p.suffix == ".png"]
                out.append("")
    if figures:
        out += ["## Figures", ""]
        for stem, what in FIGURE_TITLES.items():
            paths = [p for p in figures if p.stem == stem]
            if paths:
                links = " ".join(f"[{p.suffix[1:].upper()}]({p.name})" for p in paths)
                out += [f"{what} ({links})", "", f"![{what}]({stem}.png)", ""]
    out += ["## Files", ""] + [f"- {p.name}: {TABLE_FILES[p.name]}" for p in written if p.name in TABLE_FILES]
    return "\n".join(out) + "\n"


def _rel(p: Path, start: Path) -> str:
    import os
    return Path(os.path.relpath(p, start)).as_posix()


# --------------------------------------------------------------- the entry
@dataclass
class Aggregate:
    """What one aggregation read and wrote."""

    experiment: Experiment
    table: Table
    summary_dir: Path
    files: list[Path]
    warnings: list[str]

    @property
    def partial(self) -> bool:
        return self.experiment.partial


def aggregate_experiment(experiment_dir: str | Path, plots: bool = True, echo: bool = False) -> Aggregate:
    """Read an experiment directory and (re)write `summary/` in it; `echo` prints the terminal report.

    Safe while the sweep runs or after it died (partial results are marked) and
    on damaged trial folders; raises NotAnExperiment only when the directory
    itself is not an experiment. A figure that fails to draw is reported in
    `warnings` and the rest is still written.
    """
    exp = load_experiment(experiment_dir)
    out = exp.path / SUMMARY_DIR
    out.mkdir(exist_ok=True)
    table = build_table(exp)
    gdu = gdu_rows(exp)
    files: list[Path] = []
    warnings: list[str] = []

    def write(name: str, text: str) -> None:
        write_atomic(out / name, text)
        files.append(out / name)

    write("trials.csv", trials_csv(exp))
    if table.rows:
        write("groups.csv", groups_csv(table))
    if gdu:
        write("gdu_agreement.csv", _csv(["id", "name", "kind", "cosine", "rel_rmse"],
                                        [[r["id"], r["name"], r["kind"], r["cosine"], r["rel_rmse"]] for r in gdu]))
    lines = angle_lines(exp)
    if lines:
        write("angle_curve.csv", angle_curve_csv(lines))
    figures: list[Path] = []
    if plots:
        from cep import aggregate_plots as ap

        drawings = [(ap.angle_curve, lines, "fig4_angle_curve"),
                    (ap.learning_curves, learning_panels(exp), "learning_curves"),
                    (ap.fig5a, fig5a_points(exp), "fig5a_angle_grad")]
        for draw, data, name in drawings:
            if not data:
                continue  # the data decides which figures apply
            try:
                figures += draw(data, out / name, exp.name)
            except Exception as e:  # one broken figure must not cost the tables and the other figures
                warnings.append(f"{name} failed: {type(e).__name__}: {e}")
    files += figures
    write("table.md", table_md(exp, table, files, gdu)
          + "".join(f"\nWarning: {w}\n" for w in warnings))
    for name in OUTPUT_FILES:  # an output that applied before but not now (e.g. after --restart)
        drawn = Path(name).suffix in (".png", ".pdf")
        if out / name not in files and (out / name).exists() and (plots or not drawn):
            (out / name).unlink()
    agg = Aggregate(exp, table, out, files, warnings)
    if echo:
        print(terminal_report(agg))
    return agg


def terminal_report(agg: Aggregate) -> str:
    """The banner, the Fig. 4 table, what needs attention and where the summary is, for a terminal."""
    exp, table = agg.experiment, agg.table
    out = [f"{exp.name}: {exp.banner}"]
    if table.rows:
        out += ["", text_table(table.header(), [table.cells(r) for r in table.rows])]
        out += ["errors in %, mean ± std over finished seeds; Paper: published numbers where the configuration "
                "matches"] + [f"[{i}] {n}" for i, n in enumerate(table.notes, 1)]
    if exp.gdu_trials:
        out += ["", "gradient analysis (cosine between EP updates and BPTT gradients per layer; more in table.md):"]
        rows = gdu_rows(exp)
        for t in exp.gdu_trials:
            cos = ", ".join(f"{r['name']} {r['cosine']:.3f}" for r in rows if r["id"] == t.id)
            angle = f"angle-grad {t.angle_grad:.1f}°; " if finite(t.angle_grad) else ""
            out.append(f"  {t.id} ({t.status}): {angle}{cos or 'no agreement numbers'}")
    lines = attention(exp)
    if lines:
        out += ["", "needs attention:"] + [f"  {ln}" for ln in lines[:10]]
        if len(lines) > 10:
            out.append(f"  ... and {len(lines) - 10} more (see table.md)")
    out += [f"warning: {w}" for w in agg.warnings]
    out += ["", f"summary in {agg.summary_dir}/ ({', '.join(p.name for p in agg.files)})"]
    return "\n".join(out)
