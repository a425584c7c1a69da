"""Figures of a sweep's summary: Fig. 4's error-versus-weight-angle curves, learning curves, Fig. 5(a).

Each function draws data prepared by `cep.aggregate` (no reading here) and
writes a PNG and a PDF atomically, without timestamps, so that the same data
gives the same bytes. Which figures apply is the aggregator's decision.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from cep.aggregate.figdata import AngleLine, Fig5aPoint, Panel, PaperPoint
from cep.aggregate.stats import Stat, finite, seeds_text
from cep.figures import METADATA, plt, save_figure

RULE_COLORS = {"EP": "tab:blue", "C-EP": "tab:orange", "VF": "tab:purple", "C-VF": "tab:green"}
DEPTH_MARKERS = {1: "o", 2: "s", 3: "^", 4: "D"}


def _save(make: Callable[[], Any], stem: Path, suffixes: Sequence[str] = (".png", ".pdf")) -> list[Path]:
    """Draw the figure once per format (save_figure closes it) and save each atomically."""
    paths = []
    for suffix in suffixes:
        path = stem.with_suffix(suffix)
        save_figure(make(), path, metadata=METADATA[suffix])
        paths.append(path)
    return paths


def _nan0(x: float) -> float:
    return x if finite(x) else 0.0


def _scale(ax: Any, values: Sequence[float]) -> None:
    """Log scale when the errors span a factor of 20 or more (chance level next to 2%), linear otherwise;
    labelled at 1, 2, 5 of each decade so that every part of the axis can be read."""
    pos = [v for v in values if finite(v) and v > 0]
    if pos and max(pos) / min(pos) > 20:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(alpha=0.3)


# --------------------------------------------------------------- Fig. 4
def angle_curve(lines: list[AngleLine], stem: Path, name: str, metric: str = "final") -> list[Path]:
    """Test (left) and train (right) error versus the initial angle between V and W^T, mean ± std band;
    each point labelled with its number of seeds when that number varies (partial sweeps). `metric` (final
    or best) says which error of each trial the lines show, and the axes say it too."""
    measured = any(p.measured for ln in lines for p in ln.points if not ln.reference)
    ns = [p.test.n for ln in lines for p in ln.points]
    label_n = len(set(ns)) > 1

    def make() -> Any:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), layout="constrained")
        handles = []
        for ax, attr, what in ((axes[0], "test", f"{metric} test error (%)"),
                               (axes[1], "train", f"{metric} train error (%)")):
            values: list[float] = []
            for i, ln in enumerate(lines):
                if not ln.points:
                    continue
                color = f"C{i % 10}"
                xs = [p.x.mean for p in ln.points]
                stats: list[Stat] = [getattr(p, attr) for p in ln.points]
                ys = [s.mean for s in stats]
                if ln.reference:  # one angle only: a level across the axis
                    xs, stats, ys = [-8.0, 188.0], stats * 2, ys * 2
                (h,) = ax.plot(xs, ys, "--" if ln.reference else "-o", color=color, ms=5, lw=1.6, label=ln.label)
                ax.fill_between(xs, [s.mean - _nan0(s.std) for s in stats], [s.mean + _nan0(s.std) for s in stats],
                                color=color, alpha=0.2, lw=0)
                if label_n and not ln.reference:
                    for x, y, st in zip(xs, ys, stats, strict=True):
                        right = x > 150  # keep the label inside the axes
                        ax.annotate(f"n={st.n}", (x, y), textcoords="offset points", xytext=(-5 if right else 5, 5),
                                    ha="right" if right else "left", fontsize=7, color=color,
                                    bbox={"fc": "white", "ec": "none", "alpha": 0.7, "pad": 0.5})
                if attr == "test":
                    handles.append(h)
                values += ys
            _scale(ax, values)
            ax.margins(y=0.1)
            ax.set_xlabel(("measured " if measured else "") + "initial angle between V and Wᵀ (°)")
            ax.set_ylabel(what)
            ax.set_xticks([0, 45, 90, 135, 180])
            ax.set_xlim(-8, 188)
            ax.set_title(what.split(" (")[0].capitalize())
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4), fontsize=8,
                   title="mean over seeds, band ± std", title_fontsize=8)
        which = "final error (the paper's measure)" if metric == "final" else "best error over the epochs"
        fig.suptitle(f"{name}: {which} versus initial weight angle (Fig. 4), {seeds_text(ns)}")
        return fig

    return _save(make, stem)


# ------------------------------------------------------ learning curves
def learning_curves(panels: list[Panel], stem: Path, name: str) -> list[Path]:
    """One panel per experiment: test solid, train dashed; seeds thin, their mean bold; one colour per row
    (the same in every panel), one legend below the panels. PNG only."""
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    labels = list(dict.fromkeys(c.label for p in panels for c in p.curves))
    cmap = plt.get_cmap("viridis")
    colors = {lb: cmap(i / max(1, len(labels) - 1)) if len(labels) > 10 else f"C{i}" for i, lb in enumerate(labels)}

    longest = max((len(c.epoch) for p in panels for c in p.curves), default=0)
    few = longest <= 15  # markers, so that single epochs show (test: dots, train: squares)

    def make() -> Any:
        fig, axes = plt.subplots(nrows, ncols, figsize=(5.4 * ncols, 3.9 * nrows + 0.5), layout="constrained",
                                 squeeze=False)
        for ax, panel in zip(axes.flat, panels, strict=False):
            values: list[float] = []
            for c in panel.curves:
                color = colors[c.label]
                for r in c.runs:
                    ax.plot(r.epoch, r.test, "-", marker="o" if few else None, ms=2.5, color=color, lw=0.7,
                            alpha=0.35)
                    ax.plot(r.epoch, r.train, "--", marker="s" if few else None, ms=2.5, color=color, lw=0.7,
                            alpha=0.35)
                ax.plot(c.epoch, c.test, "-", marker="o" if few else None, ms=5, color=color, lw=2)
                ax.plot(c.epoch, c.train, "--", marker="s" if few else None, ms=5, color=color, lw=2, mfc="none")
                values += c.test + c.train
            _scale(ax, values)
            ax.set_xlabel("epoch")
            ax.set_ylabel("error (%)")
            last = int(max((e for c in panel.curves for e in c.epoch), default=1))
            if few:
                ax.set_xticks(range(1, last + 1))
                ax.set_xlim(0.5, last + 0.5)
            else:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                ax.set_xlim(0, last * 1.02)
            unfinished = sum(r.status != "finished" for c in panel.curves for r in c.runs)
            title = f"{panel.experiment}: {panel.seeds} seed{'s' if panel.seeds != 1 else ''}"
            if len(panel.curves) > 1:
                title += f" × {len(panel.curves)} variants"
            if unfinished:
                title += f" ({unfinished} run{'s' if unfinished != 1 else ''} unfinished)"
            ax.set_title(title, fontsize=10)
        for ax in list(axes.flat)[len(panels):]:
            ax.set_visible(False)
        handles = [Line2D([], [], color=colors[lb], lw=2) for lb in labels if lb]
        legend = [lb for lb in labels if lb]
        handles += [Line2D([], [], color="0.3", lw=2, ls="-", marker="o" if few else None),
                    Line2D([], [], color="0.3", lw=2, ls="--", marker="s" if few else None, mfc="none"),
                    Line2D([], [], color="0.3", lw=0.7, alpha=0.5)]
        legend += ["test error, mean over seeds", "train error, mean over seeds", "single seeds"]
        fig.legend(handles, legend, loc="outside lower center", ncol=min(len(legend), 6), fontsize=8)
        fig.suptitle(f"{name}: learning curves")
        return fig

    return _save(make, stem, (".png",))  # many long lines draw slowly: no PDF of this working figure


# --------------------------------------------------------------- Fig. 5a
def _paper_points(ax: Any, paper: Sequence[PaperPoint]) -> list[float]:
    """The published positions on the test panel, hollow (a C-VF range: two markers and a dotted line)."""
    values = []
    for q in paper:
        color = RULE_COLORS.get(q.rule, "0.3")
        xs = [q.angle_low] if q.angle_low == q.angle_high else [q.angle_low, q.angle_high]
        ax.plot(xs, [q.test] * len(xs), ls=":", lw=1.2, color=color, marker=DEPTH_MARKERS.get(
            q.hidden or 0, "D"), ms=9, mfc="none", mew=1.5)
        ax.annotate(f"paper {q.name}", (xs[-1], q.test), textcoords="offset points", xytext=(8, 0),
                    ha="left", va="center", fontsize=7, color=color)
        values.append(q.test)
    return values


def fig5a(points: list[Fig5aPoint], stem: Path, name: str, paper: Sequence[PaperPoint] = ()) -> list[Path]:
    """Final test (left) and train (right) error versus the initial EP/BPTT angle; one colour per learning
    rule and one marker per depth, mean ± std over seeds as error bars in both directions; each C-VF point
    labelled with its initial weight angle ψ. `paper`: the published approximate positions, drawn hollow on
    the test panel (a C-VF range as two hollow markers joined by a dotted line) for a direct comparison."""
    ns = [p.test.n for p in points]

    def make() -> Any:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), layout="constrained")
        families: dict[str, Any] = {}
        diverged = False
        for ax, k, what in ((axes[0], 1, "final test error (%)"), (axes[1], 2, "final train error (%)")):
            values: list[float] = []
            for p in points:
                color = RULE_COLORS.get(p.rule, "0.3")
                marker = DEPTH_MARKERS.get(p.hidden or 0, "D")
                stat = p.test if k == 1 else p.train
                if p.seeds:
                    ax.scatter([s[0] for s in p.seeds], [s[k] for s in p.seeds], color=color, marker=marker,
                               s=14, alpha=0.35, lw=0)
                if stat.n:
                    h = ax.errorbar(p.angle.mean, stat.mean, xerr=_nan0(p.angle.std), yerr=_nan0(stat.std),
                                    fmt=marker, color=color, ms=7, capsize=3, mec="black", mew=0.6)
                    families.setdefault(f"{p.rule}, {p.hidden} hidden layer{'s' if p.hidden != 1 else ''}", h)
                    if p.weight_angle is not None and finite(p.weight_angle):
                        ax.annotate(f"ψ={p.weight_angle:g}°", (p.angle.mean, stat.mean), textcoords="offset points",
                                    xytext=(6, 6), fontsize=7, color=color,
                                    bbox={"fc": "white", "ec": "none", "alpha": 0.7, "pad": 0.5})
                if p.diverged:
                    ax.scatter([s[0] for s in p.diverged], [s[k] for s in p.diverged], color=color, marker="x", s=30)
                    diverged = True
                values += [s[k] for s in p.seeds + p.diverged]
            if k == 1:
                values += _paper_points(ax, paper)
            _scale(ax, values)
            ax.margins(x=0.12, y=0.12)  # room for the labels beside the points
            ax.set_xlabel("initial angle between total EP update and total BPTT gradient (°)")
            ax.set_ylabel(what)
            ax.set_title(what.split(" (")[0].capitalize())
        handles, labels = list(families.values()), list(families)
        if diverged:
            handles.append(Line2D([], [], color="0.3", marker="x", ls=""))
            labels.append("diverged (last finite epoch)")
        handles.append(Line2D([], [], color="0.3", marker="o", ms=4, alpha=0.35, ls=""))
        labels.append("single seeds")
        if paper:
            handles.append(Line2D([], [], color="0.3", marker="o", ms=8, mfc="none", mew=1.5, ls=":"))
            labels.append("paper, approximate (test only; C-VF: range over ψ)")
        fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 4), fontsize=8,
                   title="mean ± std over seeds", title_fontsize=8)
        fig.suptitle(f"{name}: final error versus initial EP/BPTT angle (Fig. 5a), {seeds_text(ns)}")
        return fig

    return _save(make, stem)
