"""A trial's health, measured each epoch beside the training loop: weight angles and norms, output saturation,
and collapse detection (from the history alone, so the aggregator finds it again in metrics.csv without torch).
"""

from __future__ import annotations

import math
from typing import Any

# metrics.csv's health columns, in the order the trainer adds them (their number depends on the depth and
# rule): angle_<i> (degrees between V_i and W_i^T, vf), norm_W<i>, norm_V<i> (Frobenius) and output_saturation
# (fraction of output units within SATURATION_MARGIN of 0 or 1 on the test set).
SATURATION_MARGIN = 1e-3

# A collapse: the train error of a whole epoch back at chance level after it had been low; or, seen in test
# error, COLLAPSE_TEST_EPOCHS epochs in a row with the test error at chance level while the train error is low.
COLLAPSE_LOW = 20.0  # % train error the run must have reached first (or stay at, for a collapse seen in test error)
COLLAPSE_HIGH = 80.0  # % error of an epoch at chance level (chance is 90% for 10 classes)
COLLAPSE_TEST_EPOCHS = 3  # epochs of chance-level test error (train error low) that make a collapse


def find_collapse(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first collapse of a run, seen in train error (_train_collapse) or in test error (_test_collapse),
    whichever shows first; `seen_in` says which. None when the run never collapsed. A function of the history
    alone, so a resumed run finds what the uninterrupted one found, and the aggregator can find it in an older
    metrics.csv."""
    found = [c for c in (_train_collapse(history), _test_collapse(history)) if c is not None]
    return min(found, key=lambda c: c["epoch"]) if found else None


def _train_collapse(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first epoch whose train error is back at chance level (>= COLLAPSE_HIGH) after an epoch at or
    below COLLAPSE_LOW, with the errors of that good epoch (the last one before it) and of the collapse."""
    good: dict[str, Any] | None = None
    for row in history:
        train = row.get("train_error", math.nan)
        if good is not None and train >= COLLAPSE_HIGH:
            return {"epoch": int(row["epoch"]), "train_error_before": good["train_error"],
                    "train_error_after": train, "test_error_before": good.get("test_error"),
                    "test_error_after": row.get("test_error"), "epoch_before": int(good["epoch"]),
                    "seen_in": "train_error"}
        if train <= COLLAPSE_LOW:
            good = row
    return None


def _test_collapse(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The epoch that makes COLLAPSE_TEST_EPOCHS in a row with the test error at chance level while the train
    error is low (the run learns, its evaluation does not), with the errors of the last epoch before them
    whose test error was below chance level (None: none was) and of that epoch; `since_epoch`: the first."""
    streak: list[dict[str, Any]] = []
    good: dict[str, Any] = {}
    for row in history:
        test, train = row.get("test_error", math.nan), row.get("train_error", math.nan)
        if test >= COLLAPSE_HIGH and train <= COLLAPSE_LOW:
            streak.append(row)
            if len(streak) == COLLAPSE_TEST_EPOCHS:
                return {"epoch": int(row["epoch"]), "train_error_before": good.get("train_error"),
                        "train_error_after": train, "test_error_before": good.get("test_error"),
                        "test_error_after": test, "epoch_before": int(good["epoch"]) if good else None,
                        "seen_in": "test_error", "since_epoch": int(streak[0]["epoch"])}
            continue
        streak = []
        if test < COLLAPSE_HIGH:
            good = row
    return None


def collapse_line(collapse: dict[str, Any]) -> str:
    """A collapse record in words, for logs and terminals."""
    def pct(key: str) -> str:
        value = collapse.get(key)
        return f"{value:.2f}%" if isinstance(value, (int, float)) and math.isfinite(value) else "?"

    if collapse.get("seen_in") == "test_error":
        before = f"{pct('test_error_before')} (epoch {collapse['epoch_before']})" if collapse.get(
            "epoch_before") is not None else "never below chance"
        return (f"collapsed at epoch {collapse['epoch']}, seen in test error: test error {before} -> "
                f"{pct('test_error_after')}, at chance level since epoch {collapse.get('since_epoch', '?')} while "
                f"the train error is {pct('train_error_after')}")
    return (f"collapsed at epoch {collapse['epoch']}: train error {pct('train_error_before')} "
            f"(epoch {collapse['epoch_before']}) -> {pct('train_error_after')}")


def weight_health(params: Any) -> dict[str, float]:
    """The per-epoch weight measures of metrics.csv: the angle between each V_i and W_i^T (vf: how far
    feedback alignment has moved them, Fig. 4's subject) and the Frobenius norm of each W_i and V_i."""
    from cep.model import weight_angles  # torch: only the trainer asks, the aggregator reads without it

    out = {f"angle_{i}": a for i, a in enumerate(weight_angles(params))}
    out.update({f"norm_W{i}": float(w.norm()) for i, w in enumerate(params.W)})
    out.update({f"norm_V{i}": float(v.norm()) for i, v in enumerate(params.V)})
    return out
