"""What the summary figures show, prepared from an experiment: Fig. 4 curves, learning curves, Fig. 5(a)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from cep.aggregate.files import csv_text
from cep.aggregate.published import load_published
from cep.aggregate.read import COUNTED, Experiment, TrialResult
from cep.aggregate.stats import Stat, as_float, finite, fmt_value, hidden_layers
from cep.config import rule_label


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
    reference: bool = False  # an experiment at one angle only (e.g. EP, tied weights): drawn across all angles


METRICS = ("final", "best")  # which error of each trial a Fig. 4 point shows: at the last epoch (the paper's) or
# the lowest over the epochs (what the rule can reach, before a collapse or late swings)


def trial_errors(t: TrialResult, metric: str) -> tuple[float, float]:
    """(test, train) error of a trial for a Fig. 4 point: final, or the best of each over the epochs."""
    if metric == "best":
        return t.best("test_error"), t.best("train_error")
    return t.final("test_error"), t.final("train_error")


def angle_lines(exp: Experiment, metric: str = "final") -> list[AngleLine]:
    """Fig. 4 curves: one line per experiment (and per other grid value), one point per requested angle
    that has finished trials. Only lines whose trials span two or more angles: a sweep without an
    angle dimension gets none. Experiments at one angle only come last, as reference lines. `metric`: final or
    best errors (METRICS)."""
    lines: dict[tuple[str, Any], dict[float, list[TrialResult]]] = {}
    for t in exp.train_trials:
        key = (t.experiment, tuple((k, v) for k, v in t.variant if k != "angle"))
        lines.setdefault(key, {}).setdefault(as_float(t.config.get("angle", 0.0)), []).append(t)
    out, references = [], []
    for (experiment, rest), by_angle in lines.items():
        points = []
        for angle in sorted(by_angle):
            done = [t for t in by_angle[angle] if t.status in COUNTED and finite(t.final("test_error"))]
            if done:
                errors = [trial_errors(t, metric) for t in done]
                points.append(AnglePoint(angle, Stat.of(t.angle for t in done), any(t.measured_angle for t in done),
                                         Stat.of(e[0] for e in errors), Stat.of(e[1] for e in errors)))
        label = " ".join([experiment] + [f"{k}={fmt_value(v)}" for k, v in rest])
        if len(by_angle) >= 2:
            out.append(AngleLine(label, points))
        elif points:  # the curves' reference, as EP-1h is for C-VF-1h in the quickstart
            references.append(AngleLine(label + " (reference)", points, reference=True))
    return out + references if any(line.points for line in out) else []


def angle_curve_csv(lines: list[AngleLine], metric: str = "final") -> str:
    """The Fig. 4 points; the `metric` column says whether the errors are final or best ones."""
    return csv_text(["line", "angle", "x_angle_mean", "x_is_measured", "test_error_mean", "test_error_std",
                 "train_error_mean", "train_error_std", "n", "metric"],
                [[ln.label, p.angle, p.x.mean, p.measured, p.test.mean, p.test.std, p.train.mean, p.train.std,
                  p.test.n, metric] for ln in lines for p in ln.points])


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
    weight_angle: float | None = None  # C-VF: the requested initial angle between V and W^T (the point's label)


def fig5a_points(exp: Experiment) -> list[Fig5aPoint]:
    """Rows whose trials recorded angle-grad (finished or diverged ones); empty when none did."""
    out = []
    for g in exp.groups:
        def triple(t: TrialResult) -> tuple[float, float, float]:
            return t.angle_grad, t.final("test_error"), t.final("train_error")

        seeds = [triple(t) for t in g.done if finite(t.angle_grad)]
        diverged = [triple(t) for t in g.trials if t.status == "diverged" and finite(t.angle_grad)]
        if seeds or diverged:
            psi = as_float(g.config.get("angle", 0.0)) if g.config.get("rule") == "vf" else None
            out.append(Fig5aPoint(g.label, g.rule, hidden_layers(g.config),
                                  Stat.of(s[0] for s in seeds), Stat.of(s[1] for s in seeds),
                                  Stat.of(s[2] for s in seeds), seeds, diverged, psi))
    return out


@dataclass
class PaperPoint:
    """The paper's approximate Fig. 5(a) position of a configuration (spec section 10): the angle-grad, a range
    for C-VF (one value per initial weight angle), against the published test error."""

    name: str
    rule: str
    hidden: int | None
    angle_low: float
    angle_high: float
    test: float


def paper_fig5a(points: list[Fig5aPoint]) -> list[PaperPoint]:
    """The paper's points of the rule and depth families shown, so that measured and published values can be
    compared on one picture (the paper gives no train error, so they belong to the test panel only)."""
    shown = {(p.rule, p.hidden) for p in points}
    out = []
    for row in load_published()["rows"]:
        cfg = row["config"]
        key = (rule_label(cfg["rule"], cfg["continual"]), hidden_layers(cfg))
        if key in shown:
            lo, hi = row["angle_grad"]
            out.append(PaperPoint(row["name"], key[0], key[1], float(lo), float(hi), float(row["test_error"])))
    return out


