"""The tracking options shared by `cep train`, `cep-sweep` and `cep-sweep track`, merged over a sweep file's
`tracking` section (an option wins) into one Tracking value."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import click

from cep.errors import UsageProblem
from cep.text import printable
from cep.tracking.settings import Tracking, library_problems, parse_tracking, uri_problems

OPTION_NAMES = ("tensorboard", "mlflow", "mlflow_experiment", "wandb", "wandb_mode")
RENAMES = (("e.g. options.mlflow: {uri: sqlite:///mlflow.db}", "e.g. --mlflow sqlite:///mlflow.db"),
           ("options.mlflow.uri", "--mlflow"), ("options.mlflow.experiment", "--mlflow-experiment"),
           ("options.wandb.project", "--wandb"), ("options.wandb.mode", "--wandb-mode"),
           ("options.tensorboard", "--tensorboard"))  # a problem's YAML path -> the option that gave it


def tracking_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add --tensorboard/--no-tensorboard, --mlflow URI, --mlflow-experiment, --wandb PROJECT, --wandb-mode."""
    options = [
        click.option("--tensorboard/--no-tensorboard", "tensorboard", default=None,
                     help="TensorBoard event files in each trial folder (default: on)"),
        click.option("--mlflow", "mlflow", default=None, metavar="URI",
                     help="mirror each trial as an MLflow run at this tracking URI (e.g. sqlite:///mlflow.db, "
                          "http://HOST:5000)"),
        click.option("--mlflow-experiment", default=None, metavar="NAME",
                     help="the MLflow experiment (default: the sweep's name, or the run folder's)"),
        click.option("--wandb", "wandb", default=None, metavar="PROJECT",
                     help="mirror each trial as a Weights & Biases run in this project"),
        click.option("--wandb-mode", type=click.Choice(["offline", "online"]), default=None,
                     help="W&B offline (files only; `wandb sync` uploads them) or online (default: offline)"),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def merged(base: Tracking, options: dict[str, Any], problems: list[str]) -> Tracking:
    """`base` (a sweep file's section, or the default) with the options given on the command line."""
    def given(key: str, default: Any) -> Any:
        return options[key] if options.get(key) is not None else default

    section: dict[str, Any] = {}
    if options.get("tensorboard") is not None:
        section["tensorboard"] = options["tensorboard"]
    if options.get("mlflow") is not None or options.get("mlflow_experiment") is not None:
        section["mlflow"] = {k: v for k, v in (("uri", given("mlflow", base.mlflow_uri)),
                                               ("experiment", given("mlflow_experiment", base.mlflow_experiment)))
                             if v is not None}
    if options.get("wandb") is not None or options.get("wandb_mode") is not None:
        section["wandb"] = {k: v for k, v in (("project", given("wandb", base.wandb_project)),
                                              ("mode", given("wandb_mode", base.wandb_mode))) if v is not None}
    own: list[str] = []
    parsed = parse_tracking(section, own, "options")
    for p in own:
        for path, option in RENAMES:
            p = p.replace(path, option)
        problems.append(p)
    changes = {k: getattr(parsed, k) for k in ("tensorboard",) if "tensorboard" in section}
    if "mlflow" in section:
        changes.update(mlflow_uri=parsed.mlflow_uri, mlflow_experiment=parsed.mlflow_experiment)
    if "wandb" in section:
        changes.update(wandb_project=parsed.wandb_project, wandb_mode=parsed.wandb_mode)
    return replace(base, **changes)


def with_tracking(spec: Any, options: dict[str, Any], exp_dir: Any, problems: list[str]) -> Any:
    """A SweepSpec whose tracking has the command line's options; their problems (a library missing, a
    tracker file reached through a link) appended."""
    tracking = merged(spec.tracking, options, problems)
    problems += [p for p in library_problems(tracking, "tracking") if p not in library_problems(spec.tracking)]
    problems += uri_problems(tracking, exp_dir)
    return replace(spec, tracking=tracking)


def run_tracking(options: dict[str, Any], out_dir: Any) -> dict[str, Any]:
    """`cep train`'s tracking options as a Tracking dict; bad ones raise UsageProblem, one line each."""
    problems: list[str] = []
    tracking = merged(Tracking(), options, problems)
    problems += library_problems(tracking, "tracking") + uri_problems(tracking, out_dir)
    refuse(problems)
    return tracking.to_dict()


def refuse(problems: list[str]) -> None:
    """Each problem as its own `error:` line (the last one through UsageProblem, exit code 2)."""
    if not problems:
        return
    for p in problems[:-1]:
        click.echo(f"error: {printable(p)}", err=True)
    raise UsageProblem(problems[-1])
