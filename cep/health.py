"""Late drift: a run whose train error climbs back well above its own minimum and stays there.

Collapse (cep.results.find_collapse) catches a run gone back to chance; drift catches the slower failure
seen in C-EP-1h at the paper's settings on full MNIST (issue 31): after a minimum of 0.4-1.1% the train
error of 4 of 5 seeds climbed to 3-5% and stayed, while nothing flagged it. A function of the history
alone, like find_collapse: a resumed run finds what the uninterrupted one found, and the aggregator can
find it in an older metrics.csv.
"""

from __future__ import annotations

import math
from typing import Any

# A drift: DRIFT_EPOCHS epochs in a row whose train error is at least DRIFT_RISE percentage points AND
# DRIFT_RATIO times above the lowest train error of the epochs before them. The measured drifts rose from
# 0.4-1.1% to 3-5%: at least +1.9 points and 2.7x, so both thresholds catch every one of them with margin,
# while a converged run's epoch-to-epoch jitter (a few tenths of a point) and the noise of early training
# (a 10% run going to 12% is +2 points but only 1.2x) stay below one of them.
DRIFT_RISE = 1.5  # percentage points above the minimum
DRIFT_RATIO = 2.0  # times the minimum
DRIFT_EPOCHS = 3  # epochs in a row: one bad epoch is noise, three are a trend


def _risen(train: float, low: float) -> bool:
    return train - low >= DRIFT_RISE and train >= DRIFT_RATIO * low


def find_drift(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first drift of a run, or None: `epoch` the first epoch of the rise (where it began), `flagged_at`
    the epoch that confirmed it (DRIFT_EPOCHS later), the minimum it rose from and the train and test
    errors when it was confirmed."""
    low: dict[str, Any] | None = None  # the row with the lowest train error before the current streak
    streak: list[dict[str, Any]] = []
    for row in history:
        train = row.get("train_error", math.nan)
        if not isinstance(train, (int, float)) or not math.isfinite(train):
            streak = []
            continue
        if low is not None and _risen(train, low["train_error"]):
            streak.append(row)
            if len(streak) == DRIFT_EPOCHS:
                return {"epoch": int(streak[0]["epoch"]), "flagged_at": int(row["epoch"]),
                        "min_train_error": low["train_error"], "min_epoch": int(low["epoch"]),
                        "train_error": train, "test_error": row.get("test_error")}
            continue
        streak = []
        if low is None or train < low["train_error"]:
            low = row
    return None


def drift_line(drift: dict[str, Any]) -> str:
    """A drift record in words, for logs, terminals and the aggregator (tolerant of missing numbers)."""
    def pct(key: str) -> str:
        value = drift.get(key)
        return f"{value:.2f}%" if isinstance(value, (int, float)) and math.isfinite(value) else "?"

    return (f"drifting since epoch {drift.get('epoch', '?')}: train error {pct('train_error')} at epoch "
            f"{drift.get('flagged_at', '?')}, up from its minimum {pct('min_train_error')} at epoch "
            f"{drift.get('min_epoch', '?')}")


DRIFT_STOP = "stop_on_drift"  # who stopped a trial that asked to end at its drift (summary.json's `stopped`.by)


def note_drift(state: Any) -> bool:
    """After an epoch of a TrainState: record a drift confirmed now in `state.info["drifting"]` (the first one
    only); True when the trial asked to end there (stop_on_drift), with its `stopped` record written."""
    if "drifting" in state.info:
        return False
    drift = find_drift(state.history)
    if drift is None:
        return False
    state.info["drifting"] = drift
    if not state.config.stop_on_drift or drift["flagged_at"] != state.epoch:
        return False
    state.info["stopped"] = {"epoch": state.epoch, "by": DRIFT_STOP}
    return True


def ended_by_drift(state: Any) -> bool:
    """Whether a saved state ended at its drift (stop_on_drift): a resume must not train it on."""
    return state.status == "stopped" and (state.info.get("stopped") or {}).get("by") == DRIFT_STOP
