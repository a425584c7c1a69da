"""Summarise an experiment into `summary/`: table.md, the CSV files, the figures, and the terminal report.

The same folder always gives byte-identical outputs; safe while the sweep runs
or after it died (partial results are marked PARTIAL).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cep.aggregate.figdata import METRICS, angle_curve_csv, angle_lines, fig5a_points, learning_panels, paper_fig5a
from cep.aggregate.files import csv_text, gdu_figures, gdu_rows, groups_csv, trials_csv
from cep.aggregate.page import PAGE_FILE, Figure, fig4_caption, fig5a_caption, learning_caption, render_page
from cep.aggregate.published import load_published
from cep.aggregate.read import Experiment, load_experiment
from cep.aggregate.search_report import (
    SEARCH_FILES,
    SearchReport,
    draw_search,
    search_html,
    search_md,
    search_report,
    search_text,
)
from cep.aggregate.stats import finite
from cep.aggregate.table import SELECTION_WORDS, Table, build_table
from cep.errors import UsageProblem
from cep.health import DRIFT_STOP, drift_line
from cep.layout import SUMMARY_DIR
from cep.safe_files import refuse_links, remove_stale_temps, write_atomic
from cep.text import md_escape, md_table, printable, text_table

# outputs of this module and of cep.aggregate.plots; stale ones (a figure that no longer applies) are removed
OUTPUT_FILES = ("index.html", "trials.csv", "groups.csv", "table.md", "gdu_agreement.csv", "angle_curve.csv",
                "fig4_angle_curve.png", "fig4_angle_curve.pdf", "learning_curves.png",
                "fig5a_angle_grad.png", "fig5a_angle_grad.pdf")
FIGURE_TITLES = {"fig4_angle_curve": "Final error versus initial angle between V and Wᵀ (Fig. 4)",
                 "learning_curves": "Learning curves",
                 "fig5a_angle_grad": "Final error versus initial angle between the EP update and the BPTT gradient "
                                     "(Fig. 5a)"}
TABLE_FILES = {"index.html": "this summary as one page to open in a browser (no server, no network needed)",
               "table.md": "the table, what needs attention and the figures, in Markdown",
               "trials.csv": "one row per trial (status, final and best errors, angles, every trial field)",
               "groups.csv": "the table's numbers at full precision",
               "angle_curve.csv": "the points of the Fig. 4 curves",
               "gdu_agreement.csv": "per-layer agreement of the gradient-analysis trials"}
MAX_LISTED = 20  # trials listed by name in the "needs attention" part of table.md

def attention(exp: Experiment) -> list[str]:
    """One line per trial that is not finished or has a note; pending ones summarised."""
    lines = []
    for t in exp.trials:
        if t.status == "pending":
            continue
        bits = []
        if t.status == "errored":
            bits.append(f"errored: {t.error}")
        elif t.status == "interrupted":
            bits.append(f"running or interrupted at epoch {t.epochs_done} of {t.epochs}")
        elif t.status == "diverged":
            at = t.summary.get("diverged_at_epoch") if t.summary else None
            bits.append(f"diverged{f' at epoch {at}' if at else ''}; left out of the means")
        elif t.action == "train" and not finite(t.final("test_error")):
            bits.append("finished without a finite final test error; left out of the means")
        collapse = t.collapsed if t.action == "train" else None
        if collapse is not None:
            stopped = "; stopped there (stop_on_collapse)" if t.status == "collapsed" else ""
            bits.append(f"{_collapse_words(collapse)}; best test error {t.best('test_error'):.2f}% at epoch "
                        f"{t.best_test_epoch}{stopped}")
        drift = t.drifting if t.action == "train" else None
        if drift is not None:
            stopped = "; stopped there (stop_on_drift)" if (t.summary or {}).get("stopped", {}).get(
                "by") == DRIFT_STOP else ""
            bits.append(drift_line(drift) + stopped)
        bits += t.notes
        if bits:
            lines.append(f"{t.id}: " + "; ".join(bits))
    pending = [t.id for t in exp.trials if t.status == "pending"]
    if pending:
        shown = ", ".join(pending[:5]) + (f" and {len(pending) - 5} more" if len(pending) > 5 else "")
        lines.append(f"{len(pending)} pending (not started): {shown}")
    return lines


def _collapse_words(c: dict[str, Any]) -> str:
    """A collapse record of summary.json in words (tolerant of missing numbers: written by other versions)."""
    def pct(key: str) -> str:
        return f"{c[key]:.2f}%" if finite(c.get(key)) else "?"

    if c.get("seen_in") == "test_error":
        return (f"collapsed at epoch {c.get('epoch', '?')}, seen in test error (test error {pct('test_error_after')}, "
                f"at chance level since epoch {c.get('since_epoch', '?')}, while the train error is "
                f"{pct('train_error_after')})")
    return (f"collapsed at epoch {c.get('epoch', '?')} (train error {pct('train_error_before')} at epoch "
            f"{c.get('epoch_before', '?')} -> {pct('train_error_after')}, test error {pct('test_error_after')})")


def table_md(exp: Experiment, table: Table, written: Sequence[Path], gdu: list[dict[str, Any]],
             metric: str = "final") -> str:
    """table.md: the banner, the Fig. 4 table with the paper's numbers, what needs attention, the figures,
    the other files (`written`: what this aggregation wrote before it)."""
    figures = [p for p in written if p.suffix in (".png", ".pdf")]
    out = [f"# {md_escape(exp.name)}", ""]
    if exp.sweep.get("description"):
        out += [md_escape(exp.sweep["description"]), ""]
    out += [f"**{md_escape(exp.banner)}**", ""]
    if table.rows:
        out += [f"## {table.title}", "", md_table(table.header(), [table.cells(r) for r in
                                                                                   table.rows]), ""]
        out += ["Final MNIST error rates in %, mean ± sample standard deviation (n − 1) over the finished "
                "seeds of each row (Seeds counts them; a seed stopped at its collapse counts with its errors "
                "there). Best test: each seed's lowest test error over the epochs, Best epoch where the seeds "
                "reached it. Collapsed: seeds whose train error went back to chance level (≥ 80%) after "
                f"having been ≤ 20%. {SELECTION_WORDS}" + (" Paper: the published numbers "
                                                          f"({load_published()['paper']}), shown only where the "
                                                          "row's configuration matches the published one field "
                                                          "by field, dataset included." if table.with_paper else ""),
                ""]
        if table.with_angle_grad:
            out += ["Angle-grad: initial angle between the total EP update and the total BPTT gradient "
                    "(Fig. 5a)" + ("; paper values are approximate, read off the published plot" if table.with_paper
                                   else "") + ".", ""]
        out += [f"[{i}] {md_escape(n)}" for i, n in enumerate(table.notes, 1)] + ([""] if table.notes else [])
    lines = attention(exp)
    if lines:
        out += ["## Trials needing attention", ""]
        out += [f"- {md_escape(ln)}" for ln in lines[:MAX_LISTED]]
        if len(lines) > MAX_LISTED:
            out.append(f"- ... and {len(lines) - MAX_LISTED} more: see trials.csv")
        out.append("")
        if any(t.status == "interrupted" for t in exp.trials):
            out += ["Running or interrupted: the trial's folder says it has not ended; from the files alone the "
                    "aggregator cannot tell whether the sweep is still running it.", ""]
    if exp.gdu_trials:
        out += ["## Gradient analysis (EP updates versus BPTT gradients)", ""]
        for t in exp.gdu_trials:
            out += [f"### {md_escape(t.id)} ({t.status})", ""]
            if finite(t.angle_grad):
                out += [f"Angle between the total EP update and the total BPTT gradient: {t.angle_grad:.1f}°", ""]
            rows = [r for r in gdu if r["id"] == t.id]
            if rows:
                out += [md_table(["Layer", "Kind", "Cosine", "Relative RMSE"],
                                 [[str(r["name"]), str(r["kind"]), f"{r['cosine']:.4f}", f"{r['rel_rmse']:.4f}"]
                                  for r in rows]), ""]
            figs = gdu_figures(t)
            if figs:
                out += ["Figures: " + ", ".join(f"[{md_escape(p.name)}]({_rel(p, exp.path / SUMMARY_DIR)})"
                                                for p in figs), ""]
                out += [f"![{md_escape(t.id)}: {md_escape(p.stem)}]({_rel(p, exp.path / SUMMARY_DIR)})" for p in figs
                        if p.suffix == ".png"]
                out.append("")
    if figures:
        out += ["## Figures", ""]
        for stem, what in FIGURE_TITLES.items():
            if stem == "fig4_angle_curve" and metric != "final":
                what = what.replace("Final error", f"{metric.capitalize()} error")
            paths = [p for p in figures if p.stem == stem]
            if paths:
                links = " ".join(f"[{p.suffix[1:].upper()}]({p.name})" for p in paths)
                out += [f"{what} ({links})", "", f"![{what}]({stem}.png)", ""]
    listed = [p.name for p in written if p.name in TABLE_FILES and p.name != "table.md"] + [PAGE_FILE]
    out += ["## Files", ""] + [f"- {n}: {TABLE_FILES[n]}" for n in listed]
    return "\n".join(out) + "\n"


def _rel(p: Path, start: Path) -> str:
    """A relative link target, percent-encoded (a trial id's characters cannot end the link)."""
    return quote(Path(os.path.relpath(p, start)).as_posix(), safe="/=+,@")


# --------------------------------------------------------------- the entry
@dataclass
class Aggregate:
    """What one aggregation read and wrote."""

    experiment: Experiment
    table: Table
    summary_dir: Path
    files: list[Path]
    warnings: list[str]
    unwritable: str = ""  # why summary/ could not be written ("" when it was)
    search: SearchReport | None = None  # a search's points (cep.aggregate.search_report)

    @property
    def partial(self) -> bool:
        return self.experiment.partial


def aggregate_experiment(experiment_dir: str | Path, plots: bool = True, echo: bool = False,
                         metric: str = "final") -> Aggregate:
    """Read an experiment directory and (re)write `summary/` in it; `echo` prints the terminal report.
    `metric` (final or best) is the error of each trial that the Fig. 4 curve shows.

    Safe while the sweep runs or after it died (partial results are marked) and
    on damaged trial folders; raises NotAnExperiment only when the directory
    itself is not an experiment. A figure that fails to draw is reported in
    `warnings` and the rest is still written.
    """
    exp = load_experiment(experiment_dir)
    out = exp.path / SUMMARY_DIR
    for name in OUTPUT_FILES:  # before anything is written: no link where an output goes (or is cleaned up)
        refuse_links(exp.path, out / name)
    remove_stale_temps(out)  # of a killed aggregation
    table = build_table(exp)
    gdu = gdu_rows(exp)
    files: list[Path] = []
    warnings: list[str] = []
    unwritable = ""

    def write(name: str, text: str) -> None:
        nonlocal unwritable
        if unwritable:
            return
        try:
            out.mkdir(exist_ok=True)
            write_atomic(out / name, text)
        except OSError as e:  # a read-only experiment (another user's, a snapshot): the report still prints
            unwritable = (str(e) if isinstance(e, UsageProblem)  # a folder where a file goes: named, with the fix
                          else f"cannot write the summary into {out} ({e.strerror or type(e).__name__})")
            return
        files.append(out / name)

    write("trials.csv", trials_csv(exp))
    if table.rows:
        write("groups.csv", groups_csv(table))
    if gdu:
        write("gdu_agreement.csv", csv_text(["id", "name", "kind", "cosine", "rel_rmse"],
                                        [[r["id"], r["name"], r["kind"], r["cosine"], r["rel_rmse"]] for r in gdu]))
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r}: use one of {', '.join(METRICS)}")
    lines = angle_lines(exp, metric)
    if lines:
        write("angle_curve.csv", angle_curve_csv(lines, metric))
    figures: list[Path] = []
    shown: list[Figure] = []  # the page's figures, with what each shows
    if plots and not unwritable:
        figures, shown = _draw_figures(exp, out, lines, metric, warnings)
    files += figures
    search = search_report(exp)
    search_figs = _draw_search(search, out, warnings) if search is not None and plots and not unwritable else []
    files += search_figs
    write("table.md", table_md(exp, table, files, gdu, metric)
          + (search_md(search, search_figs) if search is not None else "")
          + "".join(f"\nWarning: {md_escape(w)}\n" for w in warnings))
    if not unwritable:
        gdu_figs = {t.id: gdu_figures(t) for t in exp.gdu_trials}
        page = render_page(exp, table, shown, gdu, gdu_figs, attention(exp), [*files, out / PAGE_FILE],
                           TABLE_FILES, warnings, plots,  # the page lists itself
                           search_html(search, search_figs) if search is not None else ())
        write(PAGE_FILE, page)
    for name in (*OUTPUT_FILES, *SEARCH_FILES) if not unwritable else ():  # an output that applied before but not now
        drawn = Path(name).suffix in (".png", ".pdf")
        if out / name not in files and os.path.lexists(out / name) and (plots or not drawn):
            (out / name).unlink()
    agg = Aggregate(exp, table, out, files, warnings, unwritable, search)
    if echo:
        print(terminal_report(agg))
    return agg


def _draw_search(search: SearchReport, out: Path, warnings: list[str]) -> list[Path]:
    try:
        return draw_search(search, out)
    except Exception as e:  # as for the other figures: the tables still get written
        warnings.append(f"search figures failed: {type(e).__name__}: {e}")
        return []


def _draw_figures(exp: Experiment, out: Path, lines: list[Any], metric: str,
                  warnings: list[str]) -> tuple[list[Path], list[Figure]]:
    """Every figure the data allows (the data decides which apply), and what each shows for the page; a
    figure that fails to draw is a warning, and the others are still drawn."""
    from cep.aggregate import plots as ap

    panels, points = learning_panels(exp), fig5a_points(exp)
    figures: list[Path] = []
    shown: list[Figure] = []
    drawings = [(functools.partial(ap.angle_curve, metric=metric), lines, "fig4_angle_curve", fig4_caption),
                (ap.learning_curves, panels, "learning_curves", learning_caption),
                (lambda d, s, n: ap.fig5a(d, s, n, paper_fig5a(d)), points, "fig5a_angle_grad", fig5a_caption)]
    for draw, data, name, caption in drawings:
        if not data:
            continue  # the data decides which figures apply
        try:
            drawn = draw(data, out / name, exp.name)
        except UsageProblem:  # a full disk, a link: the whole aggregation stops in one line
            raise
        except Exception as e:  # one broken figure must not cost the tables and the other figures
            warnings.append(f"{name} failed: {type(e).__name__}: {e}")
            continue
        figures += drawn
        png = [p for p in drawn if p.suffix == ".png"]
        if png:
            shown.append(Figure(png[0], [p for p in drawn if p.suffix != ".png"], FIGURE_TITLES[name],
                                caption(data)))
    return figures, shown


def terminal_report(agg: Aggregate) -> str:
    """The banner, the Fig. 4 table, what needs attention and where the summary is, for a terminal."""
    exp, table = agg.experiment, agg.table
    out = [f"{exp.name}: {exp.banner}"]
    if table.rows:
        out += ["", text_table(table.header(), [table.cells(r) for r in table.rows])]
        out += ["errors in %, mean ± std over finished seeds" + ("; Paper: published numbers where the configuration "
                                                                 "matches" if table.with_paper else "")]
        out += [f"[{i}] {n}" for i, n in enumerate(table.notes, 1)]
    if exp.gdu_trials:
        out += ["", "gradient analysis (cosine between EP updates and BPTT gradients per layer; more in table.md):"]
        rows = gdu_rows(exp)
        for t in exp.gdu_trials:
            cos = ", ".join(f"{r['name']} {r['cosine']:.3f}" for r in rows if r["id"] == t.id)
            angle = f"angle-grad {t.angle_grad:.1f}°; " if finite(t.angle_grad) else ""
            out.append(f"  {t.id} ({t.status}): {angle}{cos or 'no agreement numbers'}")
    if agg.search is not None:
        out.append(search_text(agg.search))
    lines = attention(exp)
    if lines:
        out += ["", "needs attention:"] + [f"  {ln}" for ln in lines[:10]]
        if len(lines) > 10:
            out.append(f"  ... and {len(lines) - 10} more (see table.md)")
    out += [f"warning: {w}" for w in agg.warnings]
    if not agg.unwritable:
        out += ["", f"summary in {agg.summary_dir}/ ({', '.join(p.name for p in agg.files)}); "
                    f"open {agg.summary_dir / PAGE_FILE} in a browser"]
    return printable("\n".join(out))  # names, notes and errors come from files: no escape sequence reaches the terminal

