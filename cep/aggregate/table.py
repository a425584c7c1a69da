"""The table of error rates (Fig. 4's when rows match the paper): one row per group of seeds, with the paper's
numbers beside matching rows; a search or a grid of other configurations gets no Paper column."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cep.aggregate.published import Match, fmt_published_angle, load_published, match_published
from cep.aggregate.read import Experiment, Group
from cep.aggregate.stats import Stat, finite, fmt_value, hidden_layers
from cep.health import DRIFT_EPOCHS, DRIFT_RATIO, DRIFT_RISE

# which selection each best-epoch number used, and what Drifting counts (table.md and the page)
SELECTION_WORDS = ("Best test is chosen on the test set, as the paper's figures are (optimistic: selected on the "
                   "data it reports); Test at best val (shown when seeds held out val_samples training images) is "
                   "the test error at each seed's lowest validation error, the honest figure. Drifting: seeds whose "
                   f"train error stayed ≥ {DRIFT_RISE:g} points and ≥ {DRIFT_RATIO:g}× above its own minimum for "
                   f"{DRIFT_EPOCHS} epochs, from the epoch the rise began.")


# ------------------------------------------------------------ table model
@dataclass
class TableRow:
    group: Group
    test: Stat
    train: Stat
    best_test: Stat
    best_epochs: list[int]  # the epoch of each seed's best test error, over the same seeds
    angle_grad: Stat
    paper_test: Match
    paper_angle: Match
    val_test: Stat  # the test error at each seed's best validation epoch (seeds with a validation split)
    val_epochs: list[int]  # those epochs
    note: int | None = None  # footnote number when the paper column is empty


@dataclass
class Table:
    """The table: rows, footnotes, whether the angle-grad columns apply and whether any row has a published
    number (else no Paper column, and not headed as Fig. 4's table; the notes still say why)."""

    rows: list[TableRow]
    notes: list[str]
    with_angle_grad: bool
    with_validation: bool = False  # some trial held out validation images: its best epoch chosen on them
    with_paper: bool = True

    @property
    def title(self) -> str:
        return "Error rates (the table of Fig. 4)" if self.with_paper else "Error rates"

    def header(self) -> list[str]:
        return self._shown(self._columns())

    def _columns(self) -> list[str]:
        h = ["Experiment", "Rule", "Hidden", "Seeds", "Test error (%)", "Paper test (%)", "Train error (%)",
             "Best test (%)", "Best epoch"]
        if self.with_validation:
            h += ["Test at best val (%)", "Best val epoch"]
        if self.with_angle_grad:
            h += ["Angle-grad (°)", "Paper angle-grad (°)"]
        return h + ["Collapsed", "Drifting", "Trials"]

    def _shown(self, cells: list[str]) -> list[str]:
        """Without the Paper columns when no row has a published number."""
        if self.with_paper:
            return cells
        return [c for c, name in zip(cells, self._columns()) if not name.startswith("Paper")]

    def cells(self, row: TableRow) -> list[str]:
        g = row.group
        paper = f"{row.paper_test.value:.2f}" if row.paper_test.value is not None else "—"
        if row.note is not None:
            paper += f" [{row.note}]"
        c = [g.label, g.rule, fmt_value(hidden_layers(g.config)), str(row.test.n),
             row.test.fmt(), paper, row.train.fmt(), row.best_test.fmt(), epoch_range(row.best_epochs)]
        if self.with_validation:
            c += [row.val_test.fmt(), epoch_range(row.val_epochs)]
        if self.with_angle_grad:
            c += [row.angle_grad.fmt(1), fmt_published_angle(row.paper_angle.value)]
        return self._shown(c + [g.collapsed_text(), g.drifting_text(), g.status_text()])


def epoch_range(epochs: list[int]) -> str:
    """'53', '41–53' or '—': where the seeds of a row reached their best."""
    if not epochs:
        return "—"
    return str(epochs[0]) if epochs[0] == epochs[-1] else f"{epochs[0]}–{epochs[-1]}"


def build_table(exp: Experiment, published: dict[str, Any] | None = None) -> Table:
    """The table's rows; rows without a published number share one footnote per reason."""
    pub = published or load_published()
    rows: list[TableRow] = []
    reasons: dict[str, list[str]] = {}  # why -> labels of the rows it explains
    for g in exp.groups:
        shown = [k for k, _ in g.variant]
        row = TableRow(g, g.stat("test_error"), g.stat("train_error"), g.stat("test_error", best=True),
                       sorted(e for t in g.done if (e := t.best_test_epoch) is not None), g.angle_grad,
                       match_published(g.config, "test_error", pub, shown),
                       match_published(g.config, "angle_grad", pub, shown),
                       Stat.of(t.on_validation.get("test_error") for t in g.validated()),
                       sorted(int(t.on_validation["epoch"]) for t in g.validated()))
        if row.paper_test.value is None:
            reasons.setdefault(row.paper_test.why, []).append(g.label)
            row.note = list(reasons).index(row.paper_test.why) + 1
        rows.append(row)
    notes = [f"{', '.join(labels) if len(labels) <= 3 else f'{labels[0]}, …, {labels[-1]} ({len(labels)} rows)'}"
             f": no published number: {why}." for why, labels in reasons.items()]
    with_angle = any(finite(t.angle_grad) for t in exp.train_trials)
    with_paper = any(r.paper_test.value is not None or r.paper_angle.value is not None for r in rows)
    return Table(rows, notes, with_angle, any(r.val_epochs for r in rows), with_paper)


