"""The Ray Tune trainable of a sweep: one pack of trials (cep.sweep.plan.Pack; often a trial alone) through
the runner, reported to Tune round by round.

A thin wrapper of `cep.runner.run_pack`: every epoch the runner writes each member's
results folder (trials/<id>/, checkpoint.pt included) and after each round this
module reports every member's metrics to Tune, with their states as the Tune
checkpoint. A (re)started member continues from the newest of its Tune checkpoint
(a retry within this run) and its checkpoint.pt (every run: Tune's state is never
restored); a member whose state has already ended is not rerun. A member's own failure
(cep.runner.own_failure) lands in its error.txt (and errors.log) while the others train on;
a failure of the pack's shared program lands in each unfinished member's, saying so. Then
Tune sees the error and retries the pack: its ended members replayed, the rest trained.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray import tune

from cep.checkpoint import TrainState
from cep.config import TrialConfig
from cep.errors import UsageProblem
from cep.layout import experiment_of
from cep.member import Member, own_failure
from cep.reading import JSON_BYTES, parse_json, read_text_limited
from cep.results import CHECKPOINT_FILE, ERROR_FILE, ERRORS_LOG, NODE_FILE, append_log, read_folder, result_link
from cep.runner import resume_pack, rounds, run
from cep.safe_files import LinkRefused, append_text, pid_alive, write_atomic
from cep.sweep.faults import between_rounds, set_switches
from cep.sweep.plan import torch_threads
from cep.sweep.scheduling import resume_scheduler
from cep.sweep.store import trial_device
from cep.tracking.mirror import roots_of, start_mirror

STATE_FILE = "state.pt"  # inside a Tune checkpoint folder (a pack's members: state-<k>.pt)
MEMBERS_FILE = "members.json"  # inside a Tune checkpoint folder: the pack's trial ids, in order
OWN_FAILURE = "this trial failed on its own; the other trials of its pack trained on\n"
PACK_FAILURE = ("the program shared by this trial's pack ({ids}) failed, not this trial alone: every unfinished "
                "trial of the pack stopped\n")
STAGING_PREFIX = "cep-ckpt-"  # node-local temp folders holding a checkpoint while Tune copies it: <prefix><pid>-*


def restart_hint(trial_id: str) -> str:
    """What to do when none of a trial's saved states can be used (a rerun alone would fail the same way)."""
    return f"rerun cep-sweep with --restart --only '{trial_id}' to start this trial afresh"



@dataclass(frozen=True)
class TrialContext:
    """What every trial needs besides its id (bound to the trainable; fresh on every run and restore)."""

    configs: dict[str, dict[str, Any]]  # trial id -> resolved TrialConfig dict (out_dir = trials/<id>)
    resources: dict[str, float]
    packs: dict[str, tuple[str, ...]] = field(default_factory=dict)  # pack id -> member trial ids
    scheduler: dict[str, Any] | None = None  # a search's scheduler, per member (cep.sweep.scheduling)
    switches: dict[str, str] = field(default_factory=dict)  # the driver's test switches (cep.sweep.faults)
    tracking: dict[str, Any] | None = None  # cep.tracking.settings.Tracking as a dict; None: no tracker
    experiment: str = ""  # the experiment folder's name (trackers group the trials by it)


def _member_record(trial_id: str, state: TrainState) -> dict[str, Any]:
    """A member's line in a Tune report: its last epoch's metrics (or where it stands), status, and the epoch
    of its collapse (None: none so far) with the error that showed it, and of its drift's start (cep.health)."""
    last = dict(state.history[-1]) if state.history else {"epoch": state.epoch}
    collapse = state.info.get("collapsed", {})
    return {**last, "id": trial_id, "epochs": state.config.epochs, "status": state.status,
            "collapsed_epoch": collapse.get("epoch"), "collapse_seen_in": collapse.get("seen_in", "train_error"),
            "drifting_epoch": state.info.get("drifting", {}).get("epoch")}


def _tune_report(pack_id: str, members: list[Member], replayed: bool = False) -> None:
    """Report a round (every member's latest state) to Tune, with the members' checkpoint.pt files as the
    Tune checkpoint. A trial alone also has its metrics at the top level, as Tune's own files show them."""
    records = [_member_record(m.id, m.state) for m in members]
    result: dict[str, Any] = {"trial_id": pack_id, "replayed": replayed, "members": records,
                              "epoch": min(r["epoch"] for r in records), "epochs": max(r["epochs"] for r in records)}
    if len(records) == 1:
        result.update({k: v for k, v in records[0].items() if k != "id"})
    with tempfile.TemporaryDirectory(prefix=f"{STAGING_PREFIX}{os.getpid()}-") as d:
        for k, m in enumerate(members):
            if (m.folder / CHECKPOINT_FILE).exists():
                shutil.copyfile(m.folder / CHECKPOINT_FILE, Path(d) / _state_file(k, len(members)))
        (Path(d) / MEMBERS_FILE).write_text(json.dumps([m.id for m in members]))
        tune.report(result, checkpoint=tune.Checkpoint.from_directory(d))


def _state_file(k: int, n: int) -> str:
    return STATE_FILE if n == 1 else f"state-{k}.pt"


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
        if pid.isdigit() and old and not pid_alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)


def _write_node(folder: Path) -> None:
    try:
        ctx = ray.get_runtime_context()
        node_id, ip = ctx.get_node_id(), ray.util.get_node_ip_address()
    except Exception:  # outside Ray (tests calling the trainable directly)
        node_id, ip = "-", "-"
    write_atomic(folder / NODE_FILE, f"host {socket.gethostname()}\nnode_ip {ip}\nray_node_id {node_id}\n"
                                     f"pid {os.getpid()}\nstarted {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")


def run_pack_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """The Tune trainable: one pack of trials (often a trial alone), epoch by epoch, resumable exactly;
    errors land in each unfinished member's trials/<id>/error.txt."""
    import torch

    for name in ("ray.train", "ray.tune"):  # no "Checkpoint successfully created" line per epoch in the console
        logging.getLogger(name).setLevel(logging.WARNING)
    pack_id = config["trial_id"]  # Tune's trial: one pack
    set_switches(ctx.switches)
    ids = ctx.packs.get(pack_id, (pack_id,))
    torch.set_num_threads(torch_threads(ctx.resources))
    cfgs = [TrialConfig.from_dict(ctx.configs[i]) for i in ids]
    cfgs = [c.replace(device=trial_device(c, ctx.resources)) for c in cfgs]
    members = [Member(c, Path(c.out_dir or "."), root=experiment_of(Path(c.out_dir or "."), i), id=i,
                      hint=restart_hint(i)) for c, i in zip(cfgs, ids, strict=True)]
    for m in members:
        with own_failure(m):
            _open_folder(m)
    remove_stale_staging()
    try:
        _run(pack_id, members, ctx)
    except Exception as e:
        for m in members:  # its own failure, else the pack's (said so)
            header = OWN_FAILURE if m.error is not None else PACK_FAILURE.format(ids=", ".join(ids))
            _record_error(m.error or e, m, header if len(members) > 1 else "")
        raise


def _open_folder(m: Member) -> None:
    """A member's folder, before anything is read or written there: no link on the way, error.txt of the last
    attempt removed (error.txt means "the last attempt failed"), node.txt written."""
    link = result_link(m.root, m.folder)
    if link is not None:
        raise LinkRefused(link, "write")
    m.folder.mkdir(parents=True, exist_ok=True)
    (m.folder / ERROR_FILE).unlink(missing_ok=True)
    _write_node(m.folder)


def _record_error(e: Exception, m: Member, header: str) -> None:
    """error.txt (`header`, then the traceback), errors.log and trial.log of a member that has not ended
    (skipped where even that cannot be written: a full disk, a link; Tune still has the error)."""
    text = "".join(traceback.format_exception(e))
    cfg, folder = m.cfg, m.folder
    try:
        ended = read_folder(folder, "train" if cfg.action == "train" else "gdu", cfg.epochs).complete
    except (OSError, UsageProblem):
        ended = False
    if not ended:  # a member that had ended keeps its result
        try:
            write_atomic(folder / ERROR_FILE, header + text)
            append_text(folder / ERRORS_LOG, f"--- {time.strftime('%Y-%m-%dT%H:%M:%S%z')} on {socket.gethostname()}\n"
                                             f"{header}{text}")
            append_log(folder, f"error {type(e).__name__}: {e}")
        except (OSError, UsageProblem):
            pass


def _run(pack_id: str, members: list[Member], ctx: TrialContext) -> None:
    ids, cfgs = [m.id for m in members], [m.cfg for m in members]
    first = next((m.error for m in members if m.error is not None), None)
    if first is not None and (len(members) == 1 or cfgs[0].action != "train"):
        raise first
    if cfgs[0].action != "train":  # the gdu action: one analysis, one report
        outcome = run(cfgs[0], members[0].folder)
        tune.report({"epoch": 1, "epochs": 1, "status": outcome.status, "trial_id": pack_id,
                     "replayed": outcome.replayed, "members": [{"id": ids[0], "epoch": 1, "epochs": 1,
                                                                "status": outcome.status}]})
        return
    with _tune_saved_states(ids) as saved:
        resume_pack(members, saved)
    scheduler = resume_scheduler(ctx.scheduler, ids, [m.resumed.state if m.resumed else None for m in members],
                                 cfgs[0].epochs)
    folder_of = {m.id: m.folder for m in members}
    mirror = start_mirror(ctx.tracking, ctx.experiment, roots_of(list(folder_of.values()), ids),
                          {i: pack_id for i in ids})
    between_rounds(members)
    try:
        for trained in rounds(members):
            for e in trained:
                mirror.round(e.id, folder_of[e.id])
            if scheduler is not None:
                scheduler.after_round(trained)
            _tune_report(pack_id, [m for m in members if m.state is not None])
            between_rounds(members, trained)
    finally:  # ended, stopped by a scheduler or failed: each member's run gets what its folder holds
        for i, f in folder_of.items():
            mirror.close(i, f)
    if all(m.outcome.replayed for m in members):  # Tune still needs one report of the trial's end
        _tune_report(pack_id, members, replayed=True)


@contextmanager
def _tune_saved_states(ids: list[str]) -> Iterator[dict[str, list[tuple[str, Path]]]]:
    """Tune's checkpoint of this pack, as runner candidates (source, file) per member, while it is readable."""
    ckpt = tune.get_checkpoint()
    if ckpt is None:
        yield {}
        return
    with ckpt.as_directory() as d:
        listed = Path(d) / MEMBERS_FILE
        try:
            names = (parse_json(read_text_limited(listed, JSON_BYTES, MEMBERS_FILE)) if listed.exists()
                     else ids[:1])  # before packs: one trial
        except (OSError, ValueError):
            names = []
        files = {i: Path(d) / _state_file(k, len(names)) for k, i in enumerate(names) if isinstance(i, str)}
        yield {i: [("Tune checkpoint", p)] for i, p in files.items() if i in ids and p.exists()}
