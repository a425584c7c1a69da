"""A trial's health, measured each epoch beside the training loop: weight angles and norms, output saturation,
collapse detection (a run gone back to chance) and late drift (a run whose train error climbs back well above
its own minimum and stays there: seen in C-EP-1h at the paper's settings on full MNIST, issue 31). Collapse
and drift are functions of the history alone, so a resumed run finds what the uninterrupted one found, and the
aggregator finds them again in an older metrics.csv without torch.
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


def _percent(record: dict[str, Any], key: str) -> str:
    """A record's error in %, or '?' where it is missing or not a finite number (an older or damaged file)."""
    value = record.get(key)
    return f"{value:.2f}%" if isinstance(value, (int, float)) and math.isfinite(value) else "?"


def collapse_line(collapse: dict[str, Any]) -> str:
    """A collapse record in words, for logs and terminals."""
    def pct(key: str) -> str:
        return _percent(collapse, key)

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
        return _percent(drift, key)

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
