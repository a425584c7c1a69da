"""Which epoch of a run is its best: on the validation images when it holds some out (val_samples), else on
the test images (the paper's figure, optimistic: chosen on the data it reports). Plain files only, no torch."""

from __future__ import annotations

import math
from typing import Any

SELECTIONS = {"val_error": "validation", "test_error": "test"}  # the column a best epoch is chosen on -> its name


def selection_key(history: list[dict[str, Any]]) -> str:
    """val_error when the run has a finite validation error in some epoch, else test_error."""
    return "val_error" if any(_finite(row.get("val_error")) for row in history) else "test_error"


def selected_best(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The row with the lowest error on the selection set (the earliest of equal ones); None when none."""
    key = selection_key(history)
    rows = [row for row in history if _finite(row.get(key))]
    return min(rows, key=lambda row: row[key]) if rows else None


def best_record(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """summary.json's `best`: the selected epoch, what it was selected on, and its errors (the test error
    there is the honest figure when the selection is validation)."""
    row = selected_best(history)
    if row is None:
        return None
    return {"selected_on": SELECTIONS[selection_key(history)], "epoch": int(row["epoch"]),
            **{k: row.get(k) for k in ("train_error", "val_error", "test_error") if k in row}}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def best_line(history: list[dict[str, Any]]) -> str:
    """The selected best epoch in words, naming what it was selected on."""
    best = best_record(history)
    if best is None:
        return "no epoch with a finite error"
    at = f"best epoch {best['epoch']} (selected on {best['selected_on']})"
    if best["selected_on"] == "validation":
        return (f"{at}: validation error {best['val_error']:.2f}%, test error there {best['test_error']:.2f}% "
                "(the honest figure)")
    return f"{at}: test error {best['test_error']:.2f}% (optimistic: chosen on the data it reports)"
