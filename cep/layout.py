"""The experiment folder's layout, in one place: sweep, aggregate and runner all name its parts from here.

    <storage>/<name>/sweep.json           the resolved trial list and its fingerprint (SWEEP_FILE)
    <storage>/<name>/trials/<trial id>/    the trial's results folder (cep.results; its gdu/ analysis: GDU_DIR)
    <storage>/<name>/summary/              the aggregator's output (SUMMARY_DIR)
    <storage>/<name>/tune/                 Ray Tune's own files of the latest run, made afresh, never read back
    <storage>/<name>/.cep-sweep.lock       held by the process that runs the experiment (cep.sweep.lock)
    <storage>/<name>/ray.log               Ray's and Tune's log lines, the trials' worker output

The trial id's `/`-separated segments are nested folders under trials/. A trial itself (`Trial`: id, experiment,
grid values, TrialConfig) is defined here too, importable without the sweep (the aggregator reads trials back
as cep.aggregate.read.TrialResult).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cep.config import TrialConfig
from cep.reading import JSON_BYTES, parse_json
from cep.safe_files import read_bytes

SWEEP_FILE = "sweep.json"
TRIALS_DIR = "trials"
SUMMARY_DIR = "summary"
GDU_DIR = "gdu"  # in a trial's results folder: the gradient analysis's figures and data
TUNE_DIR = "tune"
RAY_LOG = "ray.log"  # in the experiment folder: Ray's and Tune's own log lines, and the trials' worker output
LOCK_FILE = ".cep-sweep.lock"
DISCARDED = ".discarded-"  # what --restart moves out of the way before deleting it


def experiment_dir(storage: str, name: str) -> Path:
    """`<storage>/<name>` as an absolute local path (shared filesystems are local paths too)."""
    return Path(storage).expanduser().absolute() / name


def trial_dir(exp_dir: str | Path, trial_id: str) -> Path:
    return Path(exp_dir) / TRIALS_DIR / trial_id


def experiment_of(folder: str | Path, trial_id: str) -> Path:
    """The experiment folder of a trial folder trials/<trial id>/ (the inverse of trial_dir)."""
    return Path(folder).parents[len(Path(trial_id).parts)]


def read_sweep_json(exp_dir: str | Path) -> Any:
    """sweep.json's parsed content, the one reader (bounded, never through a link); the caller words the errors:
    LinkRefused, OSError, ValueError (UnicodeDecodeError included)."""
    return parse_json(read_bytes(Path(exp_dir) / SWEEP_FILE, limit=JSON_BYTES, what=SWEEP_FILE).decode("utf-8"))


@dataclass(frozen=True)
class Trial:
    """One trial of a sweep (one row, its own folder trials/<id>/): its id, where it came from, and its complete
    configuration. The aggregator reads trials back as cep.aggregate.read.TrialResult."""

    id: str
    experiment: str | None
    grid: dict[str, Any]  # the grid values that made this trial (JSON-friendly)
    config: TrialConfig

    def record(self) -> dict[str, Any]:
        """The trial's entry in sweep.json."""
        return {"id": self.id, "experiment": self.experiment, "grid": self.grid, "config": self.config.to_dict()}
