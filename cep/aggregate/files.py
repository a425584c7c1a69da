"""The summary's CSV files: one row per trial, the table's numbers, the Fig. 4 points, the GDU agreement."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from cep.aggregate.read import Experiment, TrialResult, count_statuses
from cep.aggregate.stats import fmt_value, hidden_layers
from cep.aggregate.table import Table
from cep.config import FIELD_NAMES
from cep.layout import GDU_DIR
from cep.reading import TEXT_BYTES
from cep.results import LINK_FIX, STATUSES
from cep.safe_files import LinkRefused, find_link, read_text


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


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow([_csv_value(v) for v in r])
    return buf.getvalue()


TRIAL_COLUMNS = ("id", "experiment", "status", "epochs_done", "collapsed_epoch", "final_test_error",
                 "final_train_error", "best_test_error", "best_test_epoch", "best_train_error", "final_test_loss",
                 "final_train_loss", "angle_grad_deg", "measured_angle_deg", "wall_seconds", "host", "note",
                 "drifting_epoch", "selected_on", "selected_epoch", "selected_val_error", "selected_test_error",
                 "selected_train_error")  # selected: the best epoch by the run's selection (cep.selection)


def trials_csv(exp: Experiment) -> str:
    """One row per trial: status, the epoch of its collapse (empty: none), final and best errors (%) with the
    best one's epoch, angles (degrees), then every trial field."""
    return csv_text(*trial_table(exp))


def trial_table(exp: Experiment) -> tuple[list[str], list[list[Any]]]:
    """trials.csv's header and rows as values (cep.frames makes its DataFrame of them)."""
    extra = sorted({k for t in exp.trials for k in t.config} - set(FIELD_NAMES))
    fields = [*FIELD_NAMES, *extra]
    rows = []
    for t in exp.trials:
        note = [f"error: {t.error}"] if t.error else []
        rows.append([t.id, t.experiment, t.status, t.epochs_done if t.status != "pending" else None,
                     t.collapsed_epoch, t.final("test_error"), t.final("train_error"), t.best("test_error"),
                     t.best_test_epoch, t.best("train_error"),
                     t.final("test_loss"), t.final("train_loss"), t.angle_grad, t.measured_angle or None,
                     t.wall_seconds, t.summary.get("host") if t.summary else None, "; ".join(note + t.notes),
                     t.drifting_epoch, *_selected_cells(t.selected), *[t.config.get(k) for k in fields]])
    return [*TRIAL_COLUMNS, *fields], rows


def _selected_cells(best: dict[str, Any] | None) -> list[Any]:
    """trials.csv's selected_* cells: what the best epoch was selected on, the epoch, its errors."""
    b = best or {}
    return [b.get(k) for k in ("selected_on", "epoch", "val_error", "test_error", "train_error")]


def groups_csv(table: Table) -> str:
    """The table's numbers at full precision, for other tools."""
    return csv_text(*group_table(table))


def group_table(table: Table) -> tuple[list[str], list[list[Any]]]:
    """groups.csv's header and rows as values."""
    header = ["row", "experiment", "variant", "rule", "hidden_layers", "trials", *STATUSES, "collapsed_trials"]
    for name in ("test_error", "train_error", "best_test_error", "angle_grad_deg"):
        header += [f"{name}_mean", f"{name}_std", f"{name}_n"]
    header += ["paper_row", "paper_test_error", "paper_angle_grad_low", "paper_angle_grad_high", "paper_note",
               "drifting_trials", "test_error_at_best_val_mean", "test_error_at_best_val_std",
               "test_error_at_best_val_n"]
    rows = []
    for r in table.rows:
        g = r.group
        c = count_statuses(g.trials)
        angle = r.paper_angle.value or (None, None)
        rows.append([g.label, g.experiment, " ".join(f"{k}={fmt_value(v)}" for k, v in g.variant),
                     g.rule, hidden_layers(g.config), len(g.trials), *[c[s] for s in STATUSES], len(g.collapsed),
                     *[x for s in (r.test, r.train, r.best_test, r.angle_grad) for x in (s.mean, s.std, s.n)],
                     r.paper_test.name, r.paper_test.value, angle[0], angle[1], r.paper_test.why,
                     len(g.drifting), r.val_test.mean, r.val_test.std, r.val_test.n])
    return header, rows


def gdu_rows(exp: Experiment) -> list[dict[str, Any]]:
    """Per-layer agreement rows of every gradient-analysis trial (gdu/agreement.csv, else summary.json)."""
    out = []
    for t in exp.gdu_trials:
        rows: list[dict[str, Any]] = []
        path = t.path / GDU_DIR / "agreement.csv"
        if os.path.lexists(path):
            try:
                text = read_text(path, t.path, limit=TEXT_BYTES, what="agreement.csv")
                rows = list(csv.DictReader(io.StringIO(text, newline="")))
            except LinkRefused:
                t.notes.append(f"gdu/agreement.csv is a symbolic link; not read ({LINK_FIX})")
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


def gdu_figures(t: TrialResult) -> list[Path]:
    """The gradient analysis's figures, regular files only: a link would show a file from outside the trial."""
    folder = t.path / GDU_DIR
    if find_link(t.path, folder) is not None or not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*") if p.suffix in (".png", ".pdf") and not p.is_symlink() and p.is_file())


