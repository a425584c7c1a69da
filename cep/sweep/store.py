"""A sweep's experiment folder, without Ray: its layout, sweep.json, the resume check and the completion check.

Layout (the aggregator relies on it):
    <storage>/<name>/sweep.json           the resolved trial list and its fingerprint
    <storage>/<name>/trials/<trial id>/    the trial's results folder (cep.results): config.yaml,
                                           metrics.csv, summary.json, learning_curve.png, checkpoint.pt,
                                           trial.log, node.txt, error.txt, errors.log
    <storage>/<name>/...                   Ray Tune's own files (tuner.pkl, experiment_state-*.json,
                                           one folder per trial with checkpoint_00000N/)
    <storage>/<name>/subsets/only-<hash>/  Ray Tune's files of an `--only` run, or of a grown experiment's
                                           unfinished trials (its trials still write into trials/<trial id>/)

The trial id's `/`-separated segments are nested folders under trials/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cep import __version__
from cep.config import TrialConfig
from cep.reading import JSON_BYTES, parse_json, read_bytes_limited, read_text_limited
from cep.results import FolderState, read_folder, write_atomic
from cep.sweep.plan import Pack, compare, describe_change, fingerprint
from cep.sweep.spec import SweepError, SweepSpec, Trial

SWEEP_FILE = "sweep.json"
TRIALS_DIR = "trials"
SUBSETS_DIR = "subsets"
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
        cfg = t.config.with_run_fields(out_dir=str(trial_dir(exp_dir, t.id)), checkpoint=True,
                                       data_dir=str(data_dir if data_dir.is_absolute() else base / data_dir))
        out.append(Trial(t.id, t.experiment, t.grid, cfg))
    return out


def sweep_record(spec: SweepSpec, trials: Sequence[Trial], packs: Sequence[Pack] = ()) -> dict[str, Any]:
    """The content of sweep.json: what the experiment is, for the aggregator and for resume checks."""
    return {"name": spec.name, "description": spec.description, "fingerprint": fingerprint(trials),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cep_version": __version__,
            "sweep_file": str(Path(spec.source).absolute()) if spec.source else None,
            "resources": spec.resources, "max_failures": spec.max_failures,
            "packs": pack_plan(packs) if packs else [[t.id] for t in trials],
            "trials": [t.record() for t in trials]}


def read_sweep_record(exp_dir: str | Path) -> dict[str, Any] | None:
    """sweep.json's content (None when absent); a damaged one is a SweepError naming it and the ways out."""
    path = Path(exp_dir) / SWEEP_FILE
    if not path.exists():
        return None
    try:
        record = parse_json(read_bytes_limited(path, JSON_BYTES, SWEEP_FILE).decode("utf-8"))
        if not isinstance(record, dict) or not isinstance(record.get("trials"), list):
            raise ValueError("not a sweep record: no list of trials")
    except (OSError, ValueError) as e:  # truncated by a full disk, edited by hand, not JSON at all
        why = " ".join(str(e).split())[:160]
        raise SweepError([f"{path}: damaged ({type(e).__name__}: {why}); restore it from a copy, or rerun with "
                          "--restart to discard the experiment (or --name NEW to keep it)"]) from None
    return record


def write_sweep_record(exp_dir: str | Path, record: dict[str, Any]) -> None:
    write_atomic(Path(exp_dir) / SWEEP_FILE, json.dumps(record, indent=2) + "\n")


def check_experiment(exp_dir: str | Path, trials: Sequence[Trial]) -> dict[str, Any] | None:
    """The stored sweep.json when the folder holds this very sweep, None when it is new.

    Refuses (SweepError) a folder that holds another sweep (a trial removed or changed; adding trials
    or epochs grows it, see grown_record) or something that is not a sweep at all.
    """
    exp_dir = Path(exp_dir)
    record = read_sweep_record(exp_dir)
    if record is None:
        if exp_dir.exists() and any(exp_dir.iterdir()):
            raise SweepError([f"{exp_dir}: exists and is not a cep-sweep experiment (no {SWEEP_FILE}); "
                              "choose another --name or --storage"])
        return None
    change = describe_change(record["trials"], trials)
    if change:
        raise SweepError([f"{exp_dir}: this experiment was started from a different trial list ({change}); "
                          "rerun with --name NEW to keep it and start another, or --restart to discard it"])
    return record


def grown_record(record: dict[str, Any], spec: SweepSpec, trials: Sequence[Trial]) -> dict[str, Any] | None:
    """sweep.json for a trial list that grows the recorded one (more trials, more epochs); None when the same.

    Keeps `created`; `separate_tune` says that Ray Tune's own state in the folder (which cannot take new
    trials) is no longer used: from now on each run's unfinished trials get a Tune folder of their own.
    """
    change = compare(record["trials"], trials)
    if not change.growth:
        return None
    grown = sweep_record(spec, trials)
    grown["created"] = record.get("created", grown["created"])
    grown["grown"] = [*record.get("grown", []), {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "what": change.growth}]
    grown["separate_tune"] = True
    return grown


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
    # Ray Tune's files of partial runs: a restored one would count the discarded trials as done there
    shutil.rmtree(Path(exp_dir) / SUBSETS_DIR, ignore_errors=True)


def subset_tune_dir(exp_dir: str | Path, keys: Sequence[str]) -> Path:
    """Where Ray Tune keeps its files for a run of these trials or packs (stable per selection), when it is
    not the experiment's own plan: an `--only` selection, or another packing."""
    import hashlib

    digest = hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:10]
    return Path(exp_dir) / SUBSETS_DIR / f"only-{digest}"


def pack_plan(packs: Sequence[Pack]) -> list[list[str]]:
    """The packs as sweep.json records them: each pack's trial ids."""
    return [p.ids for p in packs]


def tune_dir(exp_dir: Path, packs: Sequence[Pack], full: bool, record: dict[str, Any] | None) -> Path:
    """Ray Tune's folder for running these packs: the experiment folder itself when they are the plan it
    was started with (so Tune restores it), else a folder of their own (trials still resume exactly from
    their checkpoints; only Tune's bookkeeping is new)."""
    plan = pack_plan(packs)
    recorded = (record or {}).get("packs", [[t["id"]] for t in (record or {}).get("trials", []) if isinstance(t, dict)])
    if full and (record is None or recorded == plan):
        return exp_dir
    return subset_tune_dir(exp_dir, [p.id if len(p.ids) == 1 else f"{p.id}={','.join(p.ids)}" for p in packs])


# ----------------------------------------------------------- completion check
def outcomes(exp_dir: str | Path, trials: Sequence[Trial]) -> dict[str, FolderState]:
    """Where each trial stands according to its results folder (the truth, whatever Ray Tune says), by id."""
    return {t.id: read_folder(trial_dir(exp_dir, t.id), t.config.action, t.config.epochs) for t in trials}


# ------------------------------------------------------- how a trial runs
def trial_device(cfg: TrialConfig, resources: dict[str, float]) -> str:
    """The GPU Ray assigned (it sets CUDA_VISIBLE_DEVICES) when the trial asked for one, else the CPU."""
    if cfg.device != "auto":
        return cfg.device
    return "cuda" if resources.get("gpu", 0) > 0 else "cpu"


def torch_threads(resources: dict[str, float]) -> int:
    """Ray does not limit threads: give torch exactly the trial's CPUs (also for --local, for equal results),
    at most this machine's CPUs (a cluster's trial may ask more than the node that runs it has; torch crashes
    at absurd thread counts)."""
    return max(1, min(int(min(resources.get("cpu", 1), 2**31)), os.cpu_count() or 1))


# ---------------------------------------------------------- shared storage
STORAGE_PROBE = ".storage-probe-"  # prefix of the file each node must see (removed right after the check)


def storage_probe(path: str, token: str) -> tuple[str, bool]:
    """Run on every node of a cluster: this host's name, and whether it sees `path` holding `token`."""
    import socket

    try:
        return socket.gethostname(), read_text_limited(path, len(token) + 1, "storage probe") == token
    except OSError:
        return socket.gethostname(), False
