"""A run on the terminal: the progress line, a line per epoch, the end and the exit code, for `cep train`,
`cep run`, `cep gdu` and `cep-sweep --trial ID --local` (each a loop over cep.runner.rounds)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from cep.config import TrialConfig
from cep.errors import UsageProblem
from cep.health import collapse_line, drift_line
from cep.local_run import sigterm_stops
from cep.results import CHECKPOINT_FILE, METRICS_FILE, SUMMARY_FILE, discard_results, earlier_results, unwritable
from cep.selection import best_line


class ProgressLine:
    """One self-overwriting progress line on stderr (a line per epoch when not a terminal)."""

    def __init__(self, epochs: int):
        self.epochs = epochs
        self.tty = sys.stderr.isatty()
        self.t0: float | None = None
        self.epoch = 0

    def __call__(self, epoch: int, done: int, total: int, train_error: float) -> None:
        if epoch != self.epoch:
            self.epoch, self.t0 = epoch, time.monotonic()
        rate = done / max(time.monotonic() - (self.t0 or time.monotonic()), 1e-9)
        line = (f"epoch {epoch}/{self.epochs}  {done}/{total} samples  "
                f"train error {train_error:5.2f}%  {rate:,.0f} samples/s")
        if self.tty:
            click.echo("\r" + line.ljust(78), err=True, nl=done == total)
        elif done == total:
            click.echo(line, err=True)


def print_epoch(metrics: dict[str, Any]) -> None:
    click.echo(f"epoch {metrics['epoch']:>3}  train error {metrics['train_error']:6.2f}%  "
               f"test error {metrics['test_error']:6.2f}%  "
               + (f"val error {metrics['val_error']:6.2f}%  " if "val_error" in metrics else "")
               + f"train loss {metrics['train_loss']:.4f}  "
               f"test loss {metrics['test_loss']:.4f}"
               + "".join(f"  angle{k[6:]} {v:.1f}°" for k, v in metrics.items() if k.startswith("angle_"))
               + f"  ({metrics['epoch_seconds']:.1f} s)")


def check_out_dir(cfg: TrialConfig, overwrite: bool = False) -> None:
    """Before anything runs: the results folder can be written, and no earlier result in it is lost.

    A folder holding an earlier run is resumed only with --checkpoint (the default) and a saved state, or
    none yet (the runner checks that it is this configuration); --overwrite discards the earlier files;
    otherwise refused.
    """

    if cfg.out_dir is None:
        return
    why = unwritable(cfg.out_dir)
    if why:
        raise UsageProblem(f"--out {cfg.out_dir}: {why}; choose another results folder")
    found = earlier_results(cfg.out_dir)
    resumable = CHECKPOINT_FILE if cfg.action == "train" else SUMMARY_FILE
    no_epoch = not {CHECKPOINT_FILE, METRICS_FILE, SUMMARY_FILE} & set(found)  # stopped before its first save
    if not found or (cfg.checkpoint and (resumable in found or no_epoch) and not overwrite):
        return
    if overwrite:
        discard_results(cfg.out_dir)
        return
    why = "without a checkpoint" if cfg.checkpoint else "and this run saves no checkpoint (--no-checkpoint)"
    raise UsageProblem(f"--out {cfg.out_dir} holds an earlier run ({', '.join(found[:3])}"
                       f"{', ...' if len(found) > 3 else ''}) {why}, so it cannot be resumed; choose another "
                       "--out folder, or --overwrite to replace it")


LOCAL_HINT = "add --overwrite to start afresh, or use another --out folder"  # a local run's states unusable


def execute(cfg: TrialConfig, quiet: bool = False, overwrite: bool = False, threads: int | None = None,
            resume_from: str | None = None, tracking: dict[str, Any] | None = None,
            run_name: str | None = None) -> int:
    """Run one trial through the runner, showing progress on the terminal; returns the exit code.

    `threads`: torch's CPU threads for this run (None: leave them as the caller set them); `resume_from`: a
    checkpoint file to continue from instead of the folder's own (e.g. another run's checkpoint-best.pt);
    `tracking`: the trackers that mirror it (cep.tracking; None: none), the run named `run_name` (default: by
    its folder)."""
    from cep.member import Member
    from cep.runner import resume, run, start  # torch is imported only once something runs

    if threads is not None and threads < 1:
        raise UsageProblem(f"--threads {threads}: give a count of at least 1")
    if threads is not None and threads > (os.cpu_count() or 1):  # torch crashes (segfault) at absurd counts
        raise UsageProblem(f"--threads {threads}: more than this machine's {os.cpu_count() or 1} CPUs; give at "
                           f"most {os.cpu_count() or 1}")
    check_out_dir(cfg, overwrite)
    if threads is not None:
        import torch  # deferred: torch is imported only once something runs

        torch.set_num_threads(threads)

    with sigterm_stops():  # SIGTERM ends the run like Ctrl-C: one line, exit 143, resumable
        if cfg.action == "gdu":
            return print_outcome(cfg, run(cfg, cfg.out_dir, hint=LOCAL_HINT))
        folder = Path(cfg.out_dir) if cfg.out_dir is not None else None
        member = Member(cfg, folder, hint=LOCAL_HINT, id=run_name or "")
        if resume_from is not None:  # that file only: the folder's own checkpoints are not candidates
            member.resumed = resume(cfg.with_run_fields(checkpoint=False), cfg.out_dir,
                                    [(resume_from, Path(resume_from))])
            if member.resumed.state is not None:
                member.resumed.state.config = member.resumed.state.config.with_run_fields(checkpoint=cfg.checkpoint)
        start([member])
        if member.error is not None:  # its own failure (a link, a damaged state): a trial alone has no others
            raise member.error
        if member.resumed.state is not None and member.resumed.state.status == "running":
            echo_resuming(member)
        return train_shown([member], member.id, quiet, source=resume_from,
                           tracking=tracking if folder is not None else None)


def echo_resuming(m: Any) -> None:
    click.echo(f"resuming from {m.resumed.source} in {m.cfg.out_dir} after epoch {m.resumed.epoch}")


def train_shown(members: Sequence[Any], shown: str, quiet: bool = False, scheduler: Any = None,
                source: str | None = None, tracking: dict[str, Any] | None = None) -> int:
    """A pack's rounds (cep.runner.rounds) on the terminal, showing the member whose id is `shown`: its
    progress and epochs, its end; the exit code is its. `scheduler`: a search's, per member
    (cep.sweep.scheduling); `source`: the checkpoint file it resumed from, when not the folder's own;
    `tracking`: the trackers mirroring each member, a run per member id."""
    from cep.runner import rounds
    from cep.tracking.mirror import start_mirror

    mine = next(m for m in members if m.id == shown)
    mirror = start_mirror(tracking, "cep-train", mine.folder.parent if mine.folder is not None else ".")
    # a run by its trial id; a member known by its folder (cep train) by the folder's name
    names = {m.id: m.folder.name if m.folder is not None and m.id == str(m.folder) else m.id for m in members}
    try:
        for trained in rounds(members, progress=None if quiet else ProgressLine(mine.cfg.epochs), show=shown):
            for e in trained:
                if e.id == shown and not quiet and e.status != "diverged":
                    print_epoch(e.metrics)
                mirror.round(names[e.id], next(m.folder for m in members if m.id == e.id))
            if scheduler is not None:
                scheduler.after_round(trained)
    finally:
        for m in members:
            if m.folder is not None:
                mirror.close(names[m.id], m.folder)
    return print_outcome(mine.cfg, mine.outcome, source)


def print_outcome(cfg: TrialConfig, outcome: Any, source: str | None = None) -> int:
    """The end of a run on the terminal (angles, divergence, collapse, final errors, folder); the exit code.
    `source`: the checkpoint it resumed from, when not the folder's own."""
    final = outcome.state
    if final is None:  # the gdu action prints its own report
        if outcome.replayed:
            click.echo(f"{cfg.out_dir}/ holds this analysis already; nothing rerun (--overwrite to redo it)")
        return 0
    if outcome.replayed:
        click.echo(f"resuming from {source or Path(str(cfg.out_dir)) / CHECKPOINT_FILE}: already {final.status} "
                   f"after epoch {final.epoch}; nothing left to train")
    if "measured_angle" in final.info:
        click.echo("measured angle between V and W^T per pair: "
                   + ", ".join(f"{a:.1f}°" for a in final.info["measured_angle"]))
    if "angle_grad" in final.info:
        click.echo(f"angle between the total EP update and the total BPTT gradient: {final.info['angle_grad']:.1f}°")
    if final.status == "diverged":
        click.echo(f"diverged at epoch {final.info['diverged_at_epoch']}: states or weights became non-finite; "
                   "metrics above are the last finite ones", err=True)
    if "collapsed" in final.info:
        stopped = "; stopped there (stop_on_collapse)" if final.status == "collapsed" else ""
        click.echo(collapse_line(final.info["collapsed"]) + stopped, err=True)
    if "drifting" in final.info:
        click.echo(drift_line(final.info["drifting"]), err=True)
    if final.history:
        click.echo(best_line(final.history))
        click.echo(f"final test error {final.history[-1]['test_error']:.2f}% "
                   f"(train {final.history[-1]['train_error']:.2f}%) after {final.epoch} epoch(s), "
                   f"seed {final.config.seed}")
    if final.status == "stopped":  # by a search's scheduler (cep.sweep.scheduling): an end, as in the sweep
        stop = final.info.get("stopped", {})
        click.echo(f"stopped at epoch {stop.get('epoch', final.epoch)} by {stop.get('by', 'the scheduler')}")
    if cfg.out_dir is not None:
        click.echo(f"results in {cfg.out_dir}/")
    return 0 if final.status in ("finished", "stopped") else 1
