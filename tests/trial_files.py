"""Readers of a sweep trial's folder (trials/<id>/) shared by the Ray tests."""

from __future__ import annotations

import csv
import json
from pathlib import Path

COMPARED = ("epoch", "train_error", "test_error", "train_loss", "test_loss")  # not the wall-clock columns


def metrics(folder: Path) -> list[dict[str, str]]:
    """metrics.csv without its timing columns, as written (strings: exact comparison)."""
    with open(folder / "metrics.csv", newline="") as f:
        return [{k: row[k] for k in COMPARED} for row in csv.DictReader(f)]


def summary(folder: Path) -> dict:
    """summary.json, or {} while it does not exist yet."""
    try:
        return json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        return {}


def log_lines(folder: Path) -> list[str]:
    """trial.log without its time/host/pid prefix: 'start ...', 'epoch N done: ...', 'end: ...'."""
    log = folder / "trial.log"
    return [ln.split(" ", 3)[3] for ln in log.read_text().splitlines()] if log.exists() else []
