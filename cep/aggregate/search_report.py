"""The summary of a search (a sweep with a `search` section): the best points, the metric versus each searched
field, and the searcher's progress, for table.md, the terminal and index.html.

Reads only what the aggregator read (sweep.json's `search` and the trials' grid values and summaries).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cep.aggregate.read import Experiment, TrialResult
from cep.aggregate.stats import Stat, finite, fmt_value
from cep.text import md_table, text_table

K_BEST = 10
FIELDS_FIGURE = "search_fields"
PROGRESS_FIGURE = "search_progress"
SEARCH_FILES = (f"{FIELDS_FIGURE}.png", f"{PROGRESS_FIGURE}.png")


@dataclass
class Point:
    """One search point of one experiment: its searched values and the metric over its seeds."""

    k: int
    experiment: str
    values: dict[str, float | Any]  # per searched dimension (list entries as field[i])
    metric: Stat
    statuses: list[str]


@dataclass
class SearchReport:
    metric: str
    mode: str
    searcher: str
    scheduler: str
    dims: list[str]
    log_dims: list[str]
    points: list[Point]  # in k order

    @property
    def ranked(self) -> list[Point]:
        done = [p for p in self.points if p.metric.n]
        return sorted(done, key=lambda p: (p.metric.mean if self.mode == "min" else -p.metric.mean, p.k))

    def best_so_far(self) -> list[float]:
        """After each point (in the order the searcher proposed them), the best mean metric so far."""
        out, best = [], math.nan
        for p in self.points:
            if p.metric.n and (not finite(best) or (p.metric.mean < best if self.mode == "min" else
                                                    p.metric.mean > best)):
                best = p.metric.mean
            out.append(best)
        return out


def _dims(space: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Searched dimensions (list entries as field[i]) and those sampled log-uniformly (ratios of one too)."""
    dims, logs = [], []
    for name, spec in space.items():
        entries = [(name, spec)] if isinstance(spec, dict) else [(f"{name}[{i}]", e) for i, e in enumerate(spec)]
        for dim, e in entries:
            if isinstance(e, dict):
                dims.append(dim)
                if "loguniform" in e:
                    logs.append(dim)
    return dims, logs


def _value(t: TrialResult, dim: str) -> Any:
    name, _, index = dim.partition("[")
    v = t.grid.get(name)
    if index and isinstance(v, list):
        i = int(index.rstrip("]"))
        return v[i] if i < len(v) else None
    return v


def _metric(t: TrialResult, metric: str) -> float:
    if t.status not in ("finished", "stopped", "collapsed"):
        return math.nan
    if metric == "best_test_error":
        return t.best("test_error")
    return t.final("train_error" if metric == "final_train_error" else "test_error")


def search_report(exp: Experiment) -> SearchReport | None:
    """The search's points with their metric (None: not a search)."""
    search = exp.sweep.get("search")
    if not isinstance(search, dict) or not isinstance(search.get("space"), dict):
        return None
    dims, logs = _dims(search["space"])
    groups: dict[tuple[str, int], list[TrialResult]] = {}
    for t in exp.trials:
        if isinstance(t.grid.get("search"), int):
            groups.setdefault((t.experiment, t.grid["search"]), []).append(t)
    metric = str(search.get("metric", "final_test_error"))
    points = [Point(k, e, {d: _value(ts[0], d) for d in dims}, Stat.of(_metric(t, metric) for t in ts),
                    [t.status for t in ts]) for (e, k), ts in sorted(groups.items(), key=lambda kv: kv[0][::-1])]
    return SearchReport(metric, str(search.get("mode", "min")), str(search.get("searcher", "random")),
                        str(search.get("scheduler", "none")), dims, logs, points)


def _rows(report: SearchReport, k: int = K_BEST) -> tuple[list[str], list[list[str]]]:
    header = ["Rank", "Point", "Experiment", *report.dims, f"{report.metric} (%)", "Seeds", "Statuses"]
    rows = [[str(r), f"{p.k:04d}", p.experiment, *(fmt_value(p.values[d]) for d in report.dims), p.metric.fmt(),
             str(p.metric.n), ", ".join(sorted(set(p.statuses)))] for r, p in enumerate(report.ranked[:k], 1)]
    return header, rows


def _what(report: SearchReport) -> str:
    return (f"{report.searcher} search, {len(report.points)} point(s), {report.metric} ({report.mode}); "
            f"scheduler {report.scheduler}; the metric is the mean ± std over each point's seeds")


def search_md(report: SearchReport, figures: Sequence[Path]) -> str:
    header, rows = _rows(report)
    out = ["", f"## Search: the {min(K_BEST, len(rows))} best points", "", _what(report) + ".", ""]
    out += [md_table(header, rows) if rows else "No point has a result yet.", ""]
    for p in figures:
        title = "Metric versus each searched field" if p.stem == FIELDS_FIGURE else "Best so far versus points"
        out += [f"![{title}]({p.name})", ""]
    return "\n".join(out)


def search_text(report: SearchReport, k: int = 5) -> str:
    header, rows = _rows(report, k)
    best = report.best_so_far()
    lines = ["", _what(report)] + ([text_table(header, rows)] if rows else ["no point has a result yet"])
    if best and finite(best[-1]):
        lines.append(f"best so far after each point: {', '.join(f'{b:.2f}' for b in best)}")
    return "\n".join(lines)


def search_html(report: SearchReport, figures: Sequence[Path]) -> list[str]:
    """The page's search section; every value escaped."""
    from cep.aggregate.page import _table, esc

    header, rows = _rows(report)
    out = ["<section>", f"<h2>Search: the {esc(min(K_BEST, len(rows)))} best points</h2>",
           f"<p>{esc(_what(report))}</p>"]
    out += _table([esc(h) for h in header], [[esc(c) for c in r] for r in rows]) if rows else []
    out += [f"<figure><img src=\"{esc(p.name)}\" alt=\"{esc(p.stem)}\"></figure>" for p in figures]
    return out + ["</section>"]


def draw_search(report: SearchReport, out: Path) -> list[Path]:
    """The two figures (PNG): the metric of every point versus each searched field (log x where sampled
    log-uniformly), and the best so far versus the points in the searcher's order."""
    from cep.figures import plt, save_figure

    done = [p for p in report.points if p.metric.n]
    if not done or not report.dims:
        return []
    fig, axes = plt.subplots(1, len(report.dims), figsize=(4 * len(report.dims), 3.2), squeeze=False)
    for ax, dim in zip(axes[0], report.dims, strict=True):
        xs = [p.values[dim] for p in done]
        ax.errorbar(xs, [p.metric.mean for p in done], yerr=[p.metric.std if p.metric.n > 1 else 0 for p in done],
                    fmt="o", ms=4, capsize=2)
        if dim in report.log_dims:
            from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

            ax.set_xscale("log")
            # labels at 1, 2 and 5 per decade: a range within one decade still gets labelled ticks, and
            # labelled minor ticks would overlap
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(dim)
        ax.set_ylabel(f"{report.metric} (%)")
    fig.tight_layout()
    paths = [out / f"{FIELDS_FIGURE}.png"]
    save_figure(fig, paths[0])
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(range(1, len(report.points) + 1), report.best_so_far(), drawstyle="steps-post")
    ax.set_xlabel("points (in the searcher's order)")
    ax.set_ylabel(f"best {report.metric} so far (%)")
    fig.tight_layout()
    paths.append(out / f"{PROGRESS_FIGURE}.png")
    save_figure(fig, paths[1])
    return paths
