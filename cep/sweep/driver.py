"""Run a sweep's packs with Ray Tune: a fresh Tuner per run, the cluster checks, stop signals.

Ray Tune schedules the packs (cep.sweep.trainable) and retries failed ones
(FailureConfig) while the driver lives; cep.sweep.progress shows what happens.
Tune's state is never restored (its files are pickles): every run gets the packs
that our trial folders say are incomplete, and each trial resumes exactly from its
own checkpoint.pt. After fit() the trial folders decide what is complete.
"""

from __future__ import annotations

import os

# Before Ray Tune is imported: its new console output ignores custom reporters; we print our own table.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
# Tune's default loggers include TensorBoard's, which warns on every report (our "members" list is no scalar);
# nothing here reads TensorBoard files: the CSV and JSON loggers are added explicitly (_tune_loggers).
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")

import logging  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, TextIO  # noqa: E402

import ray  # noqa: E402
from ray import tune  # noqa: E402

from cep.cost import epoch_macs  # noqa: E402
from cep.layout import RAY_LOG, TUNE_DIR, Trial  # noqa: E402
from cep.results import FolderState  # noqa: E402
from cep.safe_files import DiskFull, out_of_space, refuse_links, write_atomic  # noqa: E402
from cep.sweep.faults import test_env  # noqa: E402
from cep.sweep.gpu_preflight import check_gpus  # noqa: E402
from cep.sweep.plan import Pack  # noqa: E402
from cep.sweep.progress import ErrorFiles, ProgressTable, Schedule, trial_dirname, trial_name  # noqa: E402
from cep.sweep.scheduling import scheduler_settings  # noqa: E402
from cep.sweep.spec import SweepError, SweepSpec  # noqa: E402
from cep.sweep.store import STORAGE_PROBE, fresh_tune_dir, outcomes, storage_probe  # noqa: E402
from cep.sweep.trainable import TrialContext, run_pack_trial  # noqa: E402
from cep.tracking.mirror import prepare_trackers  # noqa: E402

STORAGE_CHECK_S = 60.0  # how long the nodes of a cluster get to show that they see the experiment folder


# -------------------------------------------------------------------- driver
@dataclass
class SweepRun:
    """What one `cep-sweep` invocation runs, and where."""

    spec: SweepSpec
    trials: list[Trial]  # the trials of `packs`, resolved (out_dir under exp_dir/trials)
    packs: list[Pack]  # the packs to run (those with an incomplete member); one Ray Tune trial per pack
    exp_dir: Path
    address: str | None = None
    progress_interval: float = 30.0
    verbose: bool = False  # Ray's and Tune's log lines on the terminal too (they always go to <exp_dir>/ray.log)
    out: TextIO | None = None
    stop_signal: int | None = field(default=None, init=False)
    progress: ProgressTable | None = field(default=None, init=False)  # this run's live table (wall times)

    def say(self, text: str) -> None:
        out = self.out or sys.stdout
        out.write(text + "\n")
        out.flush()


def _tuner(run: SweepRun, trainable: Any, callbacks: list[tune.Callback]) -> tune.Tuner:
    """A new Tuner over the run's packs, its files in <exp_dir>/tune/ (emptied first; never restored)."""
    fresh_tune_dir(run.exp_dir)
    return tune.Tuner(
        trainable,
        param_space={"trial_id": tune.grid_search([p.id for p in run.packs])},
        tune_config=tune.TuneConfig(trial_name_creator=trial_name, trial_dirname_creator=trial_dirname,
                                    reuse_actors=True),
        run_config=tune.RunConfig(name=TUNE_DIR, storage_path=str(run.exp_dir),
                                  failure_config=tune.FailureConfig(max_failures=run.spec.max_failures),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                  verbose=0, callbacks=callbacks))


def _tune_loggers() -> list[tune.Callback]:
    """Tune's result.json and progress.csv per Tune trial (its default loggers but TensorBoard's)."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    return [JsonLoggerCallback(), CSVLoggerCallback()]


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
        raise SweepError([f"--storage: {run.exp_dir} is not visible on {len(blind)} of {len(nodes)} node(s): "
                          f"{', '.join(blind)}; on a multi-node cluster the results must be on shared storage "
                          "mounted at the same path on every node (NFS, EFS, Lustre, a ReadWriteMany volume); "
                          "see cluster/README.md"])
    if unchecked:
        run.say(f"warning: {len(unchecked)} node(s) did not show within {STORAGE_CHECK_S:g} s that they see "
                f"{run.exp_dir}: {', '.join(unchecked)}")


def execute_sweep(run: SweepRun) -> dict[str, FolderState]:
    """Run the packs to completion (or until stopped); returns each of their trials' outcome.

    A SweepError (no Ray, a cluster that cannot run the trials) comes before any trial starts."""
    started_ray = False
    switches = test_env()  # test-only (cep.sweep.faults), checked before Ray starts
    try:
        started_ray = _start_ray(run)
        _check_cluster(run)
    except SweepError:
        if started_ray:
            ray.shutdown()
        raise
    prepare_trackers(run.spec.tracking.to_dict(), run.exp_dir.name, run.exp_dir)
    ctx = TrialContext({t.id: t.config.to_dict() for t in run.trials}, dict(run.spec.resources),
                       {p.id: tuple(p.ids) for p in run.packs},
                       scheduler_settings(run.spec.search), switches, run.spec.tracking.to_dict(), run.exp_dir.name)
    # cpu, gpu (a fraction shares a GPU) and the sweep file's custom resources (e.g. {"a100": 1})
    trainable = tune.with_resources(tune.with_parameters(run_pack_trial, ctx=ctx), dict(run.spec.resources))
    run.progress = ProgressTable({t.id: t.config.epochs if t.config.action == "train" else 1 for t in run.trials},
                                 run.progress_interval, run.out,
                                 {p.id: tuple(p.ids) for p in run.packs if len(p.ids) > 1}, _schedule(run))
    callbacks: list[tune.Callback] = [
        run.progress,
        ErrorFiles({p.id: [str(t.config.out_dir) for t in p.members] for p in run.packs}),
        *_tune_loggers()]
    # Tune's own stop/restore advice ("Tuner.restore(...)") and its warnings about trials that never reported
    # would contradict ours ("rerun the same command"); our summary lists every incomplete trial instead.
    for name in ("ray.tune.tune", "ray.tune.analysis.experiment_analysis"):
        logging.getLogger(name).setLevel(logging.ERROR)
    saved_env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # our handler routes SIGINT and SIGTERM to Tune's stop
    previous = _install_stop_handlers(run)
    try:
        _tuner(run, trainable, callbacks).fit()
    except Exception:  # Ray Tune's own files on a full disk fail in many ways (a truncated pickle, ...)
        if out_of_space(run.exp_dir):
            raise DiskFull(run.exp_dir) from None
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if saved_env is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = saved_env
        if started_ray:
            ray.shutdown()
    results = outcomes(run.exp_dir, run.trials)
    if out_of_space(run.exp_dir) and not all(o.complete for o in results.values()):
        raise DiskFull(run.exp_dir)  # whatever each trial's failure looked like, this is the one to fix
    return results


def _schedule(run: SweepRun) -> Schedule:
    """For the sweep's ETA: each pack's cost per round (multiply-adds of its members' epochs, the dry run's
    cost model), and how many packs the cluster runs at once (as its resources stand now)."""
    cluster = ray.cluster_resources()
    fits = [int(cluster.get(_resource_key(k), 0) // v) for k, v in run.spec.resources.items() if v > 0]
    cost = {p.id: epoch_macs(t.config for t in p.members) for p in run.packs}
    return Schedule(cost, max(1, min(fits, default=1)))


def start_ray(run: SweepRun) -> bool:
    """Start (or join) Ray for several execute_sweep calls in a row (an adaptive search's rounds)."""
    return _start_ray(run)


def _start_ray(run: SweepRun) -> bool:
    """Join the run's cluster, or start a local Ray; returns whether this call started it."""
    if ray.is_initialized():
        return False
    _route_ray_logs(run)
    # the trials' own Python logging (in Ray's workers) at WARNING, as the driver's
    job = ray.job_config.JobConfig()
    job.set_py_logging_config(ray.LoggingConfig(log_level="WARNING"))
    try:
        # "local": never join some other cluster silently (Ray's default looks for one on this machine).
        # configure_logging keeps the handlers of _route_ray_logs (a LoggingConfig here would add a console one).
        with _ray_processes_in_their_own_session():
            ray.init(address=run.address or "local", include_dashboard=False, configure_logging=True,
                     logging_level=logging.INFO if run.verbose else logging.WARNING, logging_format=_LOG_FORMAT,
                     job_config=job, log_to_driver=True)
    except Exception as e:
        where = f"--address {run.address}: cannot join the Ray cluster" if run.address else "cannot start Ray"
        raise SweepError([f"{where} ({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e) else ''})"]
                         ) from None
    _route_worker_output(run)
    return True


@contextmanager
def _ray_processes_in_their_own_session() -> Iterator[None]:
    """Start a local Ray's processes (GCS, raylet, and the workers they spawn) in a session of their own.

    A signal to cep-sweep's whole process group (`timeout`, `kill -- -PGID`, a container runtime) then reaches
    the driver alone, which stops Tune and shuts Ray down itself; in the group, Ray's processes died first
    and the driver waited a minute for its GCS. They still die with the driver (Ray's kernel fate sharing).
    Ray 2.60 starts them through services.ConsolePopen; if its internals differ, they start as Ray starts them.
    """
    services = getattr(getattr(ray, "_private", None), "services", None)
    original = getattr(services, "ConsolePopen", None)
    if not (isinstance(original, type) and issubclass(original, subprocess.Popen)):
        yield
        return

    class OwnSession(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("start_new_session", True)
            super().__init__(*args, **kwargs)

    services.ConsolePopen = OwnSession
    try:
        yield
    finally:
        services.ConsolePopen = original


# ------------------------------------------------------------ Ray's own output
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _ray_log_file(run: SweepRun) -> Path:
    run.exp_dir.mkdir(parents=True, exist_ok=True)
    refuse_links(run.exp_dir, run.exp_dir / RAY_LOG)  # appended to: never through a link out of the experiment
    return run.exp_dir / RAY_LOG


class _QuietFileHandler(logging.FileHandler):
    """ray.log's handler: a line that cannot be written (a full disk) is dropped, not printed as a traceback."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        pass


def _route_ray_logs(run: SweepRun) -> None:
    """Ray's and Tune's Python log lines in the driver (e.g. the token-authentication notice of a local
    start) go to <exp_dir>/ray.log; with --verbose also to stderr. The terminal shows only our lines."""
    path = _ray_log_file(run)
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"--- cep-sweep {run.spec.name}, pid {os.getpid()}, {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")
    handlers: list[logging.Handler] = [_QuietFileHandler(path, encoding="utf-8")]
    if run.verbose:
        handlers.append(logging.StreamHandler(sys.stderr))
    ray_logger = logging.getLogger("ray")
    for h in ray_logger.handlers[:]:  # Ray's own console handler, or ours of an earlier run in this process
        ray_logger.removeHandler(h)
        h.close()
    for h in handlers:
        h.setFormatter(logging.Formatter(_LOG_FORMAT))
        ray_logger.addHandler(h)
    ray_logger.propagate = False


def _route_worker_output(run: SweepRun) -> None:
    """What the trials' processes print (Ray forwards it to the driver, log_to_driver) goes to
    <exp_dir>/ray.log instead of the terminal; with --verbose Ray prints it as usual.

    Ray 2.60 has no public switch for where forwarded lines go (log_to_driver=False would lose them to Ray's
    temp folder), so the driver's print handler is swapped; if Ray's internals differ, Ray prints them."""
    if run.verbose:
        return
    try:
        from ray._private.worker import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:
        return
    if not (hasattr(dispatcher, "remove_handler") and hasattr(dispatcher, "add_handler")):
        return
    path = _ray_log_file(run)

    def to_file(data: dict[str, Any]) -> None:
        if data.get("pid") == "autoscaler":  # its status every 5 s (Ray's own session logs keep it)
            return
        where = " ".join(str(x) for x in (data.get("actor_name") or data.get("task_name"),
                                           f"pid={data.get('pid')}", f"ip={data.get('ip')}") if x)
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.writelines(f"({where}) {line}\n" for line in data.get("lines", []))
        except OSError:  # a full disk: the trials' own lines are lost, not the sweep (nor a traceback per line)
            pass

    dispatcher.remove_handler("ray_print_logs")
    dispatcher.add_handler("ray_print_logs", to_file)


def _check_cluster(run: SweepRun) -> None:
    """Refuse (SweepError) a cluster on which no trial could ever start or write; say what it offers."""
    cluster = ray.cluster_resources()
    short = [f"{k} {v:g} per trial but the cluster has {cluster.get(_resource_key(k), 0):g}"
             for k, v in run.spec.resources.items() if v > cluster.get(_resource_key(k), 0)]
    if short and run.address is None:  # a local Ray never grows
        raise SweepError([f"resources: {'; '.join(short)}: no trial could ever start; lower them, e.g. "
                          "--set resources.gpu=0 to run on CPUs"])
    if short:  # a cluster may autoscale: say why nothing starts yet
        run.say(f"warning: resources: {'; '.join(short)} now; trials wait until the cluster provides them")
    # before the storage probe, which creates the experiment folder: a refusal leaves nothing behind
    gpu_problems = check_gpus(ray.nodes(), run.spec.resources.get("gpu", 0), warn=run.say)
    if gpu_problems:
        raise SweepError(gpu_problems)
    _check_shared_storage(run)
    custom = {k: v for k, v in run.spec.resources.items() if k not in ("cpu", "gpu")}
    run.say(f"Ray: {'cluster at ' + run.address if run.address else 'local'} with {cluster.get('CPU', 0):g} CPU(s), "
            f"{cluster.get('GPU', 0):g} GPU(s) on {len([n for n in ray.nodes() if n.get('Alive')])} node(s); "
            f"per trial {run.spec.resources['cpu']:g} CPU, {run.spec.resources['gpu']:g} GPU"
            + "".join(f", {v:g} {k}" for k, v in custom.items())
            + (f" (a pack of trials shares one trial's resources: {len(run.trials)} trials in {len(run.packs)} "
               f"Ray Tune trial{'s' if len(run.packs) > 1 else ''})" if len(run.packs) < len(run.trials) else ""))
