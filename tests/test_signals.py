"""Signals to cep-sweep's whole process group (what `timeout`, `kill -- -PGID` and container runtimes send)
end it within seconds with the documented exit code, and the same command resumes the experiment exactly.

cep-sweep starts its own local Ray here (no --address): its Ray processes are the ones a group signal
used to reach first, leaving the driver waiting a minute for its GCS and exiting 1.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from processes import tail, wait
from trial_files import log_lines, metrics

pytestmark = pytest.mark.ray

SWEEP = """\
name: sig
base: {size_tab: [10, 16, 784], lr_tab: [0.05, 0.1], train_samples: 100, test_samples: 50, epochs: 5,
       T: 5, Kmax: 2, dataset: mnist5k, seed: 0}
experiments:
  EP: {rule: ep}
resources: {cpu: 1, gpu: 0}
max_failures: 1
"""
TRIAL = "EP"
DRIVER = [sys.executable, "-c", "from cep.sweep.cli import main; main()"]
STOP_WITHIN_S = 20.0  # "within seconds": Tune stops, Ray shuts down; the old behaviour took ~70 s
ENV = {**os.environ, "CEP_TEST_EPOCH_SLEEP": "1.0", "PYTHONUNBUFFERED": "1"}


def epochs_done(folder: Path) -> int:
    try:
        return len((folder / "metrics.csv").read_text().splitlines()) - 1
    except OSError:
        return 0


def signal_group_mid_run(cmd: list[str], folder: Path, log: Path, signum: int) -> tuple[int, float]:
    """Start cep-sweep as the leader of its own process group, signal the whole group once the trial has
    trained one more epoch (Ray up, mid-run); its exit code and how long it took to exit."""
    before = epochs_done(folder)
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=ENV, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait(lambda: epochs_done(folder) > before, 300, "an epoch of the trial", proc, log)
        t0 = time.monotonic()
        os.killpg(proc.pid, signum)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            pass
        return proc.returncode if proc.returncode is not None else -1, time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


def test_a_group_signal_ends_the_sweep_in_seconds_and_it_resumes_exactly(sweep_file, tmp_path):
    cmd = DRIVER + [str(sweep_file), "--storage", str(tmp_path), "--no-aggregate", "--progress-interval", "1"]
    folder = tmp_path / "sig" / "trials" / TRIAL

    code, took = signal_group_mid_run(cmd, folder, tmp_path / "term.log", signal.SIGTERM)
    out = tail(tmp_path / "term.log")
    assert code == 143 and took < STOP_WITHIN_S, (code, took, out)
    assert "SIGTERM: stopping the sweep" in out and "rerun the same command to resume" in out
    assert "Failed to connect to GCS" not in out
    done = epochs_done(folder)
    assert 0 < done < 5

    code, took = signal_group_mid_run(cmd, folder, tmp_path / "int.log", signal.SIGINT)  # Ctrl-C at a terminal
    out = tail(tmp_path / "int.log")
    assert code == 130 and took < STOP_WITHIN_S, (code, took, out)
    assert "resuming the experiment" in out and "Failed to connect to GCS" not in out
    assert done < epochs_done(folder) < 5

    final = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stdout + final.stderr
    reference = subprocess.run(DRIVER + [str(sweep_file), "--trial", TRIAL, "--local", "--out",
                                         str(tmp_path / "reference")], env=ENV, capture_output=True, text=True,
                               timeout=600)
    assert reference.returncode == 0, reference.stdout + reference.stderr
    assert metrics(folder) == metrics(tmp_path / "reference") and len(metrics(folder)) == 5  # bit for bit
    epochs = [ln.split(":")[0] for ln in log_lines(folder) if ln.startswith("epoch")]
    assert epochs == [f"epoch {k} done" for k in range(1, 6)]  # no epoch trained twice
