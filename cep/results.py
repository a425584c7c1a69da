"""A run's results folder: config.yaml, metrics.csv, summary.json, learning_curve.png, checkpoint.pt.

Every file is written atomically (temporary file then rename), and metrics.csv is
rewritten from the trainer's history each epoch, so a restored run leaves the
same files as an uninterrupted one. Readers need neither Ray nor torch.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import socket
from pathlib import Path
from typing import Any

import yaml

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
CHECKPOINT_FILE = "checkpoint.pt"
CURVE_FILE = "learning_curve.png"

METRIC_COLUMNS = ("epoch", "train_error", "test_error", "train_loss", "test_loss", "epoch_seconds",
                  "elapsed_seconds")


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write a whole file so that readers see either the old or the new content, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def json_safe(value: Any) -> Any:
    """NaN and infinities become null: summary.json stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def metrics_csv(history: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return buf.getvalue()


def summarize(state: Any) -> dict[str, Any]:
    """The run's summary.json content, from a TrainState."""
    cfg, hist = state.config, state.history
    last = hist[-1] if hist else {}
    tests = [h["test_error"] for h in hist if math.isfinite(h["test_error"])]
    return json_safe({
        "status": state.status,
        "epochs_done": state.epoch,
        "epochs": cfg.epochs,
        "final": {k: last.get(k) for k in ("train_error", "test_error", "train_loss", "test_loss")},
        "best_test_error": min(tests) if tests else None,
        "seed": cfg.seed,
        **state.info,
        "wall_seconds": state.elapsed,
        "host": socket.gethostname(),
        "config": cfg.to_dict(),
    })


class RunDir:
    """Writes one run's results folder; its `report` method is a trainer report callback."""

    def __init__(self, path: str | Path, checkpoint: bool = False):
        self.path = Path(path)
        self.checkpoint = checkpoint  # folders are made on first write: a run that fails early leaves nothing

    def report(self, metrics: dict[str, Any], state: Any) -> None:
        """After each epoch: config, metrics and summary (and the checkpoint when asked)."""
        self.write(state)
        if self.checkpoint:
            from cep.train import save_state
            save_state(state, self.path / CHECKPOINT_FILE)

    def write(self, state: Any) -> None:
        write_atomic(self.path / CONFIG_FILE, yaml.safe_dump(state.config.to_dict(), sort_keys=False))
        write_atomic(self.path / METRICS_FILE, metrics_csv(state.history))
        write_atomic(self.path / SUMMARY_FILE, json.dumps(summarize(state), indent=2) + "\n")

    def finish(self, state: Any) -> None:
        """Final files: everything of `write`, plus the learning-curve figure."""
        self.write(state)
        if state.history:
            from cep.figures import learning_curve
            learning_curve(state.history, self.path / CURVE_FILE, title=run_title(state.config))


def run_title(cfg: Any) -> str:
    rule = ("C-" if cfg.continual else "") + cfg.rule.upper()
    extra = f", angle {cfg.angle:g}°" if cfg.rule == "vf" else ""
    return f"{rule}-{cfg.depth_name} ({cfg.setting}{extra}), seed {cfg.seed}"


def read_summary(path: str | Path) -> dict[str, Any]:
    return json.loads((Path(path) / SUMMARY_FILE).read_text())


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    with open(Path(path) / METRICS_FILE, newline="") as f:
        return [{k: float(v) if v not in ("", None) else math.nan for k, v in row.items()} for row in csv.DictReader(f)]
