"""Run a sweep's trials with Ray Tune: the trainable, the progress table, Tuner build/restore, stop signals.

The only module that imports Ray. Ray Tune schedules the trials, retries failed
ones (FailureConfig), keeps one checkpoint per trial and restores experiments
(Tuner.restore). Our own files make it exact and honest:

* every epoch the trainable writes the trial's results folder (trials/<id>/,
  see cep.sweep_store) including checkpoint.pt, the trainer's exact state, and
  reports the epoch's metrics to Tune with the same state as a Tune checkpoint;
* a (re)started trial continues from the newest of its Tune checkpoint and its
  checkpoint.pt (Tune's experiment snapshot may lag behind the trial), and a
  trial whose state is already finished reports its final metrics once and is
  not rerun;
* after fit() the results folders, not Tune's view, decide what is complete.

Test-only hooks (read by the driver, passed to the trainable):
  CEP_FAULT_INJECT="<trial id glob>:<epoch>[:<times>|always]" raises in that epoch;
  CEP_TEST_EPOCH_SLEEP=<seconds> sleeps after each epoch (lets tests interrupt mid-sweep).
"""

from __future__ import annotations

import os

# Before Ray Tune is imported: its new console output ignores custom reporters; we print our own table.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

import logging  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, TextIO  # noqa: E402

import ray  # noqa: E402
from ray import tune  # noqa: E402

from cep.config import TrialConfig  # noqa: E402
from cep.results import CHECKPOINT_FILE, SUMMARY_FILE, RunDir, write_atomic  # noqa: E402
from cep.sweep import LOCATION_FIELDS, SweepError, SweepSpec, Trial  # noqa: E402
from cep.sweep_store import (  # noqa: E402
    ERROR_FILE,
    ERRORS_LOG,
    LOG_FILE,
    NODE_FILE,
    STORAGE_PROBE,
    Fault,
    TrialOutcome,
    fault_due,
    outcomes,
    storage_probe,
    torch_threads,
    trial_device,
)

STATE_FILE = "state.pt"  # inside a Tune checkpoint folder
STAGING_PREFIX = "cep-ckpt-"  # node-local temp folders holding a checkpoint while Tune copies it: <prefix><pid>-*
STORAGE_CHECK_S = 60.0  # how long the nodes of a cluster get to show that they see the experiment folder


class FaultInjected(RuntimeError):
    """Raised by the test-only CEP_FAULT_INJECT hook."""


@dataclass(frozen=True)
class TrialContext:
    """What every trial needs besides its id (bound to the trainable; fresh on every run and restore)."""

    configs: dict[str, dict[str, Any]]  # trial id -> resolved TrialConfig dict (out_dir = trials/<id>)
    resources: dict[str, float]
    faults: tuple[Fault, ...] = ()
    epoch_sleep: float = 0.0


# ------------------------------------------------------------------ trainable
def _log(folder: Path, line: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOG_FILE, "a") as f:
        f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {socket.gethostname()} pid={os.getpid()} {line}\n")


def _same_trial(a: TrialConfig, b: TrialConfig) -> bool:
    skip = set(LOCATION_FIELDS) | {"device", "seed"}
    da = {k: v for k, v in a.to_dict().items() if k not in skip}
    db = {k: v for k, v in b.to_dict().items() if k not in skip}
    return da == db and (a.seed is None or b.seed is None or a.seed == b.seed)


def _newest_state(cfg: TrialConfig, folder: Path, device: str) -> tuple[Any, str]:
    """The most advanced saved state of this trial (Tune's checkpoint or checkpoint.pt), and where it came from."""
    from cep.train import load_state

    found, unreadable = [], []

    def read(path: Path, source: str) -> None:  # one damaged copy must not cost the other
        try:
            found.append((load_state(path, device), source))
        except Exception as e:
            unreadable.append(f"{source} ({type(e).__name__}: {e})")
            _log(folder, f"warning: cannot read {source} {path}: {type(e).__name__}: {e}")

    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            if (Path(d) / STATE_FILE).exists():
                read(Path(d) / STATE_FILE, "Tune checkpoint")
    if (folder / CHECKPOINT_FILE).exists():
        read(folder / CHECKPOINT_FILE, CHECKPOINT_FILE)
    if not found and unreadable:
        raise RuntimeError(f"cannot read any saved state of trial {folder}: {'; '.join(unreadable)}; rerun "
                           "cep-sweep with --restart --only TRIAL to start it afresh")
    if not found:
        return None, "the start"
    state, source = max(found, key=lambda s: (s[0].epoch, s[0].status != "running"))
    if not _same_trial(state.config, cfg):
        raise RuntimeError(f"{source} of trial {folder} belongs to a different configuration; "
                           "rerun cep-sweep with --restart (or --restart --only TRIAL) to start it afresh")
    return state, source


def _tune_report(metrics: dict[str, Any], folder: Path, trial_id: str, epochs: int, replayed: bool = False) -> None:
    """Report one epoch to Tune with checkpoint.pt as the trial's Tune checkpoint."""
    result = {**metrics, "trial_id": trial_id, "epochs": epochs, "replayed": replayed}
    with tempfile.TemporaryDirectory(prefix=f"{STAGING_PREFIX}{os.getpid()}-") as d:
        shutil.copyfile(folder / CHECKPOINT_FILE, Path(d) / STATE_FILE)
        tune.report(result, checkpoint=tune.Checkpoint.from_directory(d))


def remove_stale_staging(min_age_s: float = 3600.0) -> None:
    """Remove the checkpoint staging folders of trial processes that were killed (they could not do it).

    A folder lives for a second; the age limit spares a live one whose pid this process cannot see
    (a container sharing /tmp but not the pid namespace).
    """
    for d in Path(tempfile.gettempdir()).glob(f"{STAGING_PREFIX}*-*"):
        pid = d.name[len(STAGING_PREFIX):].split("-", 1)[0]
        try:
            old = time.time() - d.stat().st_mtime > min_age_s
        except OSError:
            continue
        if pid.isdigit() and old and not _alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


def _write_node(folder: Path) -> None:
    try:
        ctx = ray.get_runtime_context()
        node_id, ip = ctx.get_node_id(), ray.util.get_node_ip_address()
    except Exception:  # outside Ray (tests calling the trainable directly)
        node_id, ip = "-", "-"
    write_atomic(folder / NODE_FILE, f"host {socket.gethostname()}\nnode_ip {ip}\nray_node_id {node_id}\n"
                                     f"pid {os.getpid()}\nstarted {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")


def run_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """The Tune trainable: one trial, epoch by epoch, resumable exactly; errors land in trials/<id>/error.txt."""
    import torch

    for name in ("ray.train", "ray.tune"):  # no "Checkpoint successfully created" line per epoch in the console
        logging.getLogger(name).setLevel(logging.WARNING)
    trial_id = config["trial_id"]
    cfg = TrialConfig.from_dict(ctx.configs[trial_id])
    folder = Path(cfg.out_dir or ".")
    torch.set_num_threads(torch_threads(ctx.resources))
    cfg = cfg.replace(device=trial_device(cfg, ctx.resources))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ERROR_FILE).unlink(missing_ok=True)  # a new attempt: error.txt means "the last attempt failed"
    _write_node(folder)
    remove_stale_staging()
    try:
        if cfg.action == "gdu":
            _run_gdu_trial(cfg, folder, trial_id)
        else:
            _run_train_trial(cfg, folder, trial_id, ctx)
    except Exception as e:
        text = "".join(traceback.format_exception(e))
        write_atomic(folder / ERROR_FILE, text)
        with open(folder / ERRORS_LOG, "a") as f:
            f.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S%z')} on {socket.gethostname()}\n{text}")
        _log(folder, f"error {type(e).__name__}: {e}")
        raise


def _run_train_trial(cfg: TrialConfig, folder: Path, trial_id: str, ctx: TrialContext) -> None:
    from cep.train import save_state, train

    state, source = _newest_state(cfg, folder, cfg.device)
    run = RunDir(folder, checkpoint=True)
    if state is not None and state.status != "running":
        # already complete (e.g. finished after Tune's last experiment snapshot): report, do not rerun
        if not (folder / CHECKPOINT_FILE).exists() or source != CHECKPOINT_FILE:
            save_state(state, folder / CHECKPOINT_FILE)
        run.write(state)
        last = dict(state.history[-1]) if state.history else {"epoch": state.epoch}
        last["status"] = state.status
        _log(folder, f"replay: already {state.status} after epoch {state.epoch} ({source}); not rerun")
        _tune_report(last, folder, trial_id, cfg.epochs, replayed=True)
        return
    _log(folder, f"start after epoch {state.epoch if state else 0} (from {source}) on {cfg.device}, "
                 f"{torch_threads(ctx.resources)} thread(s)")

    def report(metrics: dict[str, Any], st: Any) -> None:
        if fault_due(ctx.faults, trial_id, metrics["epoch"], folder):
            raise FaultInjected(f"fault injected by CEP_FAULT_INJECT in epoch {metrics['epoch']} of {trial_id}")
        if ctx.epoch_sleep:
            time.sleep(ctx.epoch_sleep)
        run.report(metrics, st)  # config.yaml, metrics.csv, summary.json, checkpoint.pt (atomic)
        _log(folder, f"epoch {metrics['epoch']} done: test error {metrics['test_error']:.2f}%")
        _tune_report(metrics, folder, trial_id, cfg.epochs)

    final = train(cfg, report=report, state=state)
    if final.status == "diverged":  # train() does not report the diverging epoch: record the end state
        save_state(final, folder / CHECKPOINT_FILE)
        last = dict(final.history[-1]) if final.history else {"epoch": final.epoch}
        last["status"] = "diverged"
        _tune_report(last, folder, trial_id, cfg.epochs)
    run.finish(final)
    _log(folder, f"end: {final.status} after epoch {final.epoch}")


def _run_gdu_trial(cfg: TrialConfig, folder: Path, trial_id: str) -> None:
    """One-shot analysis: run it (unless its summary says it is done) and report once."""
    import json

    summary_path = folder / SUMMARY_FILE
    done = summary_path.exists() and json.loads(summary_path.read_text()).get("status", "finished") == "finished"
    if done:
        _log(folder, "replay: gdu analysis already done; not rerun")
    else:
        _log(folder, f"start gdu analysis on {cfg.device}")
        from cep.gdu_cli import run_gdu

        run_gdu(cfg)
        _log(folder, "end: gdu analysis done")
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    tune.report({"epoch": 1, "epochs": 1, "status": summary.get("status", "finished"), "trial_id": trial_id,
                 "replayed": done})


# ----------------------------------------------------------- progress display
def trial_name(trial: Any) -> str:
    """Tune's display name of a trial: our id."""
    return str(trial.config.get("trial_id", trial.trial_id))


def trial_dirname(trial: Any) -> str:
    """Tune's own folder for a trial: the id made flat, plus Tune's unique suffix."""
    flat = trial_name(trial).replace("/", "_")[:100]
    return f"{flat}_{trial.trial_id}"


@dataclass
class _Row:
    epoch: int = 0
    epochs: int = 0
    train_error: float | None = None
    test_error: float | None = None
    status: str = "pending"


class ProgressTable(tune.Callback):
    """Our live progress: a line per trial event, and every `interval` seconds a table of running trials."""

    def __init__(self, epochs: dict[str, int], interval: float = 30.0, out: TextIO | None = None):
        self.epochs = dict(epochs)  # trial id -> epochs it trains
        self.interval = interval
        self._out = out
        self._reset()

    def _reset(self) -> None:
        self.rows: dict[str, _Row] = {i: _Row(epochs=n) for i, n in self.epochs.items()}
        self.t0 = time.monotonic()
        self.last_table = time.monotonic()
        self.changed = False

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles its RunConfig (tuner.pkl): keep only settings
        return {"epochs": self.epochs, "interval": self.interval}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.epochs, self.interval, self._out = state["epochs"], state["interval"], None
        self._reset()

    def _print(self, text: str) -> None:
        out = self._out or sys.stdout
        out.write(text + "\n")
        out.flush()

    def _elapsed(self) -> str:
        s = int(time.monotonic() - self.t0)
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"

    def _row(self, trial: Any) -> _Row:
        return self.rows.setdefault(trial_name(trial), _Row())

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._row(trial).status = "running"
        self.changed = True

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        row = self._row(trial)
        row.epoch, row.epochs = int(result.get("epoch", 0)), int(result.get("epochs", row.epochs))
        row.train_error, row.test_error = result.get("train_error"), result.get("test_error")
        row.status = "running" if result.get("status") == "running" else str(result.get("status"))
        if result.get("replayed"):
            self._print(f"= {trial_name(trial)}: already {row.status} earlier (epoch {row.epoch}); not rerun")
        self.changed = True
        self.on_step_end(iteration, trials)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        row = self._row(trial)
        if row.status == "running":
            row.status = "stopped"
        err = f", test error {row.test_error:.2f}%" if isinstance(row.test_error, float) else ""
        self._print(f"+ {trial_name(trial)}: {row.status} at epoch {row.epoch}/{row.epochs}{err} [{self._elapsed()}]")
        self.changed = True

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._row(trial).status = "retrying"
        self._print(f"! {trial_name(trial)}: failed ({_error_line(trial)}); retrying from its last checkpoint "
                    f"(failure {trial.num_failures})")
        self.changed = True

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._row(trial).status = "errored"
        self._print(f"x {trial_name(trial)}: errored ({_error_line(trial)}) after {trial.num_failures} failure(s)")
        self.changed = True

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if self.changed and time.monotonic() - self.last_table >= self.interval:
            self._print(self.table())
            self.last_table, self.changed = time.monotonic(), False

    def table(self) -> str:
        counts: dict[str, int] = {}
        for r in self.rows.values():
            counts[r.status] = counts.get(r.status, 0) + 1
        head = f"[{self._elapsed()}] " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        active = [(i, r) for i, r in self.rows.items() if r.status in ("running", "retrying")]
        if not active:
            return head
        width = max(len("trial"), *(len(i) for i, _ in active))
        lines = [head, f"  {'trial'.ljust(width)}  {'epoch':>9}  {'train err':>9}  {'test err':>9}  status"]
        for i, r in active:
            tr = f"{r.train_error:.2f}%" if isinstance(r.train_error, float) else "-"
            te = f"{r.test_error:.2f}%" if isinstance(r.test_error, float) else "-"
            lines.append(f"  {i.ljust(width)}  {f'{r.epoch}/{r.epochs}':>9}  {tr:>9}  {te:>9}  {r.status}")
        return "\n".join(lines)


def _error_line(trial: Any) -> str:
    path = getattr(trial, "error_file", None)
    try:
        lines = [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()] if path else []
    except OSError:
        lines = []
    return lines[-1][:200] if lines else "error"


class ErrorFiles(tune.Callback):
    """Writes trials/<id>/error.txt from the driver when a trial died without writing it (e.g. a lost worker)."""

    def __init__(self, folders: dict[str, str]):
        self.folders = folders

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._write(trial)

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._write(trial)

    def _write(self, trial: Any) -> None:
        folder = self.folders.get(trial_name(trial))
        if folder and not (Path(folder) / ERROR_FILE).exists():
            path = getattr(trial, "error_file", None)
            text = Path(path).read_text() if path and Path(path).exists() else "trial failed (no details from Ray)\n"
            write_atomic(Path(folder) / ERROR_FILE, text)


# -------------------------------------------------------------------- driver
@dataclass
class SweepRun:
    """What one `cep-sweep` invocation runs, and where."""

    spec: SweepSpec
    trials: list[Trial]  # the selected trials, resolved (out_dir under exp_dir/trials)
    exp_dir: Path
    tune_dir: Path  # Ray Tune's experiment folder (exp_dir itself, or a subsets/ folder for --only)
    address: str | None = None
    faults: tuple[Fault, ...] = ()
    epoch_sleep: float = 0.0
    progress_interval: float = 30.0
    out: TextIO | None = None
    prepare: Callable[[], None] | None = None  # called once Ray is up, before any trial starts (writes sweep.json)
    stop_signal: int | None = field(default=None, init=False)

    def say(self, text: str) -> None:
        out = self.out or sys.stdout
        out.write(text + "\n")
        out.flush()


def _tuner(run: SweepRun, trainable: Any, callbacks: list[tune.Callback]) -> tune.Tuner:
    """A new Tuner for the run, or the restored one when its Tune folder holds an earlier attempt."""
    failure = tune.FailureConfig(max_failures=run.spec.max_failures)
    if tune.Tuner.can_restore(str(run.tune_dir)):
        try:
            tuner = tune.Tuner.restore(str(run.tune_dir), trainable, resume_unfinished=True, resume_errored=True)
        except Exception as e:  # e.g. killed before Tune's first snapshot: our checkpoints still resume every trial
            run.say(f"warning: cannot restore Ray Tune's state in {run.tune_dir} ({type(e).__name__}: {e}); "
                    "starting Tune afresh, trials continue from their own checkpoints")
            for p in run.tune_dir.glob("experiment_state-*.json"):
                p.unlink()
            (run.tune_dir / "tuner.pkl").unlink(missing_ok=True)
        else:
            # The RunConfig comes back from tuner.pkl; refresh what this run may change (callbacks, retries).
            # No public API for this in Ray 2.60: without it the pickled settings are used, which also works.
            internal = getattr(tuner, "_local_tuner", None)
            if internal is not None and hasattr(internal, "get_run_config"):
                run_config = internal.get_run_config()
                run_config.callbacks, run_config.failure_config, run_config.verbose = callbacks, failure, 0
            run.say(f"resuming the experiment in {run.tune_dir} (Ray Tune restore)")
            return tuner
    return tune.Tuner(
        trainable,
        param_space={"trial_id": tune.grid_search([t.id for t in run.trials])},
        tune_config=tune.TuneConfig(trial_name_creator=trial_name, trial_dirname_creator=trial_dirname,
                                    reuse_actors=True),
        run_config=tune.RunConfig(name=run.tune_dir.name, storage_path=str(run.tune_dir.parent),
                                  failure_config=failure, checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                  verbose=0, callbacks=callbacks))


def _install_stop_handlers(run: SweepRun) -> dict[int, Any]:
    """Ctrl-C and SIGTERM: ask Tune to stop and save its state (a second Ctrl-C aborts at once).

    A repeated SIGTERM is not an abort: SLURM signals every process of a job (and a job script may forward
    the signal too), Kubernetes may repeat it; all of them follow with SIGKILL when their grace time is up.
    """

    def handler(signum: int, frame: Any) -> None:
        if run.stop_signal is not None:
            if signum == signal.SIGTERM:
                return
            raise KeyboardInterrupt
        run.stop_signal = signum
        run.say(f"\n{signal.Signals(signum).name}: stopping the sweep and saving its state; rerun the same "
                "command to resume (Ctrl-C again to abort at once)")
        tune_handler = signal.getsignal(signal.SIGUSR1)  # Tune's own stop handler, installed during fit()
        if callable(tune_handler):
            tune_handler(signum, frame)
        else:
            raise KeyboardInterrupt

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, handler)
    return previous


def _resource_key(key: str) -> str:
    """A sweep file's resource name as Ray's cluster_resources() spells it (cpu -> CPU; custom names as they are)."""
    return key.upper() if key in ("cpu", "gpu") else key


def _check_shared_storage(run: SweepRun) -> None:
    """On a multi-node cluster, refuse (SweepError) an experiment folder that some node cannot see.

    Every trial writes its results folder on whichever node runs it, so the folder must be on storage
    mounted at the same path on every node. Each live node reads a probe file written here; nodes that
    join later (autoscaling) are not checked here (Ray Tune's own storage check fails their trials).
    """
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2:
        return
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    made = [p for p in [run.exp_dir, *run.exp_dir.parents] if not p.exists()]
    run.exp_dir.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    probe = run.exp_dir / f"{STORAGE_PROBE}{token}"
    write_atomic(probe, token)
    remote_probe = ray.remote(num_cpus=0, max_retries=0)(storage_probe)
    refs = {remote_probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
            .remote(str(probe), token): n for n in nodes}
    blind, unchecked, ready = [], [], []
    try:
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=STORAGE_CHECK_S)
        for ref, node in refs.items():
            where = f"{node.get('NodeName') or node.get('NodeManagerAddress')} (Ray node {node['NodeID'][:8]})"
            try:
                host, sees = ray.get(ref, timeout=1) if ref in ready else (None, None)
            except Exception:  # the node died meanwhile
                host, sees = None, None
            if sees is None:
                unchecked.append(where)
            elif not sees:
                blind.append(f"{host} {where}")
    finally:
        probe.unlink(missing_ok=True)
    for ref in set(refs) - set(ready):  # a node too busy or gone: do not leave the probe queued
        ray.cancel(ref, force=True)
    if blind:
        for p in made:  # leave nothing behind on refusal
            try:
                p.rmdir()
            except OSError:
                break
        raise SweepError([f"--storage: {run.exp_dir} is not visible on {len(blind)} of {len(nodes)} node(s): "
                          f"{', '.join(blind)}; on a multi-node cluster the results must be on shared storage "
                          "mounted at the same path on every node (NFS, EFS, Lustre, a ReadWriteMany volume); "
                          "see cluster/README.md"])
    if unchecked:
        run.say(f"warning: {len(unchecked)} node(s) did not show within {STORAGE_CHECK_S:g} s that they see "
                f"{run.exp_dir}: {', '.join(unchecked)}")


def execute_sweep(run: SweepRun) -> list[TrialOutcome]:
    """Run the selected trials to completion (or until stopped); returns every selected trial's outcome."""
    started_ray = False
    if not ray.is_initialized():
        try:
            # "local": never join some other cluster silently (Ray's default looks for one on this machine)
            ray.init(address=run.address or "local", include_dashboard=False, logging_level=logging.WARNING,
                     logging_config=ray.LoggingConfig(log_level="WARNING"), log_to_driver=True)
        except Exception as e:
            where = f"--address {run.address}: cannot join the Ray cluster" if run.address else "cannot start Ray"
            raise SweepError([f"{where} ({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e) else ''})"]
                             ) from None
        started_ray = True
    cluster = ray.cluster_resources()
    short = [f"{k} {v:g} per trial but the cluster has {cluster.get(_resource_key(k), 0):g}"
             for k, v in run.spec.resources.items() if v > cluster.get(_resource_key(k), 0)]
    if short and run.address is None:  # a local Ray never grows
        if started_ray:
            ray.shutdown()
        raise SweepError([f"resources: {'; '.join(short)}: no trial could ever start; lower them, e.g. "
                          "--set resources.gpu=0 to run on CPUs"])
    if short:  # a cluster may autoscale: say why nothing starts yet
        run.say(f"warning: resources: {'; '.join(short)} now; trials wait until the cluster provides them")
    try:
        _check_shared_storage(run)
    except SweepError:
        if started_ray:
            ray.shutdown()
        raise
    if run.prepare is not None:
        run.prepare()
    custom = {k: v for k, v in run.spec.resources.items() if k not in ("cpu", "gpu")}
    run.say(f"Ray: {'cluster at ' + run.address if run.address else 'local'} with {cluster.get('CPU', 0):g} CPU(s), "
            f"{cluster.get('GPU', 0):g} GPU(s) on {len([n for n in ray.nodes() if n.get('Alive')])} node(s); "
            f"per trial {run.spec.resources['cpu']:g} CPU, {run.spec.resources['gpu']:g} GPU"
            + "".join(f", {v:g} {k}" for k, v in custom.items()))
    ctx = TrialContext({t.id: t.config.to_dict() for t in run.trials}, dict(run.spec.resources),
                       tuple(run.faults), run.epoch_sleep)
    # cpu, gpu (a fraction shares a GPU) and the sweep file's custom resources (e.g. {"a100": 1})
    trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx), dict(run.spec.resources))
    callbacks: list[tune.Callback] = [
        ProgressTable({t.id: t.config.epochs if t.config.action == "train" else 1 for t in run.trials},
                      run.progress_interval, run.out),
        ErrorFiles({t.id: str(t.config.out_dir) for t in run.trials})]
    # Tune's own stop/restore advice ("Tuner.restore(...)") and its warnings about trials that never reported
    # would contradict ours ("rerun the same command"); our summary lists every incomplete trial instead.
    for name in ("ray.tune.tune", "ray.tune.analysis.experiment_analysis"):
        logging.getLogger(name).setLevel(logging.ERROR)
    saved_env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # our handler routes SIGINT and SIGTERM to Tune's stop
    previous = _install_stop_handlers(run)
    try:
        tuner = _tuner(run, trainable, callbacks)
        tuner.fit()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        if saved_env is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = saved_env
        if started_ray:
            ray.shutdown()
    return outcomes(run.exp_dir, run.trials)
