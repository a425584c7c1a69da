"""summary/index.html: the whole experiment on one self-contained page, opened from the file system.

No server, no network, no JavaScript: the style is inline, figures and trial files are
relative links (a copied or downloaded experiment folder still works), and every text
from the data is escaped. The page is a function of the folder's files only (its one
date is the newest trial file's modification time), so aggregating again without new
results gives the same bytes.
"""

from __future__ import annotations

import html
import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cep.aggregate.figdata import AngleLine, Fig5aPoint, Panel
from cep.aggregate.published import load_published
from cep.aggregate.read import Experiment, TrialResult, count_statuses
from cep.aggregate.stats import finite, seeds_text
from cep.aggregate.table import SELECTION_WORDS, Table
from cep.health import drift_line
from cep.layout import SUMMARY_DIR, SWEEP_FILE
from cep.reading import TEXT_BYTES
from cep.results import (
    CONFIG_FILE,
    CURVE_FILE,
    ERROR_FILE,
    ERRORS_LOG,
    LOG_FILE,
    METRICS_FILE,
    NODE_FILE,
    STATUSES,
    SUMMARY_FILE,
)
from cep.safe_files import LinkRefused, read_text
from cep.text import duration, printable

PAGE_FILE = "index.html"
# the trial files the page links, in this order, when they exist
TRIAL_LINKS = (CONFIG_FILE, METRICS_FILE, CURVE_FILE, SUMMARY_FILE, ERROR_FILE, ERRORS_LOG, LOG_FILE)
# the files whose modification time dates the data (what the aggregator reads)
DATED_FILES = (CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, ERROR_FILE, NODE_FILE)

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1d2328;
background:#fff;line-height:1.4}
main{max-width:1360px;margin:0 auto;padding:16px 24px 48px}
h1{margin:8px 0 4px;font-size:1.7em}h2{margin-top:2em;border-bottom:1px solid #d0d7de;padding-bottom:4px}
.meta{color:#57606a;margin:2px 0}
.banner{padding:10px 14px;border-radius:6px;font-weight:600;margin:12px 0}
.banner.partial{background:#fff4d6;border:1px solid #d4a72c}
.banner.complete{background:#dafbe1;border:1px solid #4ac26b}
.counts span{display:inline-block;margin:4px 8px 4px 0;padding:2px 10px;border-radius:12px;font-size:.9em}
table{border-collapse:collapse;margin:8px 0;font-size:.88em}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}tbody tr:nth-child(even){background:#fafbfc}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.paper,th.paper{background:#eef4ff}
.st-finished{background:#dafbe1}.st-diverged{background:#f3e8ff}.st-errored{background:#ffe0e0}
.st-interrupted{background:#fff4d6}.st-pending{background:#eaeef2}
td.status{white-space:nowrap}td.id{white-space:nowrap}.detail{color:#57606a;font-size:.85em;white-space:normal}
figure{margin:16px 0 28px}figure img{max-width:100%;height:auto;border:1px solid #eaeef2}
figcaption{color:#3a4149;font-size:.92em;max-width:1100px}
.notes{font-size:.9em;color:#3a4149}.links a{margin-right:8px}code{font-size:.95em}
ul.attention li{margin:2px 0}
"""


@dataclass
class Figure:
    """A figure of the summary as the page shows it: its PNG, other formats, title and caption."""

    png: Path
    others: list[Path]
    title: str
    caption: str


# ----------------------------------------------------------------- helpers
def esc(text: Any) -> str:
    """Any text from the data, safe in element content and in quoted attributes (control characters shown
    as escapes)."""
    return html.escape(printable(text), quote=True)


def href(path: Path, start: Path) -> str:
    """A relative, percent-encoded link from `start` (trial ids hold `=`, `/`, `.`, maybe spaces or `#`)."""
    return esc(quote(Path(os.path.relpath(path, start)).as_posix(), safe="/"))


def data_time(exp: Experiment) -> str:
    """When the data was last written: the newest modification time of sweep.json and the trial files the
    aggregator reads, in UTC. A property of the data, not of the aggregation: reruns give the same page."""
    paths = [exp.path / SWEEP_FILE] + [t.path / name for t in exp.trials for name in DATED_FILES]
    times = []
    for p in paths:
        try:
            times.append(p.stat().st_mtime)
        except OSError:
            continue
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(max(times))) if times else "unknown"


def fmt_num(x: float, digits: int = 2) -> str:
    return f"{x:.{digits}f}" if finite(x) else "—"


def node_of(t: TrialResult) -> str:
    """Where the trial ran: summary.json's host, else node.txt's (written when a sweep's attempt starts)."""
    if t.summary and t.summary.get("host"):
        return str(t.summary["host"])
    try:
        for line in read_text(t.path / NODE_FILE, limit=TEXT_BYTES, what=NODE_FILE, errors="replace").splitlines():
            if line.startswith("host "):
                return line[5:].strip()
    except (OSError, LinkRefused):
        pass
    return "—"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], attrs: str = "") -> list[str]:
    """A table of already-escaped cells."""
    out = [f"<table{attrs}>", "<thead><tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr></thead>", "<tbody>"]
    out += ["<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows]
    return out + ["</tbody></table>"]


# ---------------------------------------------------------------- captions
def fig4_caption(lines: list[AngleLine]) -> str:
    ns = [p.test.n for ln in lines for p in ln.points]
    measured = any(p.measured for ln in lines for p in ln.points)
    return (f"Final test (left) and train (right) error versus the {'measured ' if measured else ''}initial angle "
            f"between V and Wᵀ, one line per experiment ({', '.join(ln.label for ln in lines)}); points are means "
            f"over finished seeds, the band ± one standard deviation. Averages {seeds_text(ns)}.")


def learning_caption(panels: list[Panel]) -> str:
    each = "; ".join(f"{p.experiment}: {p.seeds} seed{'s' if p.seeds != 1 else ''}" for p in panels)
    return ("Test (solid) and train (dashed) error per epoch, one panel per experiment and one colour per table "
            "row; thin lines are single seeds (unfinished ones included), bold lines their mean over the seeds "
            f"that reached the epoch. Seeds per panel: {each}.")


def fig5a_caption(points: list[Fig5aPoint]) -> str:
    ns = [p.test.n for p in points]
    return ("Final test (left) and train (right) error versus the initial angle between the total EP update and "
            "the total BPTT gradient (Fig. 5a), one point per table row: mean ± std over finished seeds (faint "
            "dots: single seeds; ×: diverged trials at their last finite epoch); C-VF points are labelled with "
            "their initial weight angle ψ. Hollow markers: the paper's approximate values read off its Fig. 5(a) "
            "(test error only, full MNIST; C-VF as a range over weight angles joined by a dotted line). "
            f"Averages {seeds_text(ns)}.")


# ------------------------------------------------------------------ parts
def header(exp: Experiment, attention: list[str]) -> list[str]:
    c = count_statuses(exp.trials)
    out = [f"<h1>{esc(exp.name)}</h1>"]
    if exp.sweep.get("description"):
        out.append(f"<p>{esc(exp.sweep['description'])}</p>")
    out.append(f"<p class=\"meta\">Aggregated from the results as of {esc(data_time(exp))} (the newest trial "
               f"file); {len(exp.trials)} trials planned in {esc(SWEEP_FILE)}.</p>")
    out.append(f"<div class=\"banner {'partial' if exp.partial else 'complete'}\">{esc(exp.banner)}</div>")
    out.append("<p class=\"counts\">" + "".join(
        f"<span class=\"st-{s}\">{s}: {c[s]}</span>"
        for s in STATUSES) + "</p>")
    if attention:
        out += ["<h2 id=\"attention\">Needs attention</h2>", "<ul class=\"attention\">"]
        out += [f"<li>{esc(line)}</li>" for line in attention]
        out.append("</ul>")
        if any(t.status == "interrupted" for t in exp.trials):
            out.append("<p class=\"notes\">Running or interrupted: the trial's folder says it has not ended; from "
                       "the files alone the aggregator cannot tell whether the sweep is still running it.</p>")
    return out


PAPER_CLASS = ' class="paper"'


def fig4_table(table: Table) -> list[str]:
    """The table of table.md, cell for cell, with its explanation and footnotes."""
    if not table.rows:
        return []
    head = table.header()
    paper = {i for i, h in enumerate(head) if h.startswith("Paper")}
    num = {i for i, h in enumerate(head) if "(" in h or h in ("Hidden", "Seeds")}  # right-aligned numbers
    out = [f"<h2 id=\"table\">{esc(table.title)}</h2>", "<table id=\"fig4-table\">",
           "<thead><tr>" + "".join(f"<th{PAPER_CLASS if i in paper else ''}>{esc(h)}</th>"
                                   for i, h in enumerate(head)) + "</tr></thead>", "<tbody>"]
    for r in table.rows:
        cells = table.cells(r)
        out.append("<tr>" + "".join(
            f"<td class=\"{' '.join(c for c, on in (('num', i in num), ('paper', i in paper)) if on) or 'text'}\">"
            f"{esc(v)}</td>" for i, v in enumerate(cells)) + "</tr>")
    out.append("</tbody></table>")
    paper_note = (" Paper: the published numbers "
                  f"({esc(load_published()['paper'])}), shown only where the row's configuration matches the "
                  "published one field by field, dataset included." if table.with_paper else "")
    out.append("<p class=\"notes\">Final MNIST error rates in %, mean ± sample standard deviation (n − 1) over the "
               f"finished seeds of each row (Seeds counts them). {esc(SELECTION_WORDS)}{paper_note}</p>")
    if table.with_angle_grad:
        out.append("<p class=\"notes\">Angle-grad: initial angle between the total EP update and the total BPTT "
                   "gradient (Fig. 5a)" + ("; paper values are approximate, read off the published plot"
                                           if table.with_paper else "") + ".</p>")
    if table.notes:
        out += ["<ol class=\"notes\">"] + [f"<li>{esc(n)}</li>" for n in table.notes] + ["</ol>"]
    return out


def figures(figs: list[Figure], start: Path, plots: bool) -> list[str]:
    if not figs:
        return [] if plots else ["<h2 id=\"figures\">Figures</h2>",
                                 "<p>Not drawn in this aggregation (<code>--no-plots</code>).</p>"]
    out = ["<h2 id=\"figures\">Figures</h2>"]
    for f in figs:
        links = " ".join(f"<a href=\"{href(p, start)}\">{esc(p.suffix[1:].upper())}</a>" for p in [f.png, *f.others])
        out += [f"<figure id=\"{esc(f.png.stem)}\">", f"<img src=\"{href(f.png, start)}\" alt=\"{esc(f.title)}\">",
                f"<figcaption><strong>{esc(f.title)}.</strong> {esc(f.caption)} <span class=\"links\">{links}</span>"
                "</figcaption>", "</figure>"]
    return out


def gdu_section(exp: Experiment, gdu: list[dict[str, Any]], gdu_figs: dict[str, list[Path]],
                start: Path) -> list[str]:
    """Gradient-analysis trials: the EP/BPTT angle, the per-layer agreement, and the trial's own figures."""
    if not exp.gdu_trials:
        return []
    out = ["<h2 id=\"gdu\">Gradient analysis (EP updates versus BPTT gradients)</h2>"]
    for t in exp.gdu_trials:
        out.append(f"<h3>{esc(t.id)} <span class=\"st-{esc(t.status)}\">({esc(t.status)})</span></h3>")
        if finite(t.angle_grad):
            out.append(f"<p>Angle between the total EP update and the total BPTT gradient: {t.angle_grad:.1f}°</p>")
        rows = [r for r in gdu if r["id"] == t.id]
        if rows:
            out += _table(["Layer", "Kind", "Cosine", "Relative RMSE"],
                          [[esc(r["name"]), esc(r["kind"]), fmt_num(r["cosine"], 4), fmt_num(r["rel_rmse"], 4)]
                           for r in rows])
        seed = t.config.get("seed")
        for p in gdu_figs.get(t.id, []):
            if p.suffix != ".png":
                continue
            pdf = p.with_suffix(".pdf")
            extra = f" <a href=\"{href(pdf, start)}\">PDF</a>" if pdf in gdu_figs[t.id] else ""
            out += [f"<figure><img src=\"{href(p, start)}\" alt=\"{esc(t.id)}: {esc(p.stem)}\">",
                    f"<figcaption><strong>{esc(p.stem)}</strong>: a few random units per layer through the second "
                    f"phase, BPTT gradients solid and EP updates dashed, on the first training minibatch; one run "
                    f"(seed {esc(seed)}), not an average. <a href=\"{href(p, start)}\">PNG</a>{extra}</figcaption>",
                    "</figure>"]
    return out


TRIAL_HEADER = ("Trial", "Status", "Epochs", "Final test (%)", "Best test (%)", "Final train (%)",
                "Measured angle (°)", "Angle-grad (°)", "Wall time", "Node", "Files")


def trial_rows(exp: Experiment, start: Path) -> list[str]:
    """One row per trial of sweep.json, in its order, with links to the files its folder holds."""
    out = ["<h2 id=\"trials\">Trials</h2>", "<table id=\"trials-table\">",
           "<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in TRIAL_HEADER) + "</tr></thead>", "<tbody>"]
    for t in exp.trials:
        detail = []
        if t.status == "errored" and t.error:
            detail.append(t.error)
        elif t.status == "diverged":
            at = t.summary.get("diverged_at_epoch") if t.summary else None
            detail.append(f"diverged at epoch {at}" if at else "diverged")
        if t.action == "train" and t.drifting is not None:
            detail.append(drift_line(t.drifting))
        detail += t.notes
        status = esc(t.status) + "".join(f"<div class=\"detail\">{esc(d)}</div>" for d in detail)
        if t.action != "train":
            epochs = esc(t.action)
        elif t.status == "pending":
            epochs = f"— / {t.epochs if t.epochs is not None else '?'}"
        else:
            epochs = f"{t.epochs_done} / {t.epochs if t.epochs is not None else '?'}"
        measured = ", ".join(f"{a:.1f}" for a in t.measured_angle if finite(a)) or "—"
        files = [t.path / name for name in TRIAL_LINKS if (t.path / name).is_file()]
        links = " ".join(f"<a href=\"{href(p, start)}\">{esc(p.name)}</a>" for p in files) or "—"
        cells = [f"<td class=\"id\"><code>{esc(t.id)}</code></td>",
                 f"<td class=\"status st-{esc(t.status)}\">{status}</td>"]
        cells += [f"<td class=\"num\">{v}</td>" for v in (
            epochs, fmt_num(t.final("test_error")), fmt_num(t.best("test_error")), fmt_num(t.final("train_error")),
            measured, fmt_num(t.angle_grad, 1), duration(t.wall_seconds, "words"))]
        cells += [f"<td>{esc(node_of(t))}</td>", f"<td class=\"links\">{links}</td>"]
        out.append(f"<tr data-trial=\"{esc(t.id)}\" data-status=\"{esc(t.status)}\">" + "".join(cells) + "</tr>")
    return out + ["</tbody></table>"]


def _show(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False)


def resolved_sweep(exp: Experiment) -> list[str]:
    """The sweep as resolved into sweep.json: fields shared by every trial (base), by each experiment, the grid
    values that vary, the resources."""
    trials = exp.trials
    grid_keys = {k for t in trials for k in t.grid}
    keys = sorted({k for t in trials for k in t.config} - grid_keys)

    def same(ts: list[TrialResult], k: str) -> bool:
        return len({_show(t.config.get(k)) for t in ts}) == 1 and all(k in t.config for t in ts)

    base = [k for k in keys if same(trials, k)]
    by_exp: dict[str, list[TrialResult]] = {}
    for t in trials:
        by_exp.setdefault(t.experiment, []).append(t)
    own = {e: [k for k in keys if k not in base and same(ts, k)] for e, ts in by_exp.items()}
    per_trial = [k for k in keys if k not in base and not all(k in own[e] for e in by_exp)]
    out = ["<h2 id=\"sweep\">The resolved sweep</h2>"]
    meta = [(k, exp.sweep.get(k)) for k in ("sweep_file", "created", "cep_version", "max_failures")]
    out += ["<p class=\"meta\">" + "; ".join(f"{esc(k)}: <code>{esc(v)}</code>" for k, v in meta if v is not None)
            + "</p>"]
    out += ["<h3>Resources per trial</h3>"]
    res = exp.sweep.get("resources")
    out += _table(["Resource", "Amount"], [[esc(k), esc(_show(v))] for k, v in res.items()]) if isinstance(
        res, dict) and res else ["<p>Not recorded.</p>"]
    out += ["<h3>Base: fields shared by every trial</h3>"]
    pairs = [[f"<code>{esc(k)}</code>", f"<code>{esc(_show(trials[0].config[k]))}</code>"] for k in base]
    per_row = 3  # field/value pairs side by side: a long narrow list is hard to scan
    out += _table(["Field", "Value"] * per_row, [sum(pairs[i:i + per_row], []) + ["", ""] * (i + per_row - len(pairs))
                                                 for i in range(0, len(pairs), per_row)])
    out += ["<h3>Experiments and their grid</h3>"]
    rows = []
    for e, ts in by_exp.items():
        fields = ", ".join(f"{k}={_show(ts[0].config[k])}" for k in own[e])
        grid: dict[str, list[str]] = {}
        for t in ts:
            for k, v in t.grid.items():
                if _show(v) not in grid.setdefault(k, []):
                    grid[k].append(_show(v))
        rows.append([esc(e), str(len(ts)), f"<code>{esc(fields) or '—'}</code>",
                     "<br>".join(f"<code>{esc(k)}</code>: {esc(', '.join(vs))}" for k, vs in grid.items()) or "—"])
    out += _table(["Experiment", "Trials", "Fields", "Grid (values that vary)"], rows)
    if per_trial:
        out.append("<p class=\"notes\">Different in every trial (see each trial's config.yaml): "
                   + ", ".join(f"<code>{esc(k)}</code>" for k in per_trial) + ".</p>")
    return out


def files_section(files: Sequence[Path], start: Path, descriptions: dict[str, str]) -> list[str]:
    items = [f"<li><a href=\"{href(p, start)}\">{esc(p.name)}</a>"
             + (f": {esc(descriptions[p.name])}" if p.name in descriptions else "") + "</li>"
             for p in files if p.parent == start and p.name != PAGE_FILE]
    return ["<h2 id=\"files\">Files of this summary</h2>", "<ul>", *items, "</ul>"] if items else []


# ------------------------------------------------------------------- page
def render_page(exp: Experiment, table: Table, figs: list[Figure], gdu: list[dict[str, Any]],
                gdu_figs: dict[str, list[Path]], attention: list[str], files: Sequence[Path],
                descriptions: dict[str, str], warnings: Sequence[str], plots: bool = True,
                search: Sequence[str] = ()) -> str:
    """The whole page as text; `files`: what this aggregation wrote into summary/ (linked at the end);
    `search`: a search's section (already escaped, cep.aggregate.search_report)."""
    start = exp.path / SUMMARY_DIR
    body = header(exp, attention)
    body += [f"<p class=\"banner partial\">Warning: {esc(w)}</p>" for w in warnings]
    body += list(search)
    body += fig4_table(table)
    body += figures(figs, start, plots)
    body += gdu_section(exp, gdu, gdu_figs, start)
    body += trial_rows(exp, start)
    body += resolved_sweep(exp)
    body += files_section(files, start, descriptions)
    head = ["<!DOCTYPE html>", "<html lang=\"en\">", "<head>", "<meta charset=\"utf-8\">",
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
            f"<title>{esc(exp.name)}: cep sweep summary</title>", f"<style>{STYLE}</style>", "</head>", "<body>",
            "<main>"]
    return "\n".join(head + body + ["</main>", "</body>", "</html>"]) + "\n"
