"""Opening an experiment folder for a run: which trials, the checks, the lock, --restart, growth, sweep.json, and
the packs still to run, decided before Ray starts and handed to the driver as one immutable Plan.

Every refusal is a SweepError (one line per problem) raised before anything is written or discarded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cep.layout import RAY_LOG, SWEEP_FILE, Trial, experiment_dir
from cep.paths import length_problem
from cep.results import FolderState, unwritable
from cep.safe_files import write_atomic
from cep.sweep.address import address_problems
from cep.sweep.guard import link_problems, remove_temporaries, restore_edited_configs
from cep.sweep.lock import ExperimentLock, check_unlocked
from cep.sweep.plan import Pack, compare, make_packs, pack_sizes, select
from cep.sweep.spec import SweepError, SweepSpec, name_problem
from cep.sweep.store import (
    check_experiment,
    check_ours,
    delete_discarded,
    discard,
    grown_record,
    is_uri,
    outcomes,
    resolve_trials,
    stale_discarded,
    sweep_record,
    write_sweep_record,
)

if TYPE_CHECKING:
    from cep.sweep.driver import SweepRun

Echo = Callable[..., None]  # click.echo's shape: echo(text, err=False)


@dataclass(frozen=True)
class Trials:
    """The sweep's trials as they run in the experiment folder, and those this run selects (--only)."""

    spec: SweepSpec
    exp_dir: Path
    all: tuple[Trial, ...]
    selected: tuple[Trial, ...]

    @property
    def subset(self) -> bool:
        return len(self.selected) != len(self.all)


@dataclass(frozen=True)
class Plan:
    """What a run does, decided holding the lock: the packs still to run (those with an incomplete member),
    sweep.json to write before Ray starts (a new or grown experiment; None: as it is), the outcomes before."""

    trials: Trials
    packs: tuple[Pack, ...]
    record: Mapping[str, Any] | None  # sweep.json as found (None: a new experiment)
    new_record: Mapping[str, Any] | None
    before: Mapping[str, FolderState]

    @property
    def to_run(self) -> list[Trial]:
        return [t for p in self.packs for t in p.members]


def storage_problems(storage: str, address: str | None, name: str | None) -> list[str]:
    """Every problem of --storage and --name (one line each)."""
    out = []
    shown = storage if len(storage) <= 60 else storage[:57] + "..."
    if is_uri(storage):
        out.append(f"--storage {storage}: cloud URIs are not supported yet; mount the bucket or use shared "
                   "storage (NFS) and give its absolute path")
    elif address is not None and not Path(storage).expanduser().is_absolute():
        out.append(f"--storage {shown}: with --address every node must see the results, so give shared "
                   "storage as an absolute path (e.g. --storage /shared/results)")
    elif length_problem(storage):
        out.append(f"--storage {shown}: {length_problem(storage)}")
    if name is not None and name_problem(name):
        out.append(f"--name {name!r}: {name_problem(name)}")
    return out


def searched_spec(spec: SweepSpec, exp_dir: Path, restart: bool, only: tuple[str, ...]) -> SweepSpec:
    """An adaptive search's sweep with the points its experiment records (a new one, or --restart: none yet)."""
    from cep.sweep.adaptive import recorded_spec
    from cep.sweep.searcher import searcher_problems

    problems = searcher_problems(spec.search)  # a missing library is said before anything starts
    if only:
        problems.append("--only: an adaptive search runs all its points (each round's suggestions depend on all "
                        "results so far); run it whole")
    if problems:
        raise SweepError(problems)
    return spec if restart else recorded_spec(spec, exp_dir)


def adaptive(spec: SweepSpec) -> bool:
    return spec.search is not None and spec.search.adaptive


def local_spec(spec: SweepSpec, storage: str, name: str | None) -> SweepSpec:
    """For --trial ID --local: an adaptive search's sweep with the points its experiment records."""
    return searched_spec(spec, experiment_dir(storage, name or spec.name), False, ()) if adaptive(spec) else spec


def trials(spec: SweepSpec, storage: str, name: str | None, only: tuple[str, ...], restart: bool) -> Trials:
    """The trials of a run in their experiment folder (--only selects; an adaptive search runs whole)."""
    chosen = select(spec.trials, only)
    exp_dir = experiment_dir(storage, name or spec.name)
    if adaptive(spec):
        spec = searched_spec(spec, exp_dir, restart, only)
        chosen = list(spec.trials)
    every = resolve_trials(spec.trials, exp_dir)
    chosen_ids = {t.id for t in chosen}
    return Trials(spec, exp_dir, tuple(every), tuple(t for t in every if t.id in chosen_ids))


def dry_run_state(ts: Trials) -> str:
    """For --dry-run: what running it now would do with the experiment folder (SweepError: it would refuse)."""
    check_unlocked(ts.exp_dir)
    record = check_experiment(ts.exp_dir, ts.all)
    if record is None:
        return f"experiment: {ts.exp_dir} (new)"
    done = sum(o.complete for o in outcomes(ts.exp_dir, ts.selected).values())
    growth = compare(record["trials"], ts.all).growth
    growth = f"; it grows: {growth}" if growth else ""
    return (f"experiment: {ts.exp_dir} ({done} of {len(ts.selected)} selected trial(s) complete{growth}; running "
            "resumes the rest)")


def start_problems(ts: Trials, storage: str, address: str | None) -> list[str]:
    """Before Ray starts and before --restart discards anything: the folder is writable, the Ray head answers."""
    why = unwritable(ts.exp_dir)  # a trial would fail on its first write
    return ([f"--storage {storage}: {ts.exp_dir}: {why}; choose writable storage"] if why else []) \
        + address_problems(address)


def check_before_lock(ts: Trials, restart: bool) -> None:
    """Before Ray and the lock (our lock file never goes into another program's folder); again once locked."""
    if restart and not ts.subset:
        check_ours(ts.exp_dir, restarting=True)
    else:
        check_experiment(ts.exp_dir, ts.all)


@contextmanager
def locked(exp_dir: Path) -> Iterator[ExperimentLock]:
    """The experiment's lock, held before --restart discards anything and before sweep.json is written;
    after a refused start, the folders this run made are removed again if empty (never anything else)."""
    made = [p for p in [exp_dir, *exp_dir.parents] if not p.exists()]
    lock = ExperimentLock(exp_dir)
    try:
        lock.acquire()
        yield lock
    finally:
        lock.release(remove=True)
        for folder in made:
            try:
                folder.rmdir()
            except OSError:
                break


def open_experiment(ts: Trials, restart: bool, lock: ExperimentLock, echo: Echo) -> Plan:
    """Holding the lock: --restart, the experiment check, a copied folder's checks, growth, and the packs with
    an incomplete member (by our trial folders: Ray Tune's state is never restored)."""
    exp_dir, spec = ts.exp_dir, ts.spec
    for stale in stale_discarded(exp_dir):  # what a killed --restart left
        delete_discarded(stale)
    if restart and not ts.subset:
        restart_experiment(exp_dir, None, lock, echo)
    record = check_experiment(exp_dir, ts.all)  # a different sweep is refused, even with --restart --only
    if record is not None:  # a copied or shared folder: nothing through a link, no leftovers, no edited configs
        problems = link_problems(exp_dir, ts.all)
        if problems:
            raise SweepError(problems)
        remove_temporaries(exp_dir, ts.all)
        for line in restore_edited_configs(exp_dir, ts.all):
            echo(f"warning: {line}", err=True)
    if restart and ts.subset:
        restart_experiment(exp_dir, [t.id for t in ts.selected], lock, echo)
    if adaptive(spec):  # its rounds decide the packs (cep.sweep.adaptive)
        before = outcomes(exp_dir, resolve_trials(spec.trials, exp_dir)) if record is not None else {}
        return Plan(ts, (), record, None, before)
    before = outcomes(exp_dir, ts.selected) if record is not None else {}
    packs = tuple(p for p in make_packs(ts.selected, pack_sizes(spec))
                  if not all(t.id in before and before[t.id].complete for t in p.members))
    grown = grown_record(record, spec, ts.all) if record is not None else None
    if grown is not None:
        echo(f"growing the experiment in {exp_dir}: {grown['grown'][-1]['what']}; finished trials are kept")
    new_record = grown if record is not None else sweep_record(spec, ts.all, make_packs(ts.all, pack_sizes(spec)))
    return Plan(ts, packs, record, new_record, before)


def restart_experiment(exp_dir: Path, trial_ids: list[str] | None, lock: ExperimentLock, echo: Echo) -> None:
    """--restart: move the experiment (or those trials) out of the way in one rename, then delete it; the
    lock moves with the folder, so it is taken again on the new one."""
    trash = discard(exp_dir, trial_ids)
    if trash is not None and trial_ids is None:
        lock.acquire()
    warning = delete_discarded(trash) if trash is not None else ""
    if warning:
        echo(warning, err=True)
    echo(f"--restart: discarded {'the results of ' + str(len(trial_ids)) + ' trial(s) in ' if trial_ids else ''}"
         f"{exp_dir}")


def execute(plan: Plan, run: SweepRun) -> dict[str, FolderState]:
    """Write sweep.json (a kill from here on leaves an experiment), run the packs, and return the selected
    trials' outcomes; refused before any trial started (SweepError): the folder is as it was before this run."""
    from cep.sweep.driver import execute_sweep

    exp_dir, new = plan.trials.exp_dir, plan.record is None
    _prefetch_data(plan.to_run)
    old = (exp_dir / SWEEP_FILE).read_bytes() if plan.new_record is not None and not new else None
    if plan.new_record is not None:
        write_sweep_record(exp_dir, dict(plan.new_record))
    try:
        execute_sweep(run)
    except SweepError:
        if old is not None:
            write_atomic(exp_dir / SWEEP_FILE, old)
        elif plan.new_record is not None:
            (exp_dir / SWEEP_FILE).unlink(missing_ok=True)
            (exp_dir / RAY_LOG).unlink(missing_ok=True)
        raise
    return outcomes(exp_dir, plan.trials.selected)


def _prefetch_data(trials: list[Trial]) -> None:
    """Fetch full MNIST once here, so that parallel trials do not all download it (and offline fails early)."""
    dirs = sorted({t.config.data_dir for t in trials if t.config.dataset == "mnist"})
    if dirs:
        from cep.data import load_mnist

        for d in dirs:
            load_mnist(d)
