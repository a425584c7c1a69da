"""`cep-sweep SWEEP --trial ID --local`: one trial as the sweep computes it, in this process, without Ray.

C-VF at the paper's rates is chaotic (a last-bit difference grows to 1e-3 in ~300 minibatches), so only
the identical program replays a trial exactly: a trial the sweep packs is trained with its whole pack
(the same members in the same order, the trial's threads and device), showing that trial; `--alone`
trains it by itself instead. A local run never writes into a sweep's experiment folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cep.config import TrialConfig
from cep.layout import SWEEP_FILE, Trial
from cep.sweep.plan import Pack, sweep_packs, torch_threads
from cep.sweep.scheduling import resume_scheduler, scheduler_settings
from cep.sweep.spec import SweepError, SweepSpec
from cep.sweep.store import trial_device

PACK_DIR = "pack"  # with --out DIR: the other members of the trial's pack train in DIR/pack/<trial id>/


def run_local(spec: SweepSpec, trial_id: str, out: str | None, alone: bool) -> int:
    """Train trial `trial_id` here (with its pack unless `alone`); returns the exit code."""
    import torch

    trial = spec.trial(trial_id)
    pack = next(p for p in sweep_packs(spec, spec.trials) if trial.id in p.ids)  # the pack it trained in
    members = [trial] if alone else list(pack.members)
    folders = member_folders(spec, trial, members, out, alone)
    refuse_experiment_folders(folders, trial, spec.name)
    threads = torch_threads(spec.resources)
    torch.set_num_threads(threads)
    # as the sweep runs them (checkpoints on: rerunning resumes), each in a folder of its own
    cfgs = [t.config.replace(out_dir=str(folders[t.id]), checkpoint=True,
                             device=trial_device(t.config, spec.resources)) for t in members]
    click.echo(f"trial {trial.id} of sweep {spec.name}, locally on {cfgs[0].device} ({threads} thread(s))")
    if len(pack.ids) > 1:
        click.echo(alone_note(trial, pack) if alone else pack_note(pack, others_root(spec, out)))
    from cep.console import execute

    if len(cfgs) == 1:
        return execute(cfgs[0], tracking=spec.tracking.to_dict(), run_name=trial.id)
    return replay_pack(cfgs, [t.id for t in members], trial.id, scheduler_settings(spec.search),
                       spec.tracking.to_dict())


def others_root(spec: SweepSpec, out: str | None) -> Path:
    """Where the other members of the trial's pack train: beside it under runs/<sweep>/, or with --out DIR
    under DIR/pack/ (each in <root>/<trial id>/)."""
    return Path(out) / PACK_DIR if out else Path("runs") / spec.name


def member_folders(spec: SweepSpec, trial: Trial, members: list[Trial], out: str | None,
                   alone: bool = False) -> dict[str, Path]:
    """Each member's results folder: the trial's is --out (default runs/<sweep>/<id>, or runs/<sweep>.alone/<id>
    with --alone: a trial's own trajectory must not resume its pack's, nor the reverse), the others' under
    others_root."""
    folders = {t.id: others_root(spec, out) / t.id for t in members}
    folders[trial.id] = Path(out) if out else Path("runs") / (spec.name + (".alone" if alone else "")) / trial.id
    return folders


def experiment_above(folder: Path) -> Path | None:
    """The sweep experiment folder that holds `folder` (an ancestor with sweep.json), or None."""
    path = folder.expanduser().absolute()
    try:
        resolved = path.resolve()
    except OSError:
        resolved = path
    for p in dict.fromkeys([path, *path.parents, resolved, *resolved.parents]):
        try:
            if (p / SWEEP_FILE).is_file():
                return p
        except OSError:  # a name too long for the file system, say: the trial's own check says it in one line
            continue
    return None


def refuse_experiment_folders(folders: dict[str, Path], trial: Trial, sweep_name: str) -> None:
    """A local debug run must never modify a sweep's results: refuse a folder inside an experiment."""
    for folder in dict.fromkeys([folders[trial.id], *folders.values()]):  # the trial's own (--out) first
        exp = experiment_above(folder)
        if exp is not None:
            raise SweepError([f"--out {folder}: inside the sweep experiment folder {exp} (it holds {SWEEP_FILE}); "
                              "a local run never writes into a sweep's results: choose a folder outside it "
                              f"(default runs/{sweep_name}/{trial.id})"])


def pack_note(pack: Pack, root: Path) -> str:
    return (f"the sweep trains this trial in a pack of {len(pack.ids)} ({pack.id}): training that whole pack here "
            f"(same members, order and threads) to replay it exactly, showing this trial; the other "
            f"{len(pack.ids) - 1} member(s)' results go to {root}/<trial id>/ (--alone: this trial by itself)")


def alone_note(trial: Trial, pack: Pack) -> str:
    cfg = trial.config
    if cfg.rule == "vf" and cfg.continual:
        return (f"--alone: the sweep trains this trial in a pack of {len(pack.ids)} ({pack.id}); by itself it sums "
                "in another order, and C-VF is chaotic at the paper's rates (a last-bit difference reaches 1e-3 "
                "after ~300 minibatches): its trajectory differs from the sweep's within an epoch; drop --alone "
                "to replay the sweep's numbers exactly")
    return (f"--alone: the sweep trains this trial in a pack of {len(pack.ids)} ({pack.id}); by itself it sums in "
            "another order, so its numbers differ from the sweep's in the last bits (float64: ~1e-9 over short "
            "runs); drop --alone to replay the sweep's numbers exactly")


def replay_pack(cfgs: list[TrialConfig], ids: list[str], shown: str, scheduler: dict[str, Any] | None = None,
                tracking: dict[str, Any] | None = None) -> int:
    """Train a pack as the sweep's trial does (its members `ids` through cep.runner.rounds; with a search's
    `scheduler` per member), showing member `shown`; the exit code is that member's. A pack whose members
    have all ended is not run again: its folders stay as they are."""
    from cep.console import LOCAL_HINT, check_out_dir, echo_resuming, print_outcome, train_shown
    from cep.member import Member, Outcome
    from cep.runner import resume_pack

    for cfg in cfgs:
        check_out_dir(cfg)
    members = [Member(c, Path(str(c.out_dir)), id=i, hint=LOCAL_HINT) for c, i in zip(cfgs, ids, strict=True)]
    resume_pack(members, {})
    failed = next((m.error for m in members if m.error is not None), None)
    if failed is not None:  # here, unlike a sweep's trial, nothing retries: say it as the trial alone would
        raise failed
    stopper = resume_scheduler(scheduler, ids, [m.resumed.state for m in members], cfgs[0].epochs)
    mine = next(m for m in members if m.id == shown)
    if all(m.resumed.state is not None and m.resumed.state.status != "running" for m in members):
        return print_outcome(mine.cfg, Outcome(mine.resumed.state.status, mine.resumed.state, replayed=True))
    if mine.resumed.state is not None:
        echo_resuming(mine)
    return train_shown(members, shown, scheduler=stopper, tracking=tracking)
