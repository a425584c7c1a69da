"""What a sweep run says at its end: the trials' states, the wall time per experiment, the exit code, the summary.

Exit codes: 0 every selected trial complete; 1 some errored or incomplete; 128 + N stopped by signal N.
"""

from __future__ import annotations

from pathlib import Path

import click

from cep.layout import Trial, trial_dir
from cep.results import STATUSES, FolderState
from cep.sweep.spec import SweepSpec
from cep.text import duration

EXIT_INCOMPLETE = 1


def summary(spec: SweepSpec, exp_dir: Path, results: dict[str, FolderState], before: dict[str, FolderState],
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


def aggregate(exp_dir: Path, skip: bool) -> None:
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
