"""`cep-sweep SWEEP.yaml`: run a sweep of trials with Ray Tune, resumably, on this machine or a Ray cluster.

Thin click command: everything is validated (sweep file, options, the
experiment folder) before Ray is imported or anything is written; bad input
ends with one `error: PATH: message` line per problem and exit code 2.
Exit codes: 0 every selected trial complete; 1 some errored or incomplete;
2 bad input; 130 / 143 stopped by Ctrl-C / SIGTERM (rerun to resume).
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cep.cli import EXIT_USAGE, run_main
from cep.config import pack_key
from cep.layout import RAY_LOG, SWEEP_FILE, experiment_dir, trial_dir
from cep.paths import length_problem
from cep.results import STATUSES, FolderState, unwritable, write_atomic
from cep.sweep.faults import FAULT_ENV, SLEEP_ENV, epoch_sleep, parse_faults
from cep.sweep.guard import link_problems, remove_temporaries, restore_edited_configs
from cep.sweep.lock import ExperimentLock, check_unlocked
from cep.sweep.plan import Pack, compare, dry_run_table, make_packs, n_weights, pack_sizes, sample_steps, select
from cep.sweep.spec import SweepError, SweepSpec, Trial, load_sweep, name_problem
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
    torch_threads,
    write_sweep_record,
)
from cep.text import duration, printable, text_table
from cep.tracking.options import tracking_options, with_tracking

if TYPE_CHECKING:
    from cep.sweep.driver import SweepRun

EXIT_INCOMPLETE = 1
ADDRESS_TIMEOUT_S = 10.0  # a live Ray head accepts a connection at once


def _fail(problems: list[str]) -> int:
    for p in _blame_sources(problems):
        click.echo(f"error: {printable(p)}", err=True)
    return EXIT_USAGE


def _blame_sources(problems: list[str]) -> list[str]:
    """Problems with --address as the user gave it: from the RAY_ADDRESS variable when that is its source."""
    ctx = click.get_current_context(silent=True)
    if ctx is None or ctx.get_parameter_source("address") is not click.core.ParameterSource.ENVIRONMENT:
        return problems
    given = f"--address {ctx.params.get('address')}"
    env = f"RAY_ADDRESS={ctx.params.get('address')} (from the environment, not --address)"
    return [p.replace("with --address every", "with RAY_ADDRESS set, every") if p.startswith("--storage") else
            env + p[len(given):] + "; or unset RAY_ADDRESS" if p.startswith(given) else p for p in problems]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("sweep_file", type=click.Path(dir_okay=False))
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="override a trial field in every trial, e.g. --set epochs=1 --set dataset=mnist5k (repeatable)")
@click.option("--only", "only", multiple=True, metavar="PATTERN",
              help="run only the trials whose id matches this glob, e.g. 'C-VF-1h/*' or 'C-VF-1h/angle=45' "
                   "(repeatable)")
@click.option("--dry-run", is_flag=True, help="print the trials, their count and estimated cost; run nothing")
@click.option("--storage", default="results", show_default=True, metavar="PATH",
              help="where the experiment folder <storage>/<name>/ lives; on a multi-node cluster it must be "
                   "shared storage (e.g. an NFS mount) given as an absolute path")
@click.option("--name", default=None, help="experiment folder name (default: the sweep's name)")
@click.option("--address", default=None, metavar="ADDR", envvar="RAY_ADDRESS",
              help="join this Ray cluster (e.g. HEAD_IP:6379, or auto; default $RAY_ADDRESS, which `ray job "
                   "submit` sets); without either: start a local Ray on this machine")
@click.option("--restart", is_flag=True,
              help="discard the experiment's results and start afresh (with --only: just those trials)")
@click.option("--trial", "trial_id", default=None, metavar="ID",
              help="with --local: run this one trial in this process (no Ray), for debugging")
@click.option("--local", is_flag=True, help="run --trial ID here, without Ray, with the trainer's progress display")
@click.option("--out", default=None, metavar="DIR",
              help="with --local: results folder (default runs/<sweep name>/<trial id>)")
@click.option("--alone", is_flag=True,
              help="with --local: train the trial by itself, not with the pack the sweep trains it in (its numbers "
                   "then differ from the sweep's; C-VF's within an epoch)")
@click.option("--progress-interval", default=30.0, show_default=True, metavar="SECONDS",
              help="how often the table of running trials is printed")
@click.option("--no-aggregate", is_flag=True, help="do not summarise the experiment after the run")
@click.option("--verbose", is_flag=True,
              help="also show Ray's and Tune's own log lines and the trials' output (always kept in "
                   "<experiment>/ray.log)")
@tracking_options
@click.version_option(package_name="cep")
def sweep_command(sweep_file: str, sets: tuple[str, ...], only: tuple[str, ...], dry_run: bool, storage: str,
                  name: str | None, address: str | None, restart: bool, trial_id: str | None, local: bool,
                  out: str | None, alone: bool, progress_interval: float, no_aggregate: bool, verbose: bool,
                  **tracking: Any) -> int:
    """Run the trials of SWEEP_FILE with Ray Tune; rerun the same command to resume after any interruption.

    \b
    Examples:
      cep-sweep sweeps/quickstart.yaml                         # run (or resume) it
      cep-sweep sweeps/fig4_angles.yaml --dry-run              # what would run, and its cost
      cep-sweep sweeps/fig4_table.yaml --set epochs=1 --set dataset=mnist5k --name smoke
      cep-sweep sweeps/quickstart.yaml --trial EP-1h/seed=0 --local   # debug one trial
      cep-sweep sweeps/fig4_angles.yaml --address HEAD:6379 --storage /shared/results
      cep-sweep aggregate results/quickstart                   # tables and figures, any time
      cep-sweep status results/quickstart                      # each trial's state, without Ray
    """
    t_start = time.monotonic()
    # every problem at once: the sweep file's and the options'
    problems = [] if trial_id is not None or local else _storage_problems(storage, address, name)
    if out is not None and not local:
        problems.append("--out: only for --trial ID --local (a sweep writes into <storage>/<name>/trials/); "
                        "remove --out, or add --trial ID --local")
    try:
        spec = load_sweep(sweep_file, sets)
        spec = with_tracking(spec, tracking, experiment_dir(storage, name or spec.name), problems)
        if problems:
            raise SweepError([])
        if trial_id is not None or local or alone:
            if spec.search is not None and spec.search.adaptive:  # the points its experiment records
                spec = _searched(spec, experiment_dir(storage, name or spec.name), False, ())
            return _run_local(spec, trial_id, local, out, alone)
        chosen = select(spec.trials, only)
    except SweepError as e:
        return _fail(e.problems + problems)
    exp_dir = experiment_dir(storage, name or spec.name)
    try:
        if spec.search is not None and spec.search.adaptive:
            spec = _searched(spec, exp_dir, restart, only)
            chosen = list(spec.trials)
    except SweepError as e:
        return _fail(e.problems)
    all_trials = resolve_trials(spec.trials, exp_dir)
    chosen_ids = {t.id for t in chosen}
    selected = [t for t in all_trials if t.id in chosen_ids]
    if dry_run:
        packs = make_packs(chosen, pack_sizes(spec))
        click.echo(dry_run_table(spec, chosen, packs))
        if spec.search is not None and spec.search.adaptive:
            from cep.sweep.adaptive import points_per_round

            click.echo(f"{spec.search.searcher} search: {spec.search.num_samples} point(s), suggested in rounds of "
                       f"{points_per_round(spec)} (one pack each); the trials above are the points recorded so far")
        _estimate_packs(spec, packs)
        return _dry_run_state(exp_dir, all_trials, selected)
    why = unwritable(exp_dir)  # before Ray starts: a trial would fail on its first write
    problems = [f"--storage {storage}: {exp_dir}: {why}; choose writable storage"] if why else []
    problems += _address_problems(address)  # before --restart discards anything
    if problems:
        return _fail(problems)
    try:
        faults = tuple(parse_faults(os.environ.get(FAULT_ENV)))
        sleep = epoch_sleep(os.environ.get(SLEEP_ENV))
        # before Ray and the lock (our lock file never goes into another program's folder); again once locked
        if restart and len(selected) == len(all_trials):
            check_ours(exp_dir, restarting=True)
        else:
            check_experiment(exp_dir, all_trials)
    except SweepError as e:
        return _fail(e.problems)
    from cep.sweep.driver import SweepRun  # Ray is imported only from here on

    made = [p for p in [exp_dir, *exp_dir.parents] if not p.exists()]  # to leave nothing on refusal
    lock = ExperimentLock(exp_dir)
    try:
        lock.acquire()  # before --restart discards anything and before sweep.json is written
        run = SweepRun(spec, [], [], exp_dir, address=address, faults=faults, epoch_sleep=sleep,
                       progress_interval=progress_interval, verbose=verbose)
        return _run_locked(run, all_trials, selected, restart, lock, no_aggregate, t_start)
    except SweepError as e:
        return _fail(e.problems)
    finally:
        lock.release(remove=True)
        _remove_made(exp_dir, made)


def _run_locked(run: SweepRun, all_trials: list[Trial], selected: list[Trial], restart: bool, lock: ExperimentLock,
                no_aggregate: bool, t_start: float) -> int:
    """Holding the experiment's lock: --restart, the experiment check, the packs with an incomplete member (by
    our trial folders: Ray Tune's state is never restored), then the run."""
    spec, exp_dir = run.spec, run.exp_dir
    subset = len(selected) != len(all_trials)
    for stale in stale_discarded(exp_dir):  # what a killed --restart left
        delete_discarded(stale)
    if restart and not subset:
        restart_experiment(exp_dir, None, lock)
    record = check_experiment(exp_dir, all_trials)  # a different sweep is refused, even with --restart --only
    if record is not None:  # a copied or shared folder: nothing through a link, no leftovers, no edited configs
        problems = link_problems(exp_dir, all_trials)
        if problems:
            raise SweepError(problems)
        remove_temporaries(exp_dir, all_trials)
        for line in restore_edited_configs(exp_dir, all_trials):
            click.echo(f"warning: {line}", err=True)
    if restart and subset:
        restart_experiment(exp_dir, [t.id for t in selected], lock)
    if spec.search is not None and spec.search.adaptive:
        return _run_search(run, record, no_aggregate, t_start)
    done = outcomes(exp_dir, selected) if record is not None else {}
    run.packs = [p for p in make_packs(selected, pack_sizes(spec))
                 if not all(t.id in done and done[t.id].complete for t in p.members)]
    run.trials = [t for p in run.packs for t in p.members]
    grown = grown_record(record, spec, all_trials) if record is not None else None
    if grown is not None:
        click.echo(f"growing the experiment in {exp_dir}: {grown['grown'][-1]['what']}; finished trials are kept")
    new_record = grown if record is not None else sweep_record(spec, all_trials,
                                                               make_packs(all_trials, pack_sizes(spec)))
    return _run_sweep(run, all_trials, selected, new_record, record is None, no_aggregate, t_start)


def _run_sweep(run: SweepRun, all_trials: list[Trial], selected: list[Trial], new_record: dict | None, new: bool,
               no_aggregate: bool, t_start: float) -> int:
    """Run the packs that are not complete yet (run.packs), then summarise all selected trials; returns the
    exit code. `new_record`: sweep.json to write (atomically) before Ray starts (a new or grown experiment)."""
    from cep.sweep.driver import execute_sweep

    spec, exp_dir = run.spec, run.exp_dir
    click.echo(f"cep-sweep {spec.name}: {len(selected)} trial(s)"
               + (f" of {len(all_trials)}" if len(selected) != len(all_trials) else "") + f"; results in {exp_dir}")
    before = {} if new else outcomes(exp_dir, selected)
    if not run.packs:
        click.echo("every selected trial is already complete; nothing to run (--restart to start afresh)")
        code = _summary(spec, exp_dir, before, before, time.monotonic() - t_start, None)
        _aggregate(exp_dir, no_aggregate)
        return code
    if before:
        click.echo(f"resuming the experiment in {exp_dir}: {sum(o.complete for o in before.values())} of "
                   f"{len(before)} selected trial(s) complete; the others continue from their own checkpoints")
    _prefetch_data(run.trials)
    old = (exp_dir / SWEEP_FILE).read_bytes() if new_record is not None and not new else None
    if new_record is not None:  # before anything else of the run: a kill from here on leaves an experiment
        write_sweep_record(exp_dir, new_record)
    try:
        execute_sweep(run)
    except SweepError:  # refused before any trial started: as it was before this run
        if old is not None:
            write_atomic(exp_dir / SWEEP_FILE, old)
        elif new_record is not None:
            (exp_dir / SWEEP_FILE).unlink(missing_ok=True)
            (exp_dir / RAY_LOG).unlink(missing_ok=True)
        raise
    results = outcomes(exp_dir, selected)
    walls = wall_times(selected, run.progress.spans(), spec.name) if run.progress is not None else ""
    code = _summary(spec, exp_dir, results, before, time.monotonic() - t_start, run.stop_signal, walls)
    if run.stop_signal is None:
        _aggregate(exp_dir, no_aggregate)
    return code


def _searched(spec: SweepSpec, exp_dir: Path, restart: bool, only: tuple[str, ...]) -> SweepSpec:
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


def _run_search(run: SweepRun, record: dict | None, no_aggregate: bool, t_start: float) -> int:
    """An adaptive search (cep.sweep.adaptive): rounds of one pack each, then the summary of every trial."""
    from cep.sweep.adaptive import run_adaptive

    spec, exp_dir = run.spec, run.exp_dir
    click.echo(f"cep-sweep {spec.name}: {spec.search.searcher} search of {spec.search.num_samples} point(s); "
               f"results in {exp_dir}")
    before = outcomes(exp_dir, resolve_trials(spec.trials, exp_dir)) if record is not None else {}
    trials, results = run_adaptive(run, record, click.echo)
    code = _summary(spec, exp_dir, results, before, time.monotonic() - t_start, run.stop_signal)
    if run.stop_signal is None:
        _aggregate(exp_dir, no_aggregate)
    return code


def _remove_made(exp_dir: Path, made: list[Path]) -> None:
    """After a refused start: the folders this run made, if they are empty (never anything else)."""
    for folder in made:
        try:
            folder.rmdir()
        except OSError:
            break


def _storage_problems(storage: str, address: str | None, name: str | None) -> list[str]:
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


def _address_problems(address: str | None) -> list[str]:
    """A Ray head that does not answer, or something else answering there, said in seconds.

    ray.init retries for minutes before it gives up, also when the port belongs to another server (a web
    server, a stalled process). A Ray head's GCS is a gRPC (HTTP/2) server: it answers the HTTP/2 client
    preface with a SETTINGS frame at once; anything else is not a Ray head.
    """
    if address is None or address in ("auto", "local") or "://" in address:
        return []
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return [f"--address {address}: expected HOST:PORT of the Ray head (e.g. 10.0.0.5:6379), or auto"]
    fix = "check the address, and that `ray start --head` runs on that machine (its port, 6379 by default)"
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=ADDRESS_TIMEOUT_S) as conn:
            if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
                return []  # a TLS handshake comes first: the plain HTTP/2 check does not apply
            conn.settimeout(ANSWER_TIMEOUT_S)
            conn.sendall(HTTP2_PREFACE + HTTP2_EMPTY_SETTINGS)
            reply = _read_up_to(conn, 9)
    except TimeoutError:
        if "conn" not in locals():
            return [f"--address {address}: no Ray head answers there (no connection in {ADDRESS_TIMEOUT_S:g} s); {fix}"]
        return [f"--address {address}: something accepts connections there but does not answer like a Ray head "
                f"(silent for {ANSWER_TIMEOUT_S:g} s); {fix}"]
    except (ConnectionResetError, BrokenPipeError):
        if "conn" in locals():  # connected, then dropped at once: a server, but not a Ray head
            return [f"--address {address}: not a Ray head (it closed the connection); {fix}"]
        return [f"--address {address}: no Ray head answers there (connection reset); {fix}"]
    except OSError as e:
        return [f"--address {address}: no Ray head answers there ({e.strerror or type(e).__name__}); {fix}"]
    if len(reply) == 9 and reply[3] == HTTP2_SETTINGS:
        return []
    what = "a web server (HTTP/1)" if reply.startswith((b"HTTP/", b"<")) else (
        "it closed the connection" if not reply else f"it answered {reply[:9]!r}")
    return [f"--address {address}: not a Ray head ({what}); {fix}"]


ANSWER_TIMEOUT_S = 5.0  # a gRPC server sends its SETTINGS frame as soon as the connection opens
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HTTP2_EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # length 0, type SETTINGS, no flags, stream 0
HTTP2_SETTINGS = 0x04  # the frame type, byte 3 of a frame header


def _read_up_to(conn: socket.socket, n: int) -> bytes:
    """Up to n bytes (fewer when the peer closes first)."""
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _dry_run_state(exp_dir: Path, all_trials: list[Trial], selected: list[Trial]) -> int:
    """For --dry-run: what running it now would do with the experiment folder; exit 2 when it would refuse."""
    try:
        check_unlocked(exp_dir)
        record = check_experiment(exp_dir, all_trials)
    except SweepError as e:
        click.echo("experiment: running it now would be refused (see the error below)")
        return _fail(e.problems)
    if record is None:
        click.echo(f"experiment: {exp_dir} (new)")
        return 0
    done = sum(o.complete for o in outcomes(exp_dir, selected).values())
    growth = compare(record["trials"], all_trials).growth
    growth = f"; it grows: {growth}" if growth else ""
    click.echo(f"experiment: {exp_dir} ({done} of {len(selected)} selected trial(s) complete{growth}; running "
               "resumes the rest)")
    return 0


def restart_experiment(exp_dir: Path, trial_ids: list[str] | None, lock: ExperimentLock) -> None:
    """--restart: move the experiment (or those trials) out of the way in one rename, then delete it; the
    lock moves with the folder, so it is taken again on the new one."""
    trash = discard(exp_dir, trial_ids)
    if trash is not None and trial_ids is None:
        lock.acquire()
    warning = delete_discarded(trash) if trash is not None else ""
    if warning:
        click.echo(warning, err=True)
    click.echo(f"--restart: discarded {'the results of ' + str(len(trial_ids)) + ' trial(s) in ' if trial_ids else ''}"
               f"{exp_dir}")


def _run_local(spec: SweepSpec, trial_id: str | None, local: bool, out: str | None, alone: bool = False) -> int:
    """`--trial ID --local`: the trial exactly as the sweep runs it, in this process (breakpoints work)."""
    if trial_id is None or not local:
        raise SweepError(["--trial ID and --local go together (to run some trials on Ray, use --only PATTERN)"])
    from cep.sweep.local import run_local

    return run_local(spec, trial_id, out, alone)


def _estimate_packs(spec: SweepSpec, packs: list[Pack]) -> None:
    """For --dry-run: each pack's estimated time, from a short calibration of its program on this machine."""
    import torch

    from cep.sweep.calibrate import seconds_per_epoch

    where = "GPU" if torch.cuda.is_available() else "CPU"
    asks_gpu = spec.resources.get("gpu", 0) > 0
    click.echo(f"\nestimated time per pack, calibrated on this machine's {where} "
               f"({torch_threads(spec.resources)} thread(s); a few timed minibatches)"
               + (": the sweep asks for GPUs, this machine has none" if asks_gpu and where == "CPU" else ""))
    measured: dict[tuple[str, int], float] = {}
    costs: dict[tuple[str, int], float] = {}
    rows = []
    for k, p in enumerate(packs, 1):
        cfg = p.members[0].config
        if cfg.action != "train":
            rows.append([str(k), p.id, "1", "-", "(one analysis)"])
            continue
        key = (pack_key(cfg), len(p.members))
        if key not in measured and len(measured) < MAX_CALIBRATIONS:
            measured[key] = seconds_per_epoch(p, torch_threads(spec.resources))
            costs[key] = _epoch_cost(p)
        per_epoch = measured.get(key) or _scaled(p, measured, costs)
        mark = "" if key in measured else "~"
        rows.append([str(k), p.id, str(len(p.members)), mark + duration(per_epoch),
                     mark + duration(per_epoch * cfg.epochs)])
    click.echo(text_table(["pack", "first trial", "trials", "per epoch", "all epochs"], rows, right=(2, 3, 4)))
    if len(measured) == MAX_CALIBRATIONS and any(r[3].startswith("~") for r in rows):
        click.echo(f"~: scaled by multiply-adds from the {MAX_CALIBRATIONS} pack programs calibrated")


MAX_CALIBRATIONS = 4  # distinct pack programs timed by --dry-run; the others are scaled from them


def _epoch_cost(pack: Pack) -> float:
    """Multiply-adds of one epoch of a pack (cep.sweep.plan's cost model)."""
    return sum(sample_steps(t.config) / t.config.epochs * n_weights(t.config) for t in pack.members)


def _scaled(pack: Pack, measured: dict[tuple[str, int], float], costs: dict[tuple[str, int], float]) -> float:
    """A pack's seconds per epoch from the calibrated pack of the closest cost, scaled by cost."""
    cost = _epoch_cost(pack)
    key = min(measured, key=lambda k: abs(math.log(max(costs[k], 1.0) / max(cost, 1.0))))
    return measured[key] * cost / max(costs[key], 1.0)


def _prefetch_data(trials: list[Trial]) -> None:
    """Fetch full MNIST once here, so that parallel trials do not all download it (and offline fails early)."""
    dirs = sorted({t.config.data_dir for t in trials if t.config.dataset == "mnist"})
    if dirs:
        from cep.data import load_mnist

        for d in dirs:
            load_mnist(d)


def _summary(spec: SweepSpec, exp_dir: Path, results: dict[str, FolderState], before: dict[str, FolderState],
             seconds: float, stop_signal: int | None, walls: str = "") -> int:
    """The final summary (with `walls`, the wall time per experiment); the exit code says whether every
    selected trial is complete."""
    counts = {k: sum(o.status == k for o in results.values()) for k in STATUSES}
    earlier = sum(1 for i, o in results.items() if o.complete and i in before and before[i].complete)
    click.echo(f"\nsweep {spec.name}: {len(results)} trial(s): " + ", ".join(
        f"{counts[k]} {k}" for k in STATUSES if counts[k] or k in ("finished", "errored"))
        + f" ({earlier} complete before this run, not rerun) in {duration(seconds, 'minutes')}")
    if walls:
        click.echo(walls)
    bad = {i: o for i, o in results.items() if not o.complete}
    for i, o in bad.items():
        detail = o.detail(trial_dir(exp_dir, i))
        click.echo(f"  {i}: {o.status}" + (f": {detail}" if detail else ""), err=True)
    click.echo(f"results: {exp_dir}/ (sweep.json; trials/<trial id>/metrics.csv, summary.json, learning_curve.png)")
    if stop_signal is not None:
        click.echo("stopped before the end: rerun the same command to resume", err=True)
        return 128 + stop_signal
    # a trial none of whose saved states can be used fails the same way on a plain rerun: its own line says
    # what to do (--restart --only ID), and the closing advice must not contradict it
    stuck = [i for i, o in bad.items() if o.status == "errored" and "ResumeError" in (o.error or "")]
    if len(stuck) < len(bad):
        click.echo(f"{len(bad) - len(stuck)} trial(s) incomplete: rerun the same command to retry them (errored "
                   "trials restart from their last checkpoint)", err=True)
    if stuck:
        click.echo(f"{len(stuck)} trial(s) cannot continue from their saved state: rerun with --restart --only "
                   f"'{stuck[0]}'" + (" (and likewise for the others above)" if len(stuck) > 1 else "")
                   + " to start them afresh", err=True)
    if bad:
        return EXIT_INCOMPLETE
    return 0


def wall_times(trials: list[Trial], spans: dict[str, tuple[float, float]], spec_name: str = "trials") -> str:
    """Wall time per experiment of the sweep in this run: from its first trial's start to its last trial's end
    (experiments run side by side, so these overlap); "" when this run trained nothing."""

    by_experiment: dict[str, list[tuple[float, float]]] = {}
    for t in trials:
        if t.id in spans:
            by_experiment.setdefault(t.experiment or spec_name, []).append(spans[t.id])
    if not by_experiment:
        return ""
    return "wall time per experiment: " + ", ".join(
        f"{name} {duration(max(e for _, e in sp) - min(s for s, _ in sp))} ({len(sp)} trial(s))"
        for name, sp in by_experiment.items())


def _aggregate(exp_dir: Path, skip: bool) -> None:
    """Summarise the experiment after every run (tables and figures in <exp_dir>/summary/)."""
    if skip:
        return
    from cep.aggregate.summary import aggregate_experiment, terminal_report

    try:
        agg = aggregate_experiment(exp_dir)
        click.echo("\n" + terminal_report(agg))
        if agg.unwritable:
            click.echo(f"warning: {agg.unwritable}", err=True)
    except Exception as e:  # the sweep's results stand; say why the summary is missing
        click.echo(f"warning: aggregating {exp_dir} failed ({type(e).__name__}: {e}); the trials' results are "
                   f"complete: retry with cep-sweep aggregate {exp_dir}", err=True)


def main(args: list[str] | None = None) -> None:
    """Console entry point: `cep-sweep SWEEP.yaml [options]`, `cep-sweep aggregate|status RESULTS_DIR`."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv[:1] == ["aggregate"]:
        from cep.aggregate.cli import aggregate_command

        run_main(aggregate_command, {}, argv[1:], prog_name="cep-sweep aggregate")
    if argv[:1] == ["track"]:
        from cep.tracking.command import track_command

        run_main(track_command, {}, argv[1:], prog_name="cep-sweep track")
    if argv[:1] == ["status"]:
        from cep.sweep.status import status_command

        run_main(status_command, {}, argv[1:], prog_name="cep-sweep status")
    run_main(sweep_command, {}, argv)

