"""`cep-sweep`: run a sweep of trials with Ray Tune, resumably, on this machine or a Ray cluster.

A thin click group: `run` (the default: `cep-sweep SWEEP.yaml` is `cep-sweep run SWEEP.yaml`), `status`
and `aggregate`. Parsing and printing only; the experiment is opened by cep.sweep.experiment and run by
cep.sweep.driver. Everything is validated before Ray is imported or anything is written; bad input ends
with one `error: PATH: message` line per problem and exit code 2. Exit codes: 0 every selected trial
complete; 1 some errored or incomplete; 2 bad input; 130 / 143 stopped by Ctrl-C / SIGTERM (rerun to resume).
"""

from __future__ import annotations

import importlib
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from cep.cli import EXIT_USAGE, run_main
from cep.layout import experiment_dir
from cep.sweep import experiment
from cep.sweep.plan import dry_run_table, sweep_packs
from cep.sweep.report import aggregate, summary, wall_times
from cep.sweep.sections import option_problems
from cep.sweep.spec import SweepError, SweepSpec, load_sweep
from cep.text import printable
from cep.tracking.options import tracking_options, with_tracking

if TYPE_CHECKING:
    from cep.sweep.driver import SweepRun

HELP = {"help_option_names": ["-h", "--help"]}
SUBCOMMANDS = {"aggregate": ("cep.aggregate.cli", "aggregate_command"),
               "status": ("cep.sweep.status", "status_command"),
               "track": ("cep.tracking.command", "track_command")}


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


class SweepGroup(click.Group):
    """`run` when the first argument names no command; `status` and `aggregate` imported when asked for."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or args[0] not in (*self.list_commands(ctx), "-h", "--help", "--version"):
            args = ["run", *args]
        return super().parse_args(ctx, args)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return ["run", *SUBCOMMANDS]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in SUBCOMMANDS:
            module, attr = SUBCOMMANDS[name]
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


@click.group(cls=SweepGroup, context_settings=HELP)
@click.version_option(package_name="cep")
def cli() -> None:
    """Run a sweep of trials with Ray Tune (`cep-sweep SWEEP_FILE` runs it: see `cep-sweep run --help`)."""


@cli.command("run", context_settings=HELP)
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
    problems = [] if trial_id is not None or local else experiment.storage_problems(storage, address, name)
    problems += option_problems(dry_run=dry_run, restart=restart, local=local, progress_interval=progress_interval)
    if out is not None and not local:
        problems.append("--out: only for --trial ID --local (a sweep writes into <storage>/<name>/trials/); "
                        "remove --out, or add --trial ID --local")
    try:
        spec = load_sweep(sweep_file, sets)
        spec = with_tracking(spec, tracking, experiment_dir(storage, name or spec.name), problems)
        if problems:
            raise SweepError([])
        if trial_id is not None or local or alone:
            return _run_local(experiment.local_spec(spec, storage, name), trial_id, local, out, alone)
        ts = experiment.trials(spec, storage, name, only, restart)
    except SweepError as e:
        return _fail(e.problems + problems)
    if dry_run:
        return _dry_run(ts)
    problems = experiment.start_problems(ts, storage, address)
    if problems:
        return _fail(problems)
    try:
        experiment.check_before_lock(ts, restart)
    except SweepError as e:
        return _fail(e.problems)
    from cep.sweep.driver import SweepRun  # noqa: F811 (Ray is imported only from here on)

    try:
        with experiment.locked(ts.exp_dir) as lock:
            plan = experiment.open_experiment(ts, restart, lock, click.echo)
            run = SweepRun(ts.spec, plan.to_run, list(plan.packs), ts.exp_dir, address=address,
                           progress_interval=progress_interval, verbose=verbose)
            code = _search(plan, run, t_start) if experiment.adaptive(ts.spec) else _run(plan, run, t_start)
            if run.stop_signal is None:
                aggregate(ts.exp_dir, no_aggregate)
            return code
    except SweepError as e:
        return _fail(e.problems)


def _run(plan: experiment.Plan, run: SweepRun, t_start: float) -> int:
    """The packs not complete yet, then the summary of all selected trials; returns the exit code."""
    ts = plan.trials
    click.echo(f"cep-sweep {ts.spec.name}: {len(ts.selected)} trial(s)"
               + (f" of {len(ts.all)}" if ts.subset else "") + f"; results in {ts.exp_dir}")
    before = dict(plan.before)
    if not plan.packs:
        click.echo("every selected trial is already complete; nothing to run (--restart to start afresh)")
        return summary(ts.spec, ts.exp_dir, before, before, time.monotonic() - t_start, None)
    if before:
        click.echo(f"resuming the experiment in {ts.exp_dir}: {sum(o.complete for o in before.values())} of "
                   f"{len(before)} selected trial(s) complete; the others continue from their own checkpoints")
    results = experiment.execute(plan, run)
    walls = wall_times(list(ts.selected), run.progress.spans(), ts.spec.name) if run.progress is not None else ""
    return summary(ts.spec, ts.exp_dir, results, before, time.monotonic() - t_start, run.stop_signal, walls)


def _search(plan: experiment.Plan, run: SweepRun, t_start: float) -> int:
    """An adaptive search (cep.sweep.adaptive): rounds of one pack each, then the summary of every trial."""
    from cep.sweep.adaptive import run_adaptive

    spec, exp_dir = run.spec, run.exp_dir
    click.echo(f"cep-sweep {spec.name}: {spec.search.searcher} search of {spec.search.num_samples} point(s); "
               f"results in {exp_dir}")
    _, results = run_adaptive(run, None if plan.record is None else dict(plan.record), click.echo)
    return summary(spec, exp_dir, results, dict(plan.before), time.monotonic() - t_start, run.stop_signal)


def _dry_run(ts: experiment.Trials) -> int:
    """The trials, their packs and estimated time, and what running now would do with the folder."""
    from cep.sweep.calibrate import estimate_table

    chosen = [t for t in ts.spec.trials if t.id in {s.id for s in ts.selected}]
    packs = sweep_packs(ts.spec, chosen)
    click.echo(dry_run_table(ts.spec, chosen, packs))
    if experiment.adaptive(ts.spec):
        from cep.sweep.adaptive import points_per_round

        click.echo(f"{ts.spec.search.searcher} search: {ts.spec.search.num_samples} point(s), suggested in rounds "
                   f"of {points_per_round(ts.spec)} (one pack each); the trials above are the points recorded so far")
    click.echo(estimate_table(ts.spec, packs))
    try:
        click.echo(experiment.dry_run_state(ts))
    except SweepError as e:
        click.echo("experiment: running it now would be refused (see the error below)")
        return _fail(e.problems)
    return 0


def _run_local(spec: SweepSpec, trial_id: str | None, local: bool, out: str | None, alone: bool) -> int:
    """`--trial ID --local`: the trial exactly as the sweep runs it, in this process (breakpoints work)."""
    if trial_id is None or not local:
        raise SweepError(["--trial ID and --local go together (to run some trials on Ray, use --only PATTERN)"])
    from cep.sweep.local import run_local

    return run_local(spec, trial_id, out, alone)


def main(args: list[str] | None = None) -> None:
    """Console entry point: `cep-sweep [run] SWEEP.yaml [options]`, `cep-sweep aggregate|status RESULTS_DIR`."""
    argv = list(sys.argv[1:] if args is None else args)
    run_main(cli, {}, argv, prog_name="cep-sweep")
