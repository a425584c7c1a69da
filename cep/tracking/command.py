"""`cep-sweep track results/NAME --mlflow URI` (and --tensorboard, --wandb): mirror an existing experiment,
finished or partial, after the fact; idempotent (what a tracker already has is not sent again). For clusters
whose nodes cannot reach the tracker, and for experiments run before tracking was set."""

from __future__ import annotations

from typing import Any

import click

from cep.aggregate.read import NotAnExperiment, load_experiment
from cep.errors import UsageProblem
from cep.text import printable
from cep.tracking.mirror import make_trackers
from cep.tracking.options import merged, refuse, tracking_options
from cep.tracking.settings import Tracking, library_problems, redact, uri_problems
from cep.tracking.trial_view import view

EXIT_FAILED = 1


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("experiment", type=click.Path(file_okay=False))
@tracking_options
def track_command(experiment: str, **options: Any) -> int:
    """Mirror the trials of EXPERIMENT (results/NAME) into TensorBoard, MLflow or W&B; rerun to catch up.

    \b
    Examples:
      cep-sweep track results/quickstart --mlflow sqlite:///mlflow.db
      cep-sweep track results/quickstart --tensorboard --wandb cep
    """
    try:
        exp = load_experiment(experiment)
    except NotAnExperiment as e:
        raise UsageProblem(f"{experiment}: {e}") from None
    problems: list[str] = []
    tracking = merged(Tracking(tensorboard=False), options, problems)
    problems += library_problems(tracking) + uri_problems(tracking, exp.path)
    if not tracking.names and not problems:
        problems.append("no tracker given; add --tensorboard, --mlflow URI or --wandb PROJECT")
    refuse(problems)
    packs = {i: f"pack{k}" for k, p in enumerate(exp.sweep.get("packs") or []) if isinstance(p, list) and len(p) > 1
             for i in p if isinstance(i, str)}
    failed = 0
    for tracker in make_trackers(tracking, exp.name, exp.path):
        sent = 0
        for t in exp.trials:
            if t.status == "pending" or t.action != "train" or t.folder.refused:
                continue
            try:
                tracker.close(view(t.id, t.path, exp.name, t.grid, packs.get(t.id), root=exp.path))
                sent += 1
            except Exception as e:  # noqa: BLE001 (one line per trial, the others still go)
                failed += 1
                click.echo(f"warning: {tracker.name}: trial {t.id}: {type(e).__name__}: "
                           f"{printable(redact(' '.join(str(e).split())[:300], tracking.mlflow_uri)[:200])}", err=True)
        click.echo(f"{tracker.name}: {sent} trial(s) mirrored ({redact(tracker.where())})")
    return EXIT_FAILED if failed else 0
