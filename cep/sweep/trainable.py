"""The Ray Tune trainable of a sweep: one trial through the runner, reported to Tune epoch by epoch.

A thin wrapper of `cep.runner.run`: every epoch the runner writes the trial's
results folder (trials/<id>/, checkpoint.pt included) and this module reports
the epoch's metrics to Tune with that state as the Tune checkpoint. A (re)started
trial continues from the newest of its Tune checkpoint and its checkpoint.pt
(Tune's experiment snapshot may lag behind the trial); a trial whose state has
already ended reports its final metrics once and is not rerun. An error lands in
trials/<id>/error.txt (and errors.log) before Tune sees it.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune

from cep.config import TrialConfig
from cep.results import CHECKPOINT_FILE, ERROR_FILE, ERRORS_LOG, NODE_FILE, append_log, write_atomic
from cep.runner import run
from cep.sweep.faults import Fault, FaultInjected, fault_due
from cep.sweep.store import torch_threads, trial_device

STATE_FILE = "state.pt"  # inside a Tune checkpoint folder
STAGING_PREFIX = "cep-ckpt-"  # node-local temp folders holding a checkpoint while Tune copies it: <prefix><pid>-*


def restart_hint(trial_id: str) -> str:
    """What to do when none of a trial's saved states can be used (a rerun alone would fail the same way)."""
    return f"rerun cep-sweep with --restart --only '{trial_id}' to start this trial afresh"



@dataclass(frozen=True)
class TrialContext:
    """What every trial needs besides its id (bound to the trainable; fresh on every run and restore)."""

    configs: dict[str, dict[str, Any]]  # trial id -> resolved TrialConfig dict (out_dir = trials/<id>)
    resources: dict[str, float]
    faults: tuple[Fault, ...] = ()
    epoch_sleep: float = 0.0


def _tune_report(metrics: dict[str, Any], folder: Path, trial_id: str, epochs: int, replayed: bool = False) -> None:
    """Report one epoch to Tune with checkpoint.pt as the trial's Tune checkpoint."""
    result = {**metrics, "trial_id": trial_id, "epochs": epochs, "replayed": replayed}
    with tempfile.TemporaryDirectory(prefix=f"{STAGING_PREFIX}{os.getpid()}-") as d:
        shutil.copyfile(folder / CHECKPOINT_FILE, Path(d) / STATE_FILE)
        tune.report(result, checkpoint=tune.Checkpoint.from_directory(d))


def remove_stale_staging(min_age_s: float = 3600.0) -> None:
    """Remove the checkpoint staging folders of trial processes that were killed (they could not do it).

    A folder lives for a second; the age limit spares a live one whose pid this process cannot see
    (a container sharing /tmp but not the pid namespace).
    """
    for d in Path(tempfile.gettempdir()).glob(f"{STAGING_PREFIX}*-*"):
        pid = d.name[len(STAGING_PREFIX):].split("-", 1)[0]
        try:
            old = time.time() - d.stat().st_mtime > min_age_s
        except OSError:
            continue
        if pid.isdigit() and old and not _alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


def _write_node(folder: Path) -> None:
    try:
        ctx = ray.get_runtime_context()
        node_id, ip = ctx.get_node_id(), ray.util.get_node_ip_address()
    except Exception:  # outside Ray (tests calling the trainable directly)
        node_id, ip = "-", "-"
    write_atomic(folder / NODE_FILE, f"host {socket.gethostname()}\nnode_ip {ip}\nray_node_id {node_id}\n"
                                     f"pid {os.getpid()}\nstarted {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")


def run_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """The Tune trainable: one trial, epoch by epoch, resumable exactly; errors land in trials/<id>/error.txt."""
    import torch

    for name in ("ray.train", "ray.tune"):  # no "Checkpoint successfully created" line per epoch in the console
        logging.getLogger(name).setLevel(logging.WARNING)
    trial_id = config["trial_id"]
    cfg = TrialConfig.from_dict(ctx.configs[trial_id])
    folder = Path(cfg.out_dir or ".")
    torch.set_num_threads(torch_threads(ctx.resources))
    cfg = cfg.replace(device=trial_device(cfg, ctx.resources))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ERROR_FILE).unlink(missing_ok=True)  # a new attempt: error.txt means "the last attempt failed"
    _write_node(folder)
    remove_stale_staging()
    try:
        _run(cfg, folder, trial_id, ctx)
    except Exception as e:
        text = "".join(traceback.format_exception(e))
        write_atomic(folder / ERROR_FILE, text)
        with open(folder / ERRORS_LOG, "a") as f:
            f.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S%z')} on {socket.gethostname()}\n{text}")
        append_log(folder, f"error {type(e).__name__}: {e}")
        raise


def _run(cfg: TrialConfig, folder: Path, trial_id: str, ctx: TrialContext) -> None:
    if cfg.action != "train":
        outcome = run(cfg, folder)
        tune.report({"epoch": 1, "epochs": 1, "status": outcome.status, "trial_id": trial_id,
                     "replayed": outcome.replayed})
        return
    from cep.runner import resume

    with _tune_saved_state() as saved:
        resumed = resume(cfg, folder, saved, restart_hint(trial_id))

    def before_save(metrics: dict[str, Any], state: Any) -> None:
        if metrics["status"] != "diverged" and fault_due(ctx.faults, trial_id, metrics["epoch"], folder):
            raise FaultInjected(f"fault injected by CEP_FAULT_INJECT in epoch {metrics['epoch']} of {trial_id}")
        if ctx.epoch_sleep:
            time.sleep(ctx.epoch_sleep)

    def on_epoch(metrics: dict[str, Any], state: Any) -> None:
        _tune_report(metrics, folder, trial_id, cfg.epochs)

    outcome = run(cfg, folder, resumed=resumed, before_save=before_save, on_epoch=on_epoch,
                  restart_hint=restart_hint(trial_id))
    if outcome.replayed:  # Tune still needs one report of the trial's end
        state = outcome.state
        last = dict(state.history[-1]) if state.history else {"epoch": state.epoch}
        _tune_report({**last, "status": state.status}, folder, trial_id, cfg.epochs, replayed=True)


@contextmanager
def _tune_saved_state() -> Iterator[list[tuple[str, Path]]]:
    """Tune's checkpoint of this trial as a runner candidate (source, file), while it is readable."""
    ckpt = tune.get_checkpoint()
    if ckpt is None:
        yield []
        return
    with ckpt.as_directory() as d:
        path = Path(d) / STATE_FILE
        yield [("Tune checkpoint", path)] if path.exists() else []
