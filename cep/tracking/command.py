"""`cep-sweep track results/NAME --mlflow URI` (and --tensorboard, --wandb): mirror an existing experiment,
finished or partial, after the fact; idempotent (what a tracker already has is not sent again). For clusters
whose nodes cannot reach the tracker, and for experiments run before tracking was set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cep.errors import UsageProblem
from cep.layout import SWEEP_FILE, read_sweep_json, trial_dir
from cep.safe_files import LinkRefused
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
    exp = Path(experiment)
    trials, sweep = _planned(exp)
    problems: list[str] = []
    tracking = merged(Tracking(tensorboard=False), options, problems)
    problems += library_problems(tracking) + uri_problems(tracking, exp)
    if not tracking.names and not problems:
        problems.append("no tracker given; add --tensorboard, --mlflow URI or --wandb PROJECT")
    refuse(problems)
    packs = {i: f"pack{k}" for k, p in enumerate(sweep.get("packs") or []) if isinstance(p, list) and len(p) > 1
             for i in p if isinstance(i, str)}
    name = exp.absolute().name
    failed = 0
    for tracker in make_trackers(tracking, name, exp):
        sent = 0
        for t in trials:
            v = view(t["id"], trial_dir(exp, t["id"]), name, t.get("grid"), packs.get(t["id"]), root=exp)
            if v.status == "pending" or v.state.refused:
                continue
            try:
                tracker.close(v)
                sent += 1
            except Exception as e:  # noqa: BLE001 (one line per trial, the others still go)
                failed += 1
                click.echo(f"warning: {tracker.name}: trial {t['id']}: {type(e).__name__}: "
                           f"{printable(redact(' '.join(str(e).split())[:300], tracking.mlflow_uri)[:200])}", err=True)
        click.echo(f"{tracker.name}: {sent} trial(s) mirrored ({redact(tracker.where())})")
    return EXIT_FAILED if failed else 0


def _planned(exp: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The train trials sweep.json lists (id, grid), and the record; one line when it is not an experiment."""
    if not (exp / SWEEP_FILE).is_file():
        raise UsageProblem(f"{exp}: not an experiment folder (no {SWEEP_FILE}); give <storage>/<sweep name>/")
    try:
        sweep = read_sweep_json(exp)
    except (LinkRefused, OSError, ValueError) as e:
        raise UsageProblem(f"{exp / SWEEP_FILE}: unreadable ({e})") from None
    trials = sweep.get("trials") if isinstance(sweep, dict) else None
    if not isinstance(trials, list):
        raise UsageProblem(f"{exp / SWEEP_FILE}: lists no trials")
    ok = [t for t in trials if isinstance(t, dict) and isinstance(t.get("id"), str)
          and (t.get("config") or {}).get("action", "train") == "train"
          and not any(p in ("", ".", "..") for p in t["id"].split("/"))]
    return ok, sweep
