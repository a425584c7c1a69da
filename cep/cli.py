"""`cep`: train one trial from the command line (`cep train`), or with the original main.py flags (`cep run`).

Thin click commands: they build a TrialConfig, call the trainer, print progress
and a summary. Bad input ends with one line per problem on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from cep.config import (
    ACTIVATIONS,
    DATASETS,
    DTYPES,
    RULES,
    RUN_FIELDS,
    SETTINGS,
    ConfigError,
    TrialConfig,
    coerce,
)
from cep.console import execute
from cep.errors import DataError, UsageProblem
from cep.local_run import EXIT_SIGTERM, Terminated, run_folder
from cep.presets import GDU_PRESETS, PAPER_EXPERIMENTS
from cep.safe_files import DiskFull, disk_full
from cep.text import printable
from cep.tracking.options import OPTION_NAMES, run_tracking, tracking_options
from cep.yaml_file import YAMLFileError, read_yaml

EXIT_USAGE = 2


# ------------------------------------------------------------------ plumbing
def run_main(command: click.Command, field_names: dict[str, str] | None = None,
             args: Sequence[str] | None = None, prog_name: str | None = None) -> None:
    """Run a click command, turning every input error into one line per problem and exit code 2."""
    names = field_names or {}
    try:
        rv = command.main(args=args, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Abort as e:
        if isinstance(e.__cause__, EOFError):  # click reports EOFError as an abort: it is a damaged file
            click.echo(f"error: a file ended unexpectedly ({e.__cause__ or 'EOFError'}); a truncated download "
                       "or checkpoint? delete or replace it", err=True)
            sys.exit(EXIT_USAGE)
        click.echo("interrupted by Ctrl-C; rerun the same command to resume", err=True)  # only Ctrl-C is 130
        sys.exit(130)
    except Terminated:
        click.echo("stopped by SIGTERM; rerun the same command to resume", err=True)
        sys.exit(EXIT_SIGTERM)
    except click.ClickException as e:
        click.echo(f"error: {printable(e.format_message())}", err=True)
        sys.exit(EXIT_USAGE)
    except ConfigError as e:
        for field, message in e.problems:
            click.echo(f"error: {printable(names.get(field, field))}: {printable(message)}", err=True)
        sys.exit(EXIT_USAGE)
    except (DataError, UsageProblem) as e:
        click.echo(f"error: {printable(e)}", err=True)
        sys.exit(EXIT_USAGE)
    except OSError as e:  # a full disk outside the atomic writer (a log, a folder): one line too
        if not disk_full(e, Path(e.filename or ".")):
            raise
        click.echo(f"error: {printable(DiskFull(Path(e.filename or 'the results folder')))}", err=True)
        sys.exit(EXIT_USAGE)
    sys.exit(rv if isinstance(rv, int) else 0)


def _default_threads(cfg: TrialConfig) -> int:
    from cep.device import default_threads  # torch is imported only once something runs

    return default_threads(cfg)


# --------------------------------------------------------------- cep train
# option name -> (TrialConfig field, click type, help)
OptionTable = dict[str, tuple[str, Any, str]]
TRAIN_OPTIONS: OptionTable = {
    "--rule": ("rule", click.Choice(RULES), "ep: tied weights; vf: untied feedback weights"),
    "--setting": ("setting", click.Choice(SETTINGS), "discrete-time (prototypical) or continuous-time"),
    "--continual/--no-continual": ("continual", None, "C-EP / C-VF: update the weights at every nudged step"),
    "--sizes": ("size_tab", str, "layer sizes output-first, e.g. 10,512,784"),
    "--lrs": ("lr_tab", str, "learning rates output-first, one per weight matrix, e.g. 0.04,0.08"),
    "--activation": ("activation", click.Choice(ACTIVATIONS), "neuron activation"),
    "--free-steps": ("T", int, "steps of the free phase (T)"),
    "--nudged-steps": ("Kmax", int, "steps of the nudged phase (Kmax)"),
    "--beta": ("beta", float, "nudging strength"),
    "--dt": ("dt", float, "Euler step of the continuous setting"),
    "--no-clamp/--clamp": ("no_clamp", None, "continuous setting: do not clamp states to [0, 1]"),
    "--batch-size": ("batch_size", int, "training minibatch size"),
    "--test-batch-size": ("test_batch_size", int, "evaluation batch size"),
    "--epochs": ("epochs", int, "epochs to train"),
    "--randbeta": ("randbeta", float, "probability of a +beta nudge per minibatch (0 = always +beta)"),
    "--angle": ("angle", float, "vf: initial angle between V and W^T, degrees"),
    "--debug-cep/--no-debug-cep": ("debug_cep", None, "Appendix F.2 consistency check of C-EP"),
    "--angle-grad/--no-angle-grad": ("angle_grad", None, "measure the EP/BPTT angle before training"),
    "--seed": ("seed", int, "random seed (default: drawn and recorded)"),
    "--dataset": ("dataset", click.Choice(DATASETS), "mnist5k: embedded 4k/1k subset; mnist: torchvision"),
    "--data-dir": ("data_dir", str, "where MNIST is read from or downloaded to"),
    "--train-samples": ("train_samples", int, "use only this many training images"),
    "--test-samples": ("test_samples", int, "use only this many test images"),
    "--val-samples": ("val_samples", int, "hold out this many training images (stratified, the same for every "
                                          "trial) to choose the best epoch on; 0: none"),
    "--device": ("device", str, "auto, cpu, cuda or cuda:N"),
    "--dtype": ("dtype", click.Choice(DTYPES), "floating-point precision"),
    "--out": ("out_dir", str, "results folder (default: runs/NAME-HASH, HASH a digest of the fields that change "
                               "the result, epochs excepted: the same command finds the same run again)"),
    "--checkpoint/--no-checkpoint": ("checkpoint", None, "save the full state every epoch (default: on), so "
                                     "that rerunning the same command resumes the run bit for bit"),
    "--stop-on-collapse/--no-stop-on-collapse": ("stop_on_collapse", None,
                                                 "end the run when it collapses (train error back to chance, or test "
                                                 "error at chance while train error is low)"),
    "--stop-on-drift/--no-stop-on-drift": ("stop_on_drift", None, "end the run when its train error drifts well "
                                                                  "above its minimum (cep.health)"),
}
THREADS_HELP = ("torch CPU threads (default: 1, or 2 for a net of more than 2 million forward weights; a thread "
                "count may change float32 results in the last bits, as another device does)")
TRAIN_FIELD_NAMES = {field: opt.split("/")[0] for opt, (field, _, _) in TRAIN_OPTIONS.items()}


def field_options(table: OptionTable) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Click options for trial fields, each defaulting to None ("not given", so presets show through)."""
    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        for opt, (field, tp, help_) in reversed(table.items()):
            f = click.option(opt, field, type=tp, default=None, help=help_)(f)
        return f
    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cep")
def cli() -> None:
    """Continual Equilibrium Propagation: train and analyse one trial.

    Sweeps over many trials: see cep-sweep. Exit codes: 0 done; 1 the run diverged (or collapsed, with
    --stop-on-collapse); 2 bad input (one error line per problem, nothing run); 130 / 143 stopped by
    Ctrl-C / SIGTERM: rerun the same command to resume from the last finished epoch.
    """


@cli.command("train")
@click.option("--preset", type=click.Choice(sorted(PAPER_EXPERIMENTS)), default=None,
              help="start from a published configuration (spec section 7)")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="start from a YAML file of trial fields")
@click.option("--quiet", is_flag=True, help="no per-epoch lines or progress")
@click.option("--overwrite", is_flag=True, help="start afresh: discard the results of an earlier run of this "
              "command (or in --out)")
@click.option("--threads", type=click.IntRange(min=1), default=None, help=THREADS_HELP)
@click.option("--resume-from", type=click.Path(exists=True, dir_okay=False), default=None,
              help="continue (or, with --epochs at its epoch, evaluate) the saved state in this checkpoint file, "
                   "e.g. RUN/checkpoint-best.pt, in a new --out folder; its trial fields are the starting point")
@tracking_options
@field_options(TRAIN_OPTIONS)
def train_command(preset: str | None, config_file: str | None, quiet: bool, overwrite: bool, threads: int | None,
                  resume_from: str | None, **options: Any) -> int:
    """Train one trial. Options override --config, which overrides --preset (or --resume-from's fields).

    Rerunning the same command resumes the run where it stopped (Ctrl-C, SIGTERM, a crash), bit for bit;
    a finished run is not trained again (a larger --epochs continues it); --overwrite starts afresh.

    Example: cep train --preset EP-1h --epochs 1
    """
    fields: dict[str, Any] = saved_fields(resume_from) if resume_from else {}
    if preset:
        fields.update(setting="discrete", activation="sigm", **PAPER_EXPERIMENTS[preset])
    if config_file:
        try:
            loaded = read_yaml(config_file, "--config file") or {}
        except YAMLFileError as e:
            raise UsageProblem("; ".join(e.problems)) from None
        if not isinstance(loaded, dict):
            raise UsageProblem(f"--config {config_file}: expected a mapping of trial fields")
        fields.update(loaded)
    tracking = {k: options.pop(k) for k in OPTION_NAMES}
    fields.update({k: v for k, v in options.items() if v is not None})
    fields.setdefault("checkpoint", True)  # a local run resumes unless told not to save its state
    cfg = TrialConfig.from_dict(fields)
    if cfg.out_dir is None:
        if resume_from:  # its own run: the default folder is the original run's (same fields), never rewritten
            raise UsageProblem(f"--resume-from {resume_from}: give --out NEW_FOLDER for the continued run (the "
                               "default folder is the original run's, which is kept as it is)")
        cfg = cfg.replace(out_dir=run_folder(cfg, preset or cfg.model_label))
    return execute(cfg, quiet, overwrite, threads or _default_threads(cfg), resume_from,
                   run_tracking(tracking, cfg.out_dir))


def saved_fields(path: str) -> dict[str, Any]:
    """The result fields of the trial saved in a checkpoint file (where it ran and wrote left out)."""
    from cep.checkpoint import load_state  # torch is imported only once something runs

    saved = load_state(path).config.to_dict()
    return {k: v for k, v in saved.items() if k not in RUN_FIELDS}


# ------------------------------------------------------------------ cep run
class _ArgParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage block
        raise UsageProblem(message)


def legacy_parser() -> argparse.ArgumentParser:
    """The original main.py flags, with its defaults (spec section 7), plus our data/output options."""
    p = _ArgParser(prog="cep run", add_help=False)
    p.add_argument("--batch-size", type=int, default=20)
    p.add_argument("--test-batch-size", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr_tab", nargs="+", type=float, default=[0.05, 0.1])
    p.add_argument("--randbeta", type=float, default=0.0)
    p.add_argument("--size_tab", nargs="+", type=int, default=[10])
    p.add_argument("--discrete", action="store_true")
    p.add_argument("--dt", type=float, default=0.2)
    p.add_argument("--T", type=int, default=100)
    p.add_argument("--Kmax", type=int, default=25)
    p.add_argument("--beta", type=float, default=1.0)
    p.add_argument("--activation-function", default="sigm")
    p.add_argument("--no-clamp", action="store_true")
    p.add_argument("--learning-rule", default="ep")
    p.add_argument("--cep", "--c-ep", dest="cep", action="store_true")
    p.add_argument("--angle", type=float, default=0.0)
    p.add_argument("--action", default="train", choices=["train", "plotcurves"])
    p.add_argument("--device-label", type=int, default=None)
    p.add_argument("--debug-cep", action="store_true")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--angle-grad", action="store_true")
    # ours
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-dir", default="./data")
    p.add_argument("--out", default=None)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--train-samples", type=int, default=None)
    p.add_argument("--test-samples", type=int, default=None)
    p.add_argument("--checkpoint", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (overrides --device-label)")
    return p


LEGACY_FIELD_NAMES = {"batch_size": "--batch-size", "test_batch_size": "--test-batch-size", "lr_tab": "--lr_tab",
                      "size_tab": "--size_tab", "activation": "--activation-function", "rule": "--learning-rule",
                      "debug_cep": "--debug-cep", "out_dir": "--out", "train_samples": "--train-samples",
                      "test_samples": "--test-samples", "data_dir": "--data-dir", "no_clamp": "--no-clamp",
                      "device": "--device-label", "continual": "--cep", "setting": "--discrete",
                      **{f: f"--{f}" for f in ("T", "Kmax", "beta", "dt", "epochs", "randbeta", "angle", "seed",
                                               "dataset", "dtype")}}


def legacy_config(argv: Sequence[str]) -> TrialConfig:
    """TrialConfig of an original main.py command line (`python main.py` replaced by `cep run`)."""
    a = legacy_parser().parse_args(list(argv))
    if a.device is not None:
        device = a.device
    elif a.device_label is None or a.device_label < 0:
        device = "auto" if a.device_label is None else "cpu"
    else:
        import torch  # deferred: torch is imported only once something runs
        device = f"cuda:{a.device_label}" if torch.cuda.is_available() else "cpu"
    fields = dict(action="gdu" if a.action == "plotcurves" else "train", rule=a.learning_rule,
                  setting="discrete" if a.discrete else "continuous", continual=a.cep, size_tab=a.size_tab,
                  activation=a.activation_function, T=a.T, Kmax=a.Kmax, beta=a.beta, dt=a.dt,
                  no_clamp=a.no_clamp, lr_tab=a.lr_tab, batch_size=a.batch_size, epochs=a.epochs,
                  randbeta=a.randbeta, angle=a.angle, debug_cep=a.debug_cep, angle_grad=a.angle_grad,
                  seed=a.seed, dataset=a.dataset, data_dir=a.data_dir, train_samples=a.train_samples,
                  test_samples=a.test_samples, test_batch_size=a.test_batch_size, device=device,
                  dtype=a.dtype, out_dir=a.out, checkpoint=a.checkpoint)
    cfg = TrialConfig.from_dict(fields)
    if cfg.out_dir is None:
        cfg = cfg.replace(out_dir=run_folder(cfg, f"plotcurves-{cfg.depth_name}" if cfg.action == "gdu"
                                             else cfg.model_label))
    return cfg


@cli.command("run", context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                      "help_option_names": []})
@click.pass_context
def run_command(ctx: click.Context) -> int:
    """Accept the original main.py flags verbatim: cep run --action 'train' --discrete --size_tab 10 512 784 ...

    Also: --dataset mnist|mnist5k (default mnist, in --data-dir ./data), --out DIR,
    --dtype float32|float64, --train-samples N, --test-samples N, --no-checkpoint, --overwrite, --device,
    --threads N.
    As `cep train`: rerunning the same command resumes the run (runs/NAME-HASH unless --out).
    """
    if any(arg in ("-h", "--help") for arg in ctx.args):
        click.echo(ctx.get_help())
        click.echo("\nFlags (as main.py): " + shlex.join(
            sorted(o for act in legacy_parser()._actions for o in act.option_strings)))
        return 0
    cfg = legacy_config(ctx.args)
    threads = legacy_parser().parse_args(list(ctx.args)).threads
    return execute(cfg, overwrite="--overwrite" in ctx.args, threads=threads or _default_threads(cfg))


# ------------------------------------------------------------------ cep gdu
GDU_OPTIONS: OptionTable = {
    **{opt: spec for opt, spec in TRAIN_OPTIONS.items()
       if spec[0] in ("rule", "setting", "continual", "size_tab", "lr_tab", "activation", "T", "Kmax", "beta",
                      "dt", "no_clamp", "batch_size", "angle", "seed", "dataset", "data_dir", "device", "dtype",
                      "out_dir")},
    "--units": ("gdu_units", int, "units per layer drawn in the figures (default 5)"),
}
GDU_FIELD_NAMES = {field: opt.split("/")[0] for opt, (field, _, _) in GDU_OPTIONS.items()}


def gdu_config(preset: str, options: dict[str, Any]) -> TrialConfig:
    """TrialConfig of `cep gdu`: the preset, then the given options (None = not given).

    Defaults differing from training: float64 (the EP differences are O(beta)) and the offline
    mnist5k data. When --sizes changes the depth without --lrs, the preset's rate is repeated.
    """
    fields: dict[str, Any] = {**GDU_PRESETS[preset], "dtype": "float64", "dataset": "mnist5k", "checkpoint": True}
    given = {k: v for k, v in options.items() if v is not None}
    fields.update(given)
    if "lr_tab" not in given and "size_tab" in given:
        n = len(coerce("size_tab", given["size_tab"]))
        fields["lr_tab"] = [GDU_PRESETS[preset]["lr_tab"][0]] * max(n - 1, 1)
    cfg = TrialConfig.from_dict(fields)
    if cfg.out_dir is None:
        cfg = cfg.replace(out_dir=run_folder(cfg, f"gdu-{preset}"))
    return cfg


@cli.command("gdu")
@click.option("--preset", type=click.Choice(sorted(GDU_PRESETS)), default="ep-discrete", show_default=True,
              help="a plotcurves command of the seed README; Fig. 5(b): ep-, c-ep-, c-vf-continuous")
@click.option("--overwrite", is_flag=True, help="start afresh: discard the results of an earlier run of this "
              "command (or in --out)")
@click.option("--threads", type=click.IntRange(min=1), default=None, help=THREADS_HELP)
@field_options(GDU_OPTIONS)
def gdu_command(preset: str, overwrite: bool, threads: int | None, **options: Any) -> int:
    """EP updates versus BPTT gradients on the first minibatch (spec section 6; the paper's Figs. 5b, 8-15).

    Options override --preset. Defaults: float64, mnist5k. Writes figures, trajectories.npz,
    agreement.csv and summary.json, and prints the per-layer agreement.

    Example: cep gdu --preset c-ep-continuous --seed 0
    """
    try:
        cfg = gdu_config(preset, options)
        return execute(cfg, overwrite=overwrite, threads=threads or _default_threads(cfg))
    except ConfigError as e:
        raise ConfigError([(GDU_FIELD_NAMES.get(f, f), m) for f, m in e.problems]) from None


def main() -> None:
    """Console entry point of `cep`."""
    names = TRAIN_FIELD_NAMES if len(sys.argv) > 1 and sys.argv[1] == "train" else LEGACY_FIELD_NAMES
    run_main(cli, names)
