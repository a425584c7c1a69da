"""What a tracker is given of a trial: its folder as read by the one reader (cep.results.read_folder), plus
tracking-<tracker>.json, where each tracker's run id for this trial is kept (so that a resumed trial continues its run).
"""

from __future__ import annotations

import json
import math
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cep.reading import JSON_BYTES, parse_json
from cep.results import (
    CONFIG_FILE,
    CURVE_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    TRACKING_FILES,
    FolderState,
    read_folder,
    write_atomic,
)
from cep.safe_files import read_bytes

ARTIFACTS = (CURVE_FILE, METRICS_FILE, SUMMARY_FILE, CONFIG_FILE)  # what a trial's run gets at its end


@dataclass
class TrialView:
    """One trial as its folder shows it; `grid` are the values that made it (tags), `experiment` its sweep."""

    trial_id: str
    folder: Path
    experiment: str
    state: FolderState
    grid: dict[str, Any] = field(default_factory=dict)
    pack: str | None = None

    @property
    def rows(self) -> list[dict[str, float]]:
        """The epochs of metrics.csv, each with its epoch as an int under "epoch"."""
        return [r for r in self.state.metrics if isinstance(r.get("epoch"), float) and math.isfinite(r["epoch"])]

    @property
    def config(self) -> dict[str, Any]:
        c = (self.state.summary or {}).get("config")
        return c if isinstance(c, dict) else {}

    @property
    def status(self) -> str:
        return self.state.status

    @property
    def provenance(self) -> dict[str, Any]:
        p = (self.state.summary or {}).get("provenance")
        return p if isinstance(p, dict) else {}

    def artifacts(self) -> list[Path]:
        paths = [self.folder / n for n in ARTIFACTS]
        return [p for p in paths if p.is_file() and not p.is_symlink()]


def view(trial_id: str, folder: str | Path, experiment: str, grid: dict[str, Any] | None = None,
         pack: str | None = None, root: str | Path | None = None) -> TrialView:
    """Read the trial folder (never through a link below `root`)."""
    folder = Path(folder)
    cfg_epochs = 1
    state = read_folder(folder, "train", cfg_epochs, root=root)
    epochs = (state.summary or {}).get("epochs")
    if isinstance(epochs, int) and epochs > 1:  # the completion check needs the epochs asked
        state = read_folder(folder, "train", epochs, root=root)
    return TrialView(trial_id, folder, experiment, state, dict(grid or {}), pack)


def metric_names(row: dict[str, float]) -> list[str]:
    """Every metric of an epoch row but the epoch itself (errors, losses, timings, health)."""
    return [k for k in row if k != "epoch"]


class TrackingFile:
    """tracking-<tracker>.json of a trial folder: a token that names this trial's run (a --restart removes the
    file, so a restarted trial gets a new run) and what the tracker keeps, written atomically (one file per
    tracker: trackers are fed in parallel)."""

    def __init__(self, folder: str | Path, tracker: str):
        self.path = Path(folder) / f"tracking-{tracker}.json"
        assert self.path.name in TRACKING_FILES  # what a --restart removes (cep.results.RESULT_FILES)
        self.data = self._read()

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        try:
            d = parse_json(read_bytes(self.path, limit=JSON_BYTES, what=self.path.name))
        except (OSError, ValueError):
            return {}
        return d if isinstance(d, dict) else {}

    @property
    def token(self) -> str:
        if not isinstance(self.data.get("token"), str):
            self.data["token"] = secrets.token_hex(6)
            self.save()
        return self.data["token"]

    def put(self, **values: Any) -> None:
        if any(self.data.get(k) != v for k, v in values.items()):
            self.data.update(values)
            self.save()

    def save(self) -> None:
        write_atomic(self.path, json.dumps(self.data, indent=1, sort_keys=True) + "\n")
