"""Run one trial in its results folder: the one place that resumes, reports and finishes a trial.

`cep train`, `cep run`, `cep gdu`, `cep-sweep --trial ID --local` and the Ray Tune
trainable all call `run`; they differ only in how they show progress and what
they do with each epoch's report (a terminal line, a Tune report). Here:

* the newest valid saved state is found (checkpoint.pt, plus copies the caller
  knows of, e.g. Ray Tune's); a damaged copy is skipped with a warning, a state
  of another configuration (TrialConfig.result_differences) is refused; a larger `epochs` continues
  a finished run (exactly as a run started with that many epochs), one below the epochs done is refused;
* a trial whose saved state has ended is not rerun ("replayed": its files are
  rewritten, nothing is trained);
* every epoch, the diverging one included, is written to the folder (config,
  metrics, summary, and the checkpoint when `cfg.checkpoint`) and then reported;
* the end writes the learning-curve figure; trial.log gets a line per event.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cep.config import RUN_FIELDS, TrialConfig
from cep.errors import UsageProblem
from cep.results import CHECKPOINT_FILE, CURVE_FILE, SUMMARY_FILE, append_log, run_title, write_results
from cep.train import CheckpointError, Progress, TrainState, load_state, resolve_device, save_state, train

OnEpoch = Callable[[dict[str, Any], TrainState], None]  # (the epoch's metrics, the state after it)
OnStart = Callable[["Resumed"], None]
START = "the start"  # the source of a trial that has no saved state


class ResumeError(UsageProblem):
    """No saved state of the trial can be used: damaged, or of another configuration (one line)."""


@dataclass
class Resumed:
    """Where a trial continues from: a saved TrainState (None: from the start) and where it was read."""

    state: TrainState | None
    source: str = START

    @property
    def epoch(self) -> int:
        return self.state.epoch if self.state is not None else 0


@dataclass
class Outcome:
    """How a run ended: the trainer's final state (None for the gdu action) and whether it only replayed."""

    status: str  # finished | diverged
    state: TrainState | None = None
    replayed: bool = False


def resume(cfg: TrialConfig, folder: str | Path | None, saved: Sequence[tuple[str, Path]] = (),
           restart_hint: str = "delete it to start afresh") -> Resumed:
    """The most advanced readable saved state among `saved` (source, file) and the folder's checkpoint.pt.

    checkpoint.pt counts only when `cfg.checkpoint`. On a tie the earlier candidate wins. Its run
    fields (where data and results live, the device) are taken from `cfg`: only they may differ.
    """
    candidates = list(saved)
    if folder is not None and cfg.checkpoint and (Path(folder) / CHECKPOINT_FILE).exists():
        candidates.append((CHECKPOINT_FILE, Path(folder) / CHECKPOINT_FILE))
    device = resolve_device(cfg.device)
    found, unreadable = [], []
    for source, path in candidates:  # one damaged copy must not cost the other
        try:
            found.append(Resumed(load_state(path, device), source))
        except CheckpointError as e:
            unreadable.append(str(e))
            _TrialLog(folder)(f"warning: cannot read {source}: {e}")
    if not found and unreadable:
        raise ResumeError(f"cannot read any saved state of trial {folder}: {'; '.join(unreadable)}; {restart_hint}")
    if not found:
        return Resumed(None)
    best = max(found, key=lambda r: (r.state.epoch, r.state.status != "running"))
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
    if state.status != "diverged":  # finished with fewer epochs than now asked: it continues
        state.status = "finished" if state.epoch == cfg.epochs else "running"
    return best


def run(cfg: TrialConfig, folder: str | Path | None = None, *, resumed: Resumed | None = None,
        on_start: OnStart | None = None, before_save: OnEpoch | None = None, on_epoch: OnEpoch | None = None,
        progress: Progress | None = None, restart_hint: str = "delete it to start afresh") -> Outcome:
    """Run the trial `cfg` to its end, in `folder` (None: write nothing); see the module docstring.

    `resumed`: where to continue from (default: `resume(cfg, folder)`). Hooks: `on_start` once
    before training; per epoch `before_save` (raising there loses the epoch, as a crash would)
    and `on_epoch` after the epoch is saved.
    """
    log = _TrialLog(folder)
    if cfg.action == "gdu":
        return _run_analysis(cfg, folder, on_start, log)
    device = resolve_device(cfg.device)  # fail early and clearly on an unusable device
    if resumed is None:
        resumed = resume(cfg, folder, restart_hint=restart_hint)
    state = resumed.state
    if state is not None and state.status != "running":  # ended earlier: rewrite its files, train nothing
        if folder is not None:
            if cfg.checkpoint and resumed.source != CHECKPOINT_FILE:
                save_state(state, Path(folder) / CHECKPOINT_FILE)
            _finish(folder, state)
        log(f"replay: already {state.status} after epoch {state.epoch} ({resumed.source}); not rerun")
        return Outcome(state.status, state, replayed=True)
    if on_start is not None:
        on_start(resumed)
    log(f"start after epoch {resumed.epoch} (from {resumed.source}) on {device}, {torch.get_num_threads()} thread(s)")

    def report(metrics: dict[str, Any], st: Any) -> None:
        if before_save is not None:
            before_save(metrics, st)
        if folder is not None:
            write_results(folder, st)
            if cfg.checkpoint:
                save_state(st, Path(folder) / CHECKPOINT_FILE)
            if metrics["status"] != "diverged":
                log(f"epoch {metrics['epoch']} done: test error {metrics['test_error']:.2f}%")
        if on_epoch is not None:
            on_epoch(metrics, st)

    final = train(cfg, report=report, state=state, progress=progress)
    if folder is not None:
        _finish(folder, final)
    log(f"end: {final.status} after epoch {final.epoch}")
    return Outcome(final.status, final)


def _finish(folder: str | Path, state: TrainState) -> None:
    """The folder's final files: results plus the learning-curve figure."""
    write_results(folder, state)
    if state.history:
        from cep.figures import learning_curve

        learning_curve(state.history, Path(folder) / CURVE_FILE, title=run_title(state.config))


def _run_analysis(cfg: TrialConfig, folder: str | Path | None, on_start: OnStart | None,
                  log: _TrialLog) -> Outcome:
    """The gdu action: one analysis, not rerun once its summary says it is done."""
    from cep.gdu.report import run_gdu

    summary = Path(folder) / SUMMARY_FILE if folder is not None else None
    if summary is not None and summary.exists() and cfg.checkpoint:
        try:
            done = json.loads(summary.read_text()).get("status", "finished") == "finished"
        except (OSError, ValueError, AttributeError):
            done = False
        if done:
            log("replay: gdu analysis already done; not rerun")
            return Outcome("finished", replayed=True)
    if on_start is not None:
        on_start(Resumed(None))
    log(f"start gdu analysis on {cfg.device}")
    run_gdu(cfg)
    log("end: gdu analysis done")
    return Outcome("finished")


class _TrialLog:
    """trial.log of a run; lines wait until the folder exists (a run that fails early leaves no folder)."""

    def __init__(self, folder: str | Path | None):
        self.folder = folder
        self.pending: list[str] = []

    def __call__(self, line: str) -> None:
        if self.folder is None:
            return
        self.pending.append(line)
        if Path(self.folder).is_dir():
            for ln in self.pending:
                append_log(self.folder, ln)
            self.pending.clear()
