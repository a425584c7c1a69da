"""A tracked sweep on a local Ray cluster against a real MLflow server on 127.0.0.1: the server killed and
restarted during the sweep (down while the driver is SIGKILLed mid-round, up again when it resumes); then
every trial is one run with every epoch exactly once, in MLflow, TensorBoard and W&B (offline).
`cep-sweep track` mirrors the same experiment after the fact, idempotently, and `cep.load` gives aggregate's numbers."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from processes import free_port, trials_stopped, wait
from test_tracking import start_server, stop, wandb_history
from trial_files import metrics, summary

import cep

pytestmark = pytest.mark.ray

SWEEP = """\
name: tracked
description: tiny nets, tracked
base: {size_tab: [10, 16, 784], lr_tab: [0.05, 0.1], train_samples: 100, test_samples: 50, epochs: 5,
       T: 5, Kmax: 2, dataset: mnist5k}
experiments:
  EP: {rule: ep}
  C-VF: {rule: vf, continual: true, lr_tab: [0.01, 0.02], randbeta: 0.5, grid: {angle: [0, 90]}}
grid:
  seed: [0]
resources: {cpu: 1, gpu: 0}
pack: 1
tracking: {tensorboard: true, mlflow: {uri: URI, experiment: tracked}, wandb: {project: cep, mode: offline},
           timeout: 5}
"""
IDS = ["EP/seed=0", "C-VF/angle=0/seed=0", "C-VF/angle=90/seed=0"]
EPOCHS = 5
SLOW = 300
DRIVER = [sys.executable, "-c", "from cep.sweep.cli import main; main()"]


def test_tracked_sweep_killed_and_resumed(ray_address, tmp_path):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    sweep = tmp_path / "tracked.yaml"
    sweep.write_text(SWEEP.replace("URI", uri))
    exp = tmp_path / "tracked"
    cmd = DRIVER + [str(sweep), "--storage", str(tmp_path), "--address", ray_address, "--progress-interval", "1"]
    env = {**os.environ, "CEP_TEST_EPOCH_SLEEP": "2.0", "PYTHONUNBUFFERED": "1"}
    done = lambda: {t: summary(exp / "trials" / t).get("epochs_done", 0) for t in IDS}  # noqa: E731
    server = start_server(tmp_path, port)
    log1 = tmp_path / "run1.log"
    try:
        with open(log1, "w") as out:
            p1 = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait(lambda: max(done().values()) >= 1, SLOW, "a first epoch", p1, log1)
            stop(server)  # the server goes down mid-sweep: the trials go on
            at = dict(done())
            wait(lambda: any(done()[t] > at[t] for t in IDS), SLOW, "epochs with the server down", p1, log1)
            p1.send_signal(signal.SIGKILL)  # and the driver is killed mid-round
        finally:
            p1.kill()
            p1.wait(30)
        wait(lambda: trials_stopped(exp), SLOW, "the killed driver's trials to stop")
        server = start_server(tmp_path, port)  # back for the resumed sweep, which catches up
        assert min(done().values()) < EPOCHS
        p2 = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=2 * SLOW)
        assert p2.returncode == 0, p2.stdout
        client = MlflowClient(uri)
        check_mlflow(client, exp)
    finally:
        stop(server)
    logs = "".join((exp / "trials" / t / "trial.log").read_text() for t in IDS)
    assert "warning: mlflow" in logs and "training goes on" in logs  # the server was down: said, not fatal
    for t in IDS:
        folder = exp / "trials" / t
        truth = [(int(r["epoch"]), float(r["test_error"])) for r in metrics(folder)]
        acc = EventAccumulator(str(folder))
        acc.Reload()
        assert [(s.step, s.value) for s in acc.Scalars("test_error")] == truth, t
    history = wandb_history(exp)
    assert sorted(history) == sorted((int(r["epoch"]), float(r["test_error"])) for t in IDS
                                     for r in metrics(exp / "trials" / t))
    track_after_the_fact(exp, tmp_path)
    frames_equal_trials_csv(exp)



def check_mlflow(client, exp: Path) -> None:
    """One run per trial, named by its id, every epoch once with the folder's numbers, finished, grid tags."""
    runs = client.search_runs([client.get_experiment_by_name(exp.name).experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(IDS)
    for r in runs:
        folder = exp / "trials" / r.info.run_name
        truth = sorted((int(m["epoch"]), float(m["test_error"])) for m in metrics(folder))
        got = sorted((m.step, m.value) for m in client.get_metric_history(r.info.run_id, "test_error"))
        assert got == truth, r.info.run_name
        assert r.info.status == "FINISHED" and r.data.tags["seed"] == "0"
        assert json.loads((folder / "tracking-mlflow.json").read_text())["run_id"] == r.info.run_id


def track_after_the_fact(exp: Path, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/after.db"
    for _ in range(2):  # idempotent: the second pass sends nothing new
        p = subprocess.run(DRIVER + ["track", str(exp), "--mlflow", uri], capture_output=True, text=True, timeout=SLOW)
        assert p.returncode == 0, p.stderr
        assert "mlflow: 3 trial(s) mirrored" in p.stdout
    check_mlflow(MlflowClient(uri), exp)


def frames_equal_trials_csv(exp: Path) -> None:
    frames = cep.load(exp)
    with open(exp / "summary" / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(frames.trials["id"]) == [r["id"] for r in rows]
    for col in ("final_test_error", "best_test_error", "final_train_error", "wall_seconds"):
        assert list(frames.trials[col]) == [float(r[col]) for r in rows], col
    assert len(frames.epochs) == EPOCHS * len(IDS)
    assert set(frames.groups["row"]) == {"EP", "C-VF angle=0", "C-VF angle=90"}
