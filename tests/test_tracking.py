"""Trackers mirror trial folders: each epoch exactly once per run, across a SIGKILL at the worst moment,
read back with each tracker's own reader (TensorBoard's EventAccumulator, MlflowClient, `wandb leet
inspect`); a tracker that is down costs a trial nothing; the tracking section's bad values are one line each.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from processes import free_port, wait

from cep.config import TrialConfig
from cep.runner import run
from cep.sweep.spec import SweepError, parse_sweep
from cep.tracking.mirror import Mirror
from cep.tracking.settings import Tracking, redact, uri_problems
from cep.tracking.trial_view import view

TINY = dict(size_tab=[10, 16, 784], lr_tab=[0.05, 0.1], train_samples=100, test_samples=50, T=5, Kmax=2,
            dataset="mnist5k", checkpoint=True, seed=0)
EPOCHS = 4


@pytest.fixture(scope="module")
def trial(tmp_path_factory) -> Path:
    """A finished trial folder of EPOCHS epochs (the truth every tracker mirrors)."""
    folder = tmp_path_factory.mktemp("trial") / "t"
    assert run(TrialConfig.from_dict({**TINY, "epochs": EPOCHS}), folder).status == "finished"
    return folder


def copy_of(trial: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "exp" / "trial"
    dest.mkdir(parents=True)
    for name in ("config.yaml", "metrics.csv", "summary.json", "learning_curve.png"):
        (dest / name).write_bytes((trial / name).read_bytes())
    return dest


def truth(folder: Path) -> dict[int, float]:
    return {int(r["epoch"]): r["test_error"] for r in view("trial", folder, "x").rows}


KILL_AT_PUT = """
import os, sys
from cep.tracking import trial_view
from cep.tracking.settings import Tracking
from cep.tracking.mirror import make_trackers
from cep.tracking.trial_view import view
name, folder, upto, kill = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "kill"
put = trial_view.TrackingFile.put
def put_then_die(self, **values):
    if kill and ("logged" in values or (name == "mlflow" and "run_id" in values)):
        os.kill(os.getpid(), 9)   # SIGKILL after the tracker has the epochs, before the folder records it
    put(self, **values)
trial_view.TrackingFile.put = put_then_die
t = Tracking(**__import__("json").loads(sys.argv[5]))
tracker = make_trackers(t, "exp", os.path.dirname(folder))[0]
v = view("trial", folder, "exp")
v.state.metrics = v.state.metrics[:upto]
if upto < 0:
    v.state.metrics = view("trial", folder, "exp").state.metrics
    tracker.close(v)
else:
    tracker.sync(v)
"""


def feed(tmp_path: Path, name: str, folder: Path, tracking: Tracking, upto: int, kill: bool) -> int:
    """A tracker in its own process given the first `upto` epochs (-1: all, then the end), SIGKILLed at the
    worst moment when `kill`."""
    script = tmp_path / "feed.py"
    script.write_text(KILL_AT_PUT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), *sys.path])}
    p = subprocess.run([sys.executable, str(script), name, str(folder), str(upto), "kill" if kill else "-",
                        json.dumps(tracking.to_dict())], env=env, capture_output=True, text=True, timeout=300)
    return p.returncode


def kill_then_resume(tmp_path: Path, name: str, folder: Path, tracking: Tracking) -> None:
    """Epochs 1-2 with a kill before the folder records them; 1-3 with a kill; then all, and the end."""
    assert feed(tmp_path, name, folder, tracking, 2, kill=True) == -9
    assert feed(tmp_path, name, folder, tracking, 3, kill=True) == -9
    assert feed(tmp_path, name, folder, tracking, -1, kill=False) == 0
    assert feed(tmp_path, name, folder, tracking, -1, kill=False) == 0  # run again: nothing new


def test_tensorboard_each_epoch_once_after_kills(trial, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = copy_of(trial, tmp_path)
    kill_then_resume(tmp_path, "tensorboard", folder, Tracking())
    acc = EventAccumulator(str(folder))
    acc.Reload()
    seen = [(s.step, s.value) for s in acc.Scalars("test_error")]
    assert seen == sorted(truth(folder).items())  # every epoch, once, in order, with the folder's numbers
    assert {"train_error", "train_loss", "norm_W0", "norm_W1"} <= set(acc.Tags()["scalars"])


def test_mlflow_one_run_each_epoch_once_after_kills(trial, tmp_path):
    from mlflow.tracking import MlflowClient

    folder = copy_of(trial, tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    kill_then_resume(tmp_path, "mlflow", folder, Tracking(tensorboard=False, mlflow_uri=uri, mlflow_experiment="e"))
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("e").experiment_id])
    assert [r.info.run_name for r in runs] == ["trial"]  # one run, though a kill came right after it was made
    history = client.get_metric_history(runs[0].info.run_id, "test_error")
    assert sorted((m.step, m.value) for m in history) == sorted(truth(folder).items())
    assert runs[0].info.status == "FINISHED" and runs[0].data.tags["cep.status"] == "finished"
    assert runs[0].data.params["lr_tab"] == "[0.05, 0.1]"
    assert {a.path for a in client.list_artifacts(runs[0].info.run_id)} == {
        "config.yaml", "metrics.csv", "summary.json", "learning_curve.png"}


def wandb_history(folder: Path) -> list[tuple[int, float]]:
    """(step, test_error) of every history record in the offline runs under folder/wandb, via wandb's reader."""
    rows = []
    for run_dir in sorted((folder / "wandb").glob("offline-run-*")):
        if not any(run_dir.glob("run-*.wandb")):  # killed before W&B wrote its log: it recorded nothing
            continue
        out = subprocess.run([str(Path(sys.executable).parent / "wandb"), "leet", "inspect", "--json", str(run_dir)],
                             capture_output=True, text=True, check=True, timeout=120).stdout
        for line in out.splitlines():
            rec = json.loads(line)
            if rec.get("type") == "history":
                rows.append((rec["history"]["item"]["_step"], rec["history"]["item"]["test_error"]))
    return rows


def test_wandb_offline_each_epoch_once_after_kills(trial, tmp_path):
    folder = copy_of(trial, tmp_path)
    tracking = Tracking(tensorboard=False, wandb_project="cep", wandb_dir=str(tmp_path / "w"))
    kill_then_resume(tmp_path, "wandb", folder, tracking)
    rows = wandb_history(tmp_path / "w")
    assert sorted(rows) == sorted(truth(folder).items())  # across the run's offline folders: each epoch once
    run_ids = {p.name.rsplit("-", 1)[1] for p in (tmp_path / "w" / "wandb").glob("offline-run-*")}
    assert len(run_ids) == 1  # one run, resumed by its stable id


def test_a_tracker_that_is_down_costs_a_round_nothing(trial, tmp_path, capsys):
    folder = copy_of(trial, tmp_path)
    down = f"http://user:secret@127.0.0.1:{free_port()}"
    mirror = Mirror(Tracking(tensorboard=False, mlflow_uri=down, timeout=3), "exp", tmp_path / "exp")
    t0 = time.monotonic()
    for _ in range(EPOCHS):
        mirror.round("trial", folder)
    assert time.monotonic() - t0 < 0.5  # rounds never wait for a tracker
    t0 = time.monotonic()
    mirror.close("trial", folder)
    assert time.monotonic() - t0 < 3 + 1  # the end waits at most the timeout
    err = capsys.readouterr().err
    assert err.count("warning: mlflow") == 1 and "training goes on" in err
    assert "secret" not in err and "secret" not in (folder / "trial.log").read_text()
    assert "secret" not in "".join(p.read_text() for p in folder.glob("tracking-*.json"))


def test_tracking_section_bad_values_one_line_each():
    data = {"name": "s", "base": {"epochs": 1}, "tracking": {
        "tensorboard": "yes", "mlflow": {"uri": 3, "experment": "x"}, "wandb": {"project": "a b", "mode": "live"},
        "comet": True, "timeout": -1}}
    with pytest.raises(SweepError) as e:
        parse_sweep(data)
    assert e.value.problems == [
        "tracking.tensorboard: got 'yes'; true or false",
        "tracking.mlflow.uri: got 3; a non-empty string",
        "tracking.mlflow.experment: unknown key; known: uri, experiment",
        "tracking.wandb.project: got 'a b'; letters, digits and . _ + -, at most 128 characters",
        "tracking.wandb.mode: got 'live'; offline (files only, `wandb sync` later) or online",
        "tracking.comet: unknown tracker; known keys: tensorboard, mlflow, wandb, timeout",
        "tracking.timeout: got -1; seconds a tracker may take per round, e.g. 10 (at most 600)"]
    ok = parse_sweep({**data, "tracking": {"mlflow": {"uri": "sqlite:///m.db"}, "wandb": "cep"}})
    t = ok.tracking
    assert (t.mlflow_uri, t.wandb_project, t.tensorboard) == ("sqlite:///m.db", "cep", True)


def test_a_missing_library_names_its_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "mlflow" else real(n, *a))
    with pytest.raises(SweepError) as e:
        parse_sweep({"name": "s", "base": {"epochs": 1}, "tracking": {"mlflow": "sqlite:///m.db"}})
    assert e.value.problems == ['tracking.mlflow: the mlflow library is not installed; pip install -e ".[mlflow]"']


def test_a_tracker_file_reached_through_a_link_into_the_experiment_is_refused(tmp_path):
    exp = tmp_path / "exp"
    (exp / "real").mkdir(parents=True)
    (exp / "link").symlink_to(exp / "real")
    outside = tmp_path / "outside"
    outside.symlink_to(exp / "real")
    for uri in (f"sqlite:///{exp}/link/m.db", f"sqlite:///{outside}/m.db"):
        problems = uri_problems(Tracking(mlflow_uri=uri), exp)
        assert len(problems) == 1 and "symbolic link" in problems[0], uri
    assert uri_problems(Tracking(mlflow_uri=f"sqlite:///{exp}/real/m.db"), exp) == []
    assert redact("http://u:p@host:5000/x") == "http://***@host:5000/x"
    assert redact("GET host/x failed (pass=hunter22)", "http://bob:hunter22@host") == "GET host/x failed (pass=***)"


def test_cep_train_writes_tensorboard_by_default_and_refuses_bad_options(tmp_path):
    from click.testing import CliRunner

    from cep.cli import cli

    out = tmp_path / "r"
    args = ["train", "--sizes", "10,16,784", "--lrs", "0.05,0.1", "--epochs", "2", "--dataset", "mnist5k",
            "--train-samples", "100", "--test-samples", "50", "--nudged-steps", "2", "--out", str(out), "--quiet"]
    result = CliRunner().invoke(cli, args, standalone_mode=False)
    assert result.exception is None, result.output
    assert len(list(out.glob("events.out.tfevents.*"))) == 1
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    bad = subprocess.run([str(Path(sys.executable).parent / "cep"), "train", "--mlflow", "", "--wandb", "a b"],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and bad.stderr.splitlines() == [
        "error: --mlflow: got ''; a non-empty string",
        "error: --wandb: got 'a b'; letters, digits and . _ + -, at most 128 characters"], bad.stderr


def experiment_of_copies(trial: Path, tmp_path: Path, ids: list[str]) -> Path:
    """An experiment folder (sweep.json, trials/<id>/) whose trials are copies of one finished trial."""
    exp = tmp_path / "exp"
    entries = []
    for tid in ids:
        dest = exp / "trials" / tid
        dest.mkdir(parents=True)
        for name in ("config.yaml", "metrics.csv", "summary.json", "learning_curve.png"):
            (dest / name).write_bytes((trial / name).read_bytes())
        config = json.loads((dest / "summary.json").read_text())["config"]
        entries.append({"id": tid, "experiment": tid.split("/")[0], "grid": {"seed": int(tid[-1])}, "config": config})
    (exp / "sweep.json").write_text(json.dumps({"name": "exp", "trials": entries}))
    return exp


def test_track_after_the_fact_is_idempotent(trial, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from cep.sweep.cli import main

    ids = ["EP/seed=0", "EP/seed=1"]
    exp = experiment_of_copies(trial, tmp_path, ids)
    uri = f"sqlite:///{tmp_path}/m.db"
    for _ in range(2):
        with pytest.raises(SystemExit) as e:
            main(["track", str(exp), "--mlflow", uri, "--tensorboard"])
        out = capsys.readouterr().out
        assert e.value.code == 0 and "mlflow: 2 trial(s) mirrored" in out and "tensorboard: 2 trial(s)" in out
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("exp").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ids
    for r in runs:
        assert sorted((m.step, m.value) for m in client.get_metric_history(r.info.run_id, "test_error")) == sorted(
            truth(exp / "trials" / r.info.run_name).items())
        assert r.data.tags["seed"] == r.info.run_name[-1]
    with pytest.raises(SystemExit) as e:
        main(["track", str(exp)])
    assert e.value.code == 2 and "no tracker given" in capsys.readouterr().err


def test_load_gives_aggregates_numbers(trial, tmp_path):
    import csv

    import cep
    from cep.aggregate.summary import aggregate_experiment

    exp = experiment_of_copies(trial, tmp_path, ["EP/seed=0", "EP/seed=1"])
    aggregate_experiment(exp, plots=False)
    frames = cep.load(exp)
    with open(exp / "summary" / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(frames.trials["id"]) == [r["id"] for r in rows]
    for col in ("final_test_error", "best_test_error", "final_train_error", "final_test_loss", "wall_seconds"):
        assert list(frames.trials[col]) == [float(r[col]) for r in rows], col
    assert list(frames.epochs["test_error"]) == [v for _ in rows for v in truth(trial).values()]
    with open(exp / "summary" / "groups.csv", newline="") as f:
        groups = list(csv.DictReader(f))
    assert list(frames.groups["test_error_mean"]) == [float(g["test_error_mean"]) for g in groups]


def start_server(tmp_path: Path, port: int) -> subprocess.Popen:
    log = open(tmp_path / f"mlflow-{port}.log", "a")  # noqa: SIM115 (kept open for the server's life)
    p = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port",
                          str(port), "--backend-store-uri", f"sqlite:///{tmp_path}/mlflow.db", "--workers", "1",
                          "--artifacts-destination", str(tmp_path / "artifacts")],
                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def up() -> bool:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200
        except OSError:
            return False

    wait(up, 120, "the MLflow server", p, tmp_path / f"mlflow-{port}.log")
    return p


def stop(p: subprocess.Popen) -> None:
    os.killpg(p.pid, signal.SIGKILL)  # the server and its uvicorn workers, by the group of the pid we started
    p.wait(30)


def test_cep_train_against_a_real_server_killed_and_restarted(tmp_path):
    """`cep train --checkpoint --mlflow http://...`: the server dies mid-run, the run is SIGKILLed while it is
    down, both come back, the run resumes: one run, every epoch once, as the folder says."""
    from mlflow.tracking import MlflowClient

    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    out = tmp_path / "run"
    cmd = [str(Path(sys.executable).parent / "cep"), "train", "--sizes", "10,16,784", "--lrs", "0.05,0.1",
           "--epochs", "12", "--dataset", "mnist5k", "--train-samples", "1500", "--test-samples", "100",
           "--nudged-steps", "2", "--checkpoint", "--out", str(out), "--quiet", "--mlflow", uri,
           "--mlflow-experiment", "live"]
    epochs = lambda: len(view("run", out, "x").rows) if (out / "metrics.csv").exists() else 0  # noqa: E731
    server = start_server(tmp_path, port)
    try:
        log = tmp_path / "train.log"
        with open(log, "w") as f:
            p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
        try:
            wait(lambda: epochs() >= 2, 300, "two epochs", p, log)
            stop(server)
            at = epochs()
            wait(lambda: epochs() >= at + 2, 300, "epochs with the server down", p, log)
            p.send_signal(signal.SIGKILL)
        finally:
            p.kill()
            p.wait(30)
        assert epochs() < 12 and "warning: mlflow" in log.read_text()
        server = start_server(tmp_path, port)
        assert subprocess.run(cmd, capture_output=True, timeout=600).returncode == 0
        client = MlflowClient(uri)
        runs = client.search_runs([client.get_experiment_by_name("live").experiment_id])
        assert [r.info.run_name for r in runs] == ["run"] and runs[0].info.status == "FINISHED"
        got = sorted((m.step, m.value) for m in client.get_metric_history(runs[0].info.run_id, "test_error"))
        assert got == sorted(truth(out).items()) and len(got) == 12
    finally:
        stop(server)
