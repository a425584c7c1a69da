"""A sweep's experiment folder, without Ray: sweep.json's record, the resume check and the completion check.

Its layout: cep.layout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cep import __version__
from cep.config import TrialConfig
from cep.layout import DISCARDED, LOCK_FILE, RAY_LOG, SWEEP_FILE, TUNE_DIR, Trial, read_sweep_json, trial_dir
from cep.reading import read_text_limited
from cep.results import METRICS_FILE, FolderState, read_folder
from cep.safe_files import refuse_links, write_atomic
from cep.sweep.plan import Pack, compare, describe_change, fingerprint
from cep.sweep.spec import SweepError, SweepSpec

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(storage: str) -> bool:
    return bool(_URI.match(storage))


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
            **({"search": spec.search.record()} if spec.search is not None else {}),  # its points: trials' grid
            "trials": [t.record() for t in trials]}


def read_sweep_record(exp_dir: str | Path) -> dict[str, Any] | None:
    """sweep.json's content (None when absent); a damaged one is a SweepError naming it and the ways out."""
    path = Path(exp_dir) / SWEEP_FILE
    if not path.exists():
        return None
    try:
        record = read_sweep_json(exp_dir)
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
        check_ours(exp_dir)
        return None
    change = describe_change(record["trials"], trials)
    if change:
        raise SweepError([f"{exp_dir}: this experiment was started from a different trial list ({change}); "
                          "rerun with --name NEW to keep it and start another, or --restart to discard it"])
    return record


def _own_file(name: str) -> bool:
    """Whether a file without sweep.json beside it is what a run of ours leaves when killed before writing
    sweep.json, or while undoing a refused start: the folder is then no other program's, and a run starts it."""
    return (name in (LOCK_FILE, RAY_LOG, TUNE_DIR) or name.startswith((STORAGE_PROBE, DISCARDED, ".write-probe."))
            or (name.startswith(f".{Path(SWEEP_FILE).stem}.") and name.endswith(".tmp.json")))


def grown_record(record: dict[str, Any], spec: SweepSpec, trials: Sequence[Trial]) -> dict[str, Any] | None:
    """sweep.json for a trial list that grows the recorded one (more trials, more epochs); None when the same.

    Keeps `created` and the history of growth.
    """
    change = compare(record["trials"], trials)
    if not change.growth:
        return None
    grown = sweep_record(spec, trials)
    grown["created"] = record.get("created", grown["created"])
    grown["grown"] = [*record.get("grown", []), {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "what": change.growth}]
    return grown


def discard(exp_dir: Path, trial_ids: Sequence[str] | None = None) -> Path | None:
    """--restart's first step: move the experiment (only a cep-sweep folder), or with `trial_ids` those trials'
    folders, out of the way in one rename each; returns what to delete next (None: nothing there).

    The experiment path is at every moment the old experiment or nothing (or, per trial, the old trial or
    nothing), whatever fails later: deleting the moved folder is `delete_discarded`'s job.
    """
    if not exp_dir.exists():
        return None
    if trial_ids is None:
        check_ours(exp_dir, restarting=True)
        trash = exp_dir.with_name(f"{DISCARDED}{exp_dir.name}-{uuid.uuid4().hex[:8]}")
        _rename(exp_dir, trash)
        return trash
    for tid in trial_ids:  # never through a link out of the experiment (a copied or shared folder)
        refuse_links(exp_dir, trial_dir(exp_dir, tid), "delete")
    trash = exp_dir / f"{DISCARDED}{uuid.uuid4().hex[:8]}"
    trash.mkdir()
    for k, tid in enumerate(trial_ids):
        if trial_dir(exp_dir, tid).exists():
            _rename(trial_dir(exp_dir, tid), trash / str(k))
    return trash


def check_ours(exp_dir: Path, restarting: bool = False) -> None:
    """Refuse (SweepError) a folder that holds another program's files: no sweep.json, and more than what a
    killed run of ours leaves."""
    if (exp_dir / SWEEP_FILE).exists() or not exp_dir.is_dir():
        return
    if any(not _own_file(p.name) for p in exp_dir.iterdir()):
        what = f"{exp_dir} is not a cep-sweep experiment (no {SWEEP_FILE})"
        raise SweepError([f"--restart: {what}; not deleting it" if restarting else
                          f"{exp_dir}: exists and is not a cep-sweep experiment (no {SWEEP_FILE}); "
                          "choose another --name or --storage"])


def _rename(src: Path, dst: Path) -> None:
    try:
        os.rename(src, dst)
    except OSError as e:
        raise SweepError([f"--restart: {src}: cannot move it out of the way to discard it ({e.strerror}); "
                          "nothing was discarded; fix that, or use --name NEW to start another experiment"]
                         ) from None


def delete_discarded(trash: Path) -> str:
    """Delete what `discard` moved away; "" when done, else a warning line naming what is left."""
    try:
        shutil.rmtree(trash)
    except OSError as e:
        return (f"warning: --restart: could not delete all of the discarded {trash} ({e.strerror}: {e.filename}); "
                "the experiment starts afresh without it; delete it when that is fixed")
    return ""


def stale_discarded(exp_dir: Path) -> list[Path]:
    """What earlier, killed or failed --restart runs of this experiment left to delete (only its lock's holder
    may call this: a live --restart holds the lock while it deletes)."""
    ours = re.compile(re.escape(f"{DISCARDED}{exp_dir.name}-") + "[0-9a-f]{8}")  # not those of "<name>-2"
    return [*(p for p in exp_dir.parent.glob(f"{DISCARDED}*") if ours.fullmatch(p.name)),
            *exp_dir.glob(f"{DISCARDED}*")]


def fresh_tune_dir(exp_dir: Path) -> Path:
    """Ray Tune's folder for this run, emptied: Tune's state is never read back (its files are pickles that a
    copied or shared folder could have crafted); each run's Tuner covers what our trial folders say remains."""
    path = exp_dir / TUNE_DIR
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)
    return path


def pack_plan(packs: Sequence[Pack]) -> list[list[str]]:
    """The packs as sweep.json records them: each pack's trial ids."""
    return [p.ids for p in packs]


# ----------------------------------------------------------- completion check
def outcomes(exp_dir: str | Path, trials: Sequence[Trial]) -> dict[str, FolderState]:
    """Where each trial stands according to its results folder (the truth, whatever Ray Tune says), by id."""
    return {t.id: _rerun_damaged(read_folder(trial_dir(exp_dir, t.id), t.config.action, t.config.epochs,
                                             root=exp_dir),
                                 t.config.action) for t in trials}


def _rerun_damaged(st: FolderState, action: str) -> FolderState:
    """A trained trial whose metrics.csv is missing or damaged is incomplete for the sweep: a rerun replays
    it from its checkpoint, rewriting its files (the aggregator still shows what it can read)."""
    if not st.complete or action != "train":
        return st
    lost = [n for n in st.notes if n.startswith((f"{METRICS_FILE} unreadable", f"no {METRICS_FILE}"))]
    if st.status == "finished" and not lost and [r.get("epoch") for r in st.metrics] != list(
            range(1, st.epochs_done + 1)):
        lost = [f"{METRICS_FILE} does not list epochs 1 to {st.epochs_done}"]
    if lost:
        st.status = "interrupted"
        st.notes.extend(n for n in lost if n not in st.notes)
    return st


# ------------------------------------------------------- how a trial runs
def trial_device(cfg: TrialConfig, resources: dict[str, float]) -> str:
    """The GPU Ray assigned (it sets CUDA_VISIBLE_DEVICES) when the trial asked for one, else the CPU."""
    if cfg.device != "auto":
        return cfg.device
    return "cuda" if resources.get("gpu", 0) > 0 else "cpu"


# ---------------------------------------------------------- shared storage
STORAGE_PROBE = ".storage-probe-"  # prefix of the file each node must see (removed right after the check)


def storage_probe(path: str, token: str) -> tuple[str, bool]:
    """Run on every node of a cluster: this host's name, and whether it sees `path` holding `token`."""
    try:
        return socket.gethostname(), read_text_limited(path, len(token) + 1, "storage probe") == token
    except OSError:
        return socket.gethostname(), False
