"""`cep-sweep aggregate RESULTS_DIR` (also `python -m cep.aggregate.cli RESULTS_DIR`): a sweep's tables and figures.

A thin click command over `cep.aggregate.summary.aggregate_experiment`; a directory that
is not an experiment gives one line on stderr and exit code 2.
"""

from __future__ import annotations

from pathlib import Path

import click

from cep.aggregate.figdata import METRICS
from cep.aggregate.page import PAGE_FILE
from cep.aggregate.read import NotAnExperiment
from cep.aggregate.summary import aggregate_experiment, terminal_report


@click.command("aggregate", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("results_dir", type=click.Path(path_type=Path))
@click.option("--no-plots", is_flag=True, help="tables only (trials.csv, groups.csv, table.md), no figures")
@click.option("--quiet", is_flag=True, help="print only the trial counts and where the summary is")
@click.option("--metric", type=click.Choice(METRICS), default="final", show_default=True,
              help="the error of each trial in the Fig. 4 curve: final (the paper's measure) or best over the epochs")
def aggregate_command(results_dir: Path, no_plots: bool, quiet: bool, metric: str) -> int:
    """Summarise an experiment directory (<storage>/<sweep name>/) into RESULTS_DIR/summary/.

    Writes index.html (everything on one page for a browser), trials.csv,
    groups.csv, table.md (the table of Fig. 4 with the paper's numbers), and
    the figures the data allows: error versus initial weight angle
    (Fig. 4), learning curves, error versus EP/BPTT angle (Fig. 5a). Works while a
    sweep runs or after it stopped; partial results are marked PARTIAL.
    """
    try:
        agg = aggregate_experiment(results_dir, plots=not no_plots, metric=metric)
    except NotAnExperiment as e:
        raise click.ClickException(str(e)) from None
    if quiet:
        click.echo(f"{agg.experiment.name}: {agg.experiment.banner}"
                   + ("" if agg.unwritable else f"\nsummary in {agg.summary_dir}/; "
                                                f"open {agg.summary_dir / PAGE_FILE} in a browser"))
    else:
        click.echo(terminal_report(agg))
    if agg.unwritable:
        raise click.ClickException(f"{agg.unwritable}; the table above is complete (copy the experiment "
                                   "somewhere writable for the files)")
    return 0


def main() -> None:
    """Entry point of `python -m cep.aggregate.cli`."""
    from cep.cli import run_main  # one-line errors and exit code 2, like the other commands

    run_main(aggregate_command)


if __name__ == "__main__":
    main()
