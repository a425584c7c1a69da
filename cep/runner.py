"""Run trials in their results folders, as a loop their callers own: `rounds(members)` resumes the members
of a pack (a trial alone is a pack of one), trains a round, saves it and yields it.

`cep train`, `cep run`, `cep-sweep --trial ID --local` and the Ray Tune trainable loop over `rounds`
(`run`: a trial to its end, and the gdu action); they differ only in what a round means to them (a
terminal line, a Tune report, a scheduler's decision). Here, for every member of a pack:

* the newest valid saved state is found (checkpoint.pt, plus copies the caller knows of, e.g. Ray
  Tune's); a damaged copy is skipped with a warning, a state of another configuration
  (TrialConfig.result_differences) is refused; a larger `epochs` continues a finished run (exactly as
  a run started with that many epochs), one below the epochs done is refused;
* a member whose saved state has ended is not rerun ("replayed": its files are rewritten, nothing is trained);
* every epoch, the diverging one included, is written to the folder (config, metrics, summary, and the
  checkpoint when `cfg.checkpoint`) once every member has finished it (a failure loses the round whole);
* a member's own failure (its folder, its saved states, its files: `own_failure`) ends that member alone, the
  others train on; the end of the rounds raises it. A failure of the shared program (the round's training,
  the data, memory or the device) is the pack's.
* the end writes the learning-curve figure; trial.log gets a line per event.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from cep.checkpoint import CheckpointError, TrainState, load_state, new_state, save_best, save_state
from cep.config import RUN_FIELDS, TrialConfig
from cep.device import resolve_device
from cep.errors import UsageProblem
from cep.gdu.report import run_gdu
from cep.health import collapse_line, ended_by_drift
from cep.layout import GDU_DIR
from cep.member import RESTART_HINT, Member, MemberEpoch, Outcome, Resumed, TrialLog, own_failure
from cep.results import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    CURVE_FILE,
    SUMMARY_FILE,
    config_edit_line,
    config_edits,
    read_folder,
    read_summary,
    result_link,
    run_title,
    write_results,
)
from cep.safe_files import LinkRefused, remove_stale_temps
from cep.train import Progress, pack_data, train_round

PREVIOUS_CHECKPOINT = "checkpoint-previous.pt"  # a pack member's state a round back: a pack killed while it
# saves its members one after the other resumes in step from it (resume_pack)


class ResumeError(UsageProblem):
    """No saved state of the trial can be used: damaged, or of another configuration (one line)."""


def resume(cfg: TrialConfig, folder: str | Path | None, saved: Sequence[tuple[str, Path]] = (),
           restart_hint: str = RESTART_HINT, at_epoch: int | None = None) -> Resumed:
    """The most advanced readable saved state among `saved` (source, file) and the folder's checkpoint.pt
    (or, with `at_epoch`, one saved after that epoch, when there is one).

    checkpoint.pt counts only when `cfg.checkpoint`. On a tie the earlier candidate wins. Its run
    fields (where data and results live, the device) are taken from `cfg`: only they may differ.
    """
    found = _readable_states(cfg, folder, saved, restart_hint)
    if not found:
        return Resumed(None)
    at = [r for r in found if r.state.epoch == at_epoch]
    best = at[0] if at else max(found, key=lambda r: (r.state.epoch, r.state.status != "running"))
    state = best.state
    # epochs only says where to stop: the first N epochs are the same whatever the total (the generator in
    # the state continues the data order), so a run may be continued to more epochs, or stopped earlier
    differ = [k for k in cfg.result_differences(state.config) if k != "epochs"]
    if differ:
        raise ResumeError(f"{best.source} of trial {folder} belongs to a different configuration "
                          f"({', '.join(differ)} differ); {restart_hint}")
    if state.epoch > cfg.epochs:
        raise ResumeError(f"{best.source} of trial {folder} has {state.epoch} epochs done, more than the "
                          f"{cfg.epochs} asked; ask for at least {state.epoch} epochs, or {restart_hint}")
    state.config = state.config.replace(epochs=cfg.epochs, **{k: getattr(cfg, k) for k in RUN_FIELDS})
    if state.status not in ("diverged", "collapsed") and not ended_by_drift(state):  # finished with fewer
        # epochs than now asked: it continues
        state.status = "finished" if state.epoch == cfg.epochs else "running"
    return best


def resume_pack(members: Sequence[Member], saved: dict[str, Sequence[tuple[str, Path]]]) -> None:
    """Where each member of a pack continues from, preferring states of one same epoch: a pack saves its
    members one after the other, so a kill while it saves can leave some a round ahead; their copy from
    the round before (Ray Tune's checkpoint of the pack) makes the pack continue in step, as uninterrupted.
    `saved` (further copies: source, file) is keyed by the member's id."""
    def resume_member(m: Member, at_epoch: int | None = None) -> Resumed:
        return resume(m.cfg, m.folder, saved.get(m.id, ()), m.hint, at_epoch)

    for m in members:
        if m.error is None:
            with own_failure(m):
                m.resumed = resume_member(m)
    # only members that train are kept in step: one that has ended is replayed as it ended (one that failed
    # alone before the others ended must not make them train again)
    training = [m for m in members if m.error is None and _running(m.resumed.state)]
    epochs = {m.resumed.epoch for m in training}
    if len(epochs) > 1:
        behind = min(epochs)
        for m in training:
            if m.resumed.epoch > behind:
                with own_failure(m):
                    m.resumed = resume_member(m, behind)


def _running(state: TrainState | None) -> bool:
    return state is None or state.status == "running"


def _readable_states(cfg: TrialConfig, folder: str | Path | None, saved: Sequence[tuple[str, Path]],
                     restart_hint: str) -> list[Resumed]:
    candidates = list(saved)
    for name in (CHECKPOINT_FILE, PREVIOUS_CHECKPOINT):
        if folder is not None and cfg.checkpoint and (Path(folder) / name).exists():
            candidates.append((name, Path(folder) / name))
    device = resolve_device(cfg.device)
    found, unreadable = [], []
    for source, path in candidates:  # one damaged copy must not cost the other
        try:
            found.append(Resumed(load_state(path, device), source))
        except CheckpointError as e:
            unreadable.append(str(e))
            TrialLog(folder)(f"warning: cannot read {source}: {e}")
    if not found and unreadable:
        raise ResumeError(f"cannot read any saved state of trial {folder}: {'; '.join(unreadable)}; {restart_hint}")
    return found


def run(cfg: TrialConfig, folder: str | Path | None = None, *, progress: Progress | None = None,
        hint: str = RESTART_HINT) -> Outcome:
    """Run the trial `cfg` to its end, in `folder` (None: write nothing), with no caller loop: the gdu
    action's analysis, or a training trial's rounds (`rounds`) as a pack of one."""
    member = Member(cfg, Path(folder) if folder is not None else None, hint=hint)
    if cfg.action == "gdu":
        prepare_folder(member)
        return _run_analysis(cfg, folder, member.log)
    for _ in rounds([member], progress=progress):
        pass
    return member.outcome


def prepare_folder(m: Member, name: str | None = None) -> None:
    """Before a member runs: no link on the way to its folder or at its files (LinkRefused), no temporary
    left by a killed run, and a hand-edited config.yaml said in one line (stderr, trial.log; rewritten)."""
    m.prepared = True
    if m.folder is None:
        return
    link = result_link(m.root or m.folder, m.folder)
    if link is not None:
        raise LinkRefused(link, "write")
    for folder in (m.folder, m.folder / GDU_DIR):
        remove_stale_temps(folder)
    edits = config_edits(m.folder, m.cfg.to_dict())
    if edits:
        line = config_edit_line(name or str(m.folder), edits)
        print(f"warning: {line}", file=sys.stderr)
        m.log(f"warning: {line}")


def start(members: Sequence[Member]) -> torch.device:
    """Open a pack before anything trains: its device (failing early and clearly on an unusable one), each
    member's folder prepared (prepare_folder) and where it continues from (`resume`; unless already known)."""
    device = resolve_device(members[0].cfg.device)
    for m in members:
        if not m.prepared and m.error is None:
            with own_failure(m):
                prepare_folder(m)
    for m in members:
        if m.resumed is None and m.error is None:
            with own_failure(m):
                m.resumed = resume(m.cfg, m.folder, restart_hint=m.hint)
    return device


def rounds(members: Sequence[Member], progress: Progress | None = None,
           show: str | None = None) -> Iterator[list[MemberEpoch]]:
    """Run trials that share their structure as one program (cep.train.train_round), each in its own folder
    exactly as a trial alone: resumed from its own saved state (`start`), replayed if it has ended, its folder
    written after each of its epochs. Yields each saved round: the members that trained in it, in pack order.
    Each member's `state` and, once it has ended, `outcome` are set on it. A member's own failure ends it
    alone (`own_failure`; also a caller's step between rounds): the others go on, and the first such failure
    is raised once they have ended. `progress` shows the member whose id is `show` (default: the first member
    that trains)."""
    device = start(members)
    states = _start_members(members, device)
    shown = None
    if show is not None:
        shown = next((m.state for m in members if m.id == show and m.state in states), None)
        progress = progress if shown is not None else None  # that member has ended: nothing to show
    if states:
        data = pack_data(states)
        by_state, order = {id(m.state): m for m in members}, {m.id: k for k, m in enumerate(members)}
        while done := train_round([s for s in states if by_state[id(s)].error is None], data, len(members) > 1,
                                  progress, shown):
            epochs = [MemberEpoch(by_state[id(st)].id, st, metrics) for metrics, st in done]
            _save_round(members, epochs)
            yield sorted([e for e in epochs if by_state[id(e.state)].error is None], key=lambda e: order[e.id])
    for m in members:
        if m.outcome is None:
            with own_failure(m):
                if m.folder is not None:
                    _finish(m.folder, m.state)
                m.log(f"end: {m.state.status} after epoch {m.state.epoch}")
                m.outcome = Outcome(m.state.status, m.state)
    failed = [m for m in members if m.error is not None]
    if failed:
        raise failed[0].error


def run_pack(members: Sequence[Member]) -> list[Outcome]:
    """A pack's rounds to their end, with no caller loop; each member's outcome."""
    for _ in rounds(members):
        pass
    return [m.outcome for m in members]


def _save_round(members: Sequence[Member], epochs: list[MemberEpoch]) -> None:
    """A round is saved once every member has finished it: a failure during the round loses it whole, so that
    the members of a pack stay in step (a trial alone: its epoch)."""
    by_id = {m.id: m for m in members}
    # every member's state first, then its files and log lines: a kill between two members' saves
    # leaves some a round ahead, resumed from their previous round (resume_pack) and logged once
    for e in epochs:
        m = by_id[e.id]
        if m.folder is not None and m.cfg.checkpoint:
            with own_failure(m):
                if len(members) > 1:
                    _keep_previous(m.folder)
                save_best(e.state, m.folder)
                save_state(e.state, m.folder / CHECKPOINT_FILE)
    for e in epochs:
        m = by_id[e.id]
        if m.folder is not None and m.error is None:
            with own_failure(m):
                _save_epoch(m, e.metrics, e.state)


def _start_members(members: Sequence[Member], device: torch.device) -> list[TrainState]:
    """The states of the members that train (resumed or new); an ended member's files are rewritten and its
    outcome set, without training."""
    states = []
    for m in members:
        if m.error is None:
            with own_failure(m):
                _start_member(m, device, len(members), states)
    return states


def _start_member(m: Member, device: torch.device, pack: int, states: list[TrainState]) -> None:
    m.state = m.resumed.state
    if m.state is not None and m.state.status != "running":  # ended earlier: rewrite its files, train nothing
        m.outcome = _replay(m, m.state)
        return
    if m.state is None:
        m.state = new_state(m.cfg, device)
    m.log(f"start after epoch {m.resumed.epoch} (from {m.resumed.source}) on {device}, "
          f"{torch.get_num_threads()} thread(s)" + (f", in a pack of {pack}" if pack > 1 else ""))
    states.append(m.state)


def _save_epoch(m: Member, metrics: dict[str, Any], st: TrainState) -> None:
    """One member's epoch in its folder once every member's state is saved: results, log lines."""
    write_results(m.folder, st)
    if metrics["status"] != "diverged":
        m.log(f"epoch {metrics['epoch']} done: test error {metrics['test_error']:.2f}%")
    collapse = st.info.get("collapsed")
    if collapse is not None and collapse["epoch"] == metrics["epoch"]:
        m.log(collapse_line(collapse) + ("; stopped (stop_on_collapse)" if st.status == "collapsed" else ""))


def _keep_previous(folder: Path) -> None:
    """checkpoint.pt as checkpoint-previous.pt (a hard link: no copy) before the next round replaces it."""
    current, tmp = folder / CHECKPOINT_FILE, folder / f".{PREVIOUS_CHECKPOINT}.{os.getpid()}.tmp"
    if not current.exists():
        return
    tmp.unlink(missing_ok=True)
    try:
        os.link(current, tmp)
    except OSError:  # a file system without hard links
        shutil.copyfile(current, tmp)
    os.replace(tmp, folder / PREVIOUS_CHECKPOINT)


def _replay(m: Member, state: TrainState) -> Outcome:
    """A member whose saved state has ended: nothing is trained; its folder's files are rewritten unless they
    already record that end (a finished folder run again stays byte for byte as it was)."""
    if m.folder is not None:
        from_folder = m.resumed is not None and m.resumed.source == CHECKPOINT_FILE
        if m.cfg.checkpoint and not from_folder:
            save_state(state, m.folder / CHECKPOINT_FILE)
        if not (from_folder and _records_end(m.folder, state)):
            _finish(m.folder, state)
    m.log(f"replay: already {state.status} after epoch {state.epoch} ({m.resumed.source if m.resumed else ''}); "
          "not rerun")
    return Outcome(state.status, state, replayed=True)


def _records_end(folder: Path, state: TrainState) -> bool:
    """Whether the folder's files already say how `state` ended (status, epochs, the figure)."""
    found = read_folder(folder, state.config.action, state.config.epochs)
    summary = found.summary or {}
    return (summary.get("status") == state.status and summary.get("epochs_done") == state.epoch
            and len(found.metrics) == len(state.history) and (folder / CONFIG_FILE).is_file()
            and (not state.history or (folder / CURVE_FILE).is_file()))


def _finish(folder: str | Path, state: TrainState) -> None:
    """The folder's final files: results plus the learning-curve figure."""
    write_results(folder, state)
    if state.history:
        from cep.figures import learning_curve  # matplotlib is loaded only when a figure is drawn

        learning_curve(state.history, Path(folder) / CURVE_FILE, title=run_title(state.config),
                       collapsed_epoch=state.info.get("collapsed", {}).get("epoch"),
                       initial_angles=state.info.get("measured_angle"))


def _run_analysis(cfg: TrialConfig, folder: str | Path | None, log: TrialLog) -> Outcome:
    """The gdu action: one analysis, not rerun once its summary says it is done."""
    summary = Path(folder) / SUMMARY_FILE if folder is not None else None
    if summary is not None and summary.exists() and cfg.checkpoint:
        try:
            done = read_summary(summary.parent).get("status", "finished") == "finished"
        except (OSError, ValueError, AttributeError, LinkRefused):
            done = False
        if done:
            log("replay: gdu analysis already done; not rerun")
            return Outcome("finished", replayed=True)
    log(f"start gdu analysis on {cfg.device}")
    run_gdu(cfg)
    log("end: gdu analysis done")
    return Outcome("finished")
