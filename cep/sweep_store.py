"""A sweep's experiment folder, without Ray: its layout, sweep.json, the resume check and the completion check.

Layout (the aggregator relies on it):
    <storage>/<name>/sweep.json           the resolved trial list and its fingerprint
    <storage>/<name>/trials/<trial id>/    config.yaml, metrics.csv, summary.json, learning_curve.png,
                                           checkpoint.pt (exact trainer state), node.txt, trial.log,
                                           error.txt (only while the trial's last attempt failed)
    <storage>/<name>/...                   Ray Tune's own files (tuner.pkl, experiment_state-*.json,
                                           one folder per trial with checkpoint_00000N/)
    <storage>/<name>/subsets/only-<hash>/  Ray Tune's files of an `--only` run (its trials still write
                                           into trials/<trial id>/)

The trial id's `/`-separated segments are nested folders under trials/.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cep import __version__
from cep.config import TrialConfig
from cep.results import SUMMARY_FILE, write_atomic
from cep.sweep import SweepError, SweepSpec, Trial, describe_change, fingerprint

SWEEP_FILE = "sweep.json"
TRIALS_DIR = "trials"
SUBSETS_DIR = "subsets"
ERROR_FILE = "error.txt"  # the last attempt's error; removed when the trial runs again
ERRORS_LOG = "errors.log"  # every error of the trial, appended
NODE_FILE = "node.txt"  # host, node IP and Ray node id of the attempt now running or last run
LOG_FILE = "trial.log"  # one line per start, epoch done, replay and end: what ran where, for humans and tests
FAULTS_FILE = ".faults_injected"  # test-only counter of CEP_FAULT_INJECT
FAULT_ENV = "CEP_FAULT_INJECT"
SLEEP_ENV = "CEP_TEST_EPOCH_SLEEP"
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(storage: str) -> bool:
    return bool(_URI.match(storage))


def experiment_dir(storage: str, name: str) -> Path:
    """`<storage>/<name>` as an absolute local path (shared filesystems are local paths too)."""
    return Path(storage).expanduser().absolute() / name


def trial_dir(exp_dir: str | Path, trial_id: str) -> Path:
    return Path(exp_dir) / TRIALS_DIR / trial_id


def resolve_trials(trials: Sequence[Trial], exp_dir: str | Path, cwd: str | Path | None = None) -> list[Trial]:
    """Trials as they run in the sweep: results in trials/<id>/, checkpoints on, data_dir absolute."""
    base = Path(cwd) if cwd is not None else Path.cwd()
    out = []
    for t in trials:
        data_dir = Path(t.config.data_dir).expanduser()
        cfg = t.config.replace(out_dir=str(trial_dir(exp_dir, t.id)), checkpoint=True,
                               data_dir=str(data_dir if data_dir.is_absolute() else base / data_dir))
        out.append(Trial(t.id, t.experiment, t.grid, cfg))
    return out


def sweep_record(spec: SweepSpec, trials: Sequence[Trial]) -> dict[str, Any]:
    """The content of sweep.json: what the experiment is, for the aggregator and for resume checks."""
    return {"name": spec.name, "description": spec.description, "fingerprint": fingerprint(trials),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cep_version": __version__,
            "sweep_file": str(Path(spec.source).absolute()) if spec.source else None,
            "resources": spec.resources, "max_failures": spec.max_failures,
            "trials": [t.record() for t in trials]}


def read_sweep_record(exp_dir: str | Path) -> dict[str, Any] | None:
    path = Path(exp_dir) / SWEEP_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text())


def write_sweep_record(exp_dir: str | Path, record: dict[str, Any]) -> None:
    write_atomic(Path(exp_dir) / SWEEP_FILE, json.dumps(record, indent=2) + "\n")


def check_experiment(exp_dir: str | Path, trials: Sequence[Trial]) -> dict[str, Any] | None:
    """The stored sweep.json when the folder holds this very sweep, None when it is new.

    Refuses (SweepError) a folder that holds another sweep (different trial
    list) or something that is not a sweep at all.
    """
    exp_dir = Path(exp_dir)
    record = read_sweep_record(exp_dir)
    if record is None:
        if exp_dir.exists() and any(exp_dir.iterdir()):
            raise SweepError([f"{exp_dir}: exists and is not a cep-sweep experiment (no {SWEEP_FILE}); "
                              "choose another --name or --storage"])
        return None
    if record.get("fingerprint") != fingerprint(trials):
        raise SweepError([f"{exp_dir}: this experiment was started from a different trial list "
                          f"({describe_change(record.get('trials', []), trials)}); "
                          "rerun with --name NEW to keep it and start another, or --restart to discard it"])
    return record


def restart(exp_dir: str | Path, trial_ids: Sequence[str] | None = None) -> None:
    """Discard an experiment (only a cep-sweep folder), or with `trial_ids` just those trials' results."""
    exp_dir = Path(exp_dir)
    if not exp_dir.exists():
        return
    if not (exp_dir / SWEEP_FILE).exists() and any(exp_dir.iterdir()):
        raise SweepError([f"--restart: {exp_dir} is not a cep-sweep experiment (no {SWEEP_FILE}); "
                          "not deleting it"])
    if trial_ids is None:
        shutil.rmtree(exp_dir)
        return
    for tid in trial_ids:
        shutil.rmtree(trial_dir(exp_dir, tid), ignore_errors=True)
    shutil.rmtree(subset_tune_dir(exp_dir, trial_ids), ignore_errors=True)


def subset_tune_dir(exp_dir: str | Path, trial_ids: Sequence[str]) -> Path:
    """Where Ray Tune keeps its files for an `--only` run of these trials (stable per selection)."""
    import hashlib

    digest = hashlib.sha256("\n".join(sorted(trial_ids)).encode()).hexdigest()[:10]
    return Path(exp_dir) / SUBSETS_DIR / f"only-{digest}"


# ----------------------------------------------------------- completion check
@dataclass(frozen=True)
class TrialOutcome:
    """Where one trial stands according to its results folder (the truth, whatever Tune says)."""

    id: str
    state: str  # finished | diverged | errored | incomplete | not started
    epoch: int
    epochs: int
    test_error: float | None = None
    detail: str = ""

    @property
    def complete(self) -> bool:
        return self.state in ("finished", "diverged")


def trial_outcome(exp_dir: str | Path, trial: Trial) -> TrialOutcome:
    folder = trial_dir(exp_dir, trial.id)
    epochs = trial.config.epochs if trial.config.action == "train" else 1
    summary: dict[str, Any] = {}
    if (folder / SUMMARY_FILE).exists():
        try:
            summary = json.loads((folder / SUMMARY_FILE).read_text())
        except (OSError, ValueError):
            summary = {}
    status = summary.get("status")
    done = int(summary.get("epochs_done") or 0)
    final = summary.get("final") or {}
    test_error = final.get("test_error") if isinstance(final, dict) else None
    if trial.config.action != "train" and summary and status in (None, "finished"):
        return TrialOutcome(trial.id, "finished", 1, 1, test_error)
    if status == "diverged":
        return TrialOutcome(trial.id, "diverged", done, epochs, test_error,
                            f"diverged at epoch {summary.get('diverged_at_epoch', done + 1)}")
    if status == "finished" and done >= epochs:
        return TrialOutcome(trial.id, "finished", done, epochs, test_error)
    if (folder / ERROR_FILE).exists():
        lines = [ln for ln in (folder / ERROR_FILE).read_text().splitlines() if ln.strip()]
        return TrialOutcome(trial.id, "errored", done, epochs, test_error,
                            (lines[-1].strip() if lines else "error") + f" (see {folder / ERROR_FILE})")
    if summary:
        return TrialOutcome(trial.id, "incomplete", done, epochs, test_error, f"stopped after epoch {done} of {epochs}")
    return TrialOutcome(trial.id, "not started", 0, epochs)


def outcomes(exp_dir: str | Path, trials: Sequence[Trial]) -> list[TrialOutcome]:
    return [trial_outcome(exp_dir, t) for t in trials]


# ------------------------------------------------------- how a trial runs
def trial_device(cfg: TrialConfig, resources: dict[str, float]) -> str:
    """The GPU Ray assigned (it sets CUDA_VISIBLE_DEVICES) when the trial asked for one, else the CPU."""
    if cfg.device != "auto":
        return cfg.device
    return "cuda" if resources.get("gpu", 0) > 0 else "cpu"


def torch_threads(resources: dict[str, float]) -> int:
    """Ray does not limit threads: give torch exactly the trial's CPUs (also for --local, for equal results)."""
    return max(1, int(resources.get("cpu", 1)))


# ---------------------------------------------------------- shared storage
STORAGE_PROBE = ".storage-probe-"  # prefix of the file each node must see (removed right after the check)


def storage_probe(path: str, token: str) -> tuple[str, bool]:
    """Run on every node of a cluster: this host's name, and whether it sees `path` holding `token`."""
    import socket

    try:
        return socket.gethostname(), Path(path).read_text() == token
    except OSError:
        return socket.gethostname(), False


# ------------------------------------------------------------- test-only hooks
@dataclass(frozen=True)
class Fault:
    """Test-only: make trials matching `pattern` raise during `epoch`, `times` times in all (None: always)."""

    pattern: str
    epoch: int
    times: int | None = 1


def parse_faults(text: str | None) -> list[Fault]:
    """`CEP_FAULT_INJECT="<trial id glob>:<epoch>[:<times>|always]"`, several separated by `;`."""
    faults = []
    for item in (text or "").split(";"):
        if not item.strip():
            continue
        parts = item.strip().split(":")
        try:
            if len(parts) not in (2, 3):
                raise ValueError
            times = None if len(parts) == 3 and parts[2] == "always" else int(parts[2]) if len(parts) == 3 else 1
            faults.append(Fault(parts[0], int(parts[1]), times))
        except ValueError:
            raise SweepError([f"{FAULT_ENV}={text}: expected <trial id glob>:<epoch>[:<times>|always] "
                              "(test-only)"]) from None
    return faults


def fault_due(faults: Sequence[Fault], trial_id: str, epoch: int, folder: str | Path) -> bool:
    """Whether to inject a fault now; counts injections in the trial folder so that retries see them."""
    for f in faults:
        if f.epoch == epoch and fnmatch.fnmatchcase(trial_id, f.pattern):
            counter = Path(folder) / FAULTS_FILE
            n = int(counter.read_text()) if counter.exists() else 0
            if f.times is None or n < f.times:
                write_atomic(counter, str(n + 1))
                return True
    return False
