"""Signals to cep-sweep's whole process group (what `timeout`, `kill -- -PGID` and container runtimes send)
end it within seconds with the documented exit code, and the same command resumes the experiment exactly.

cep-sweep starts its own local Ray here (no --address): its Ray processes are the ones a group signal
used to reach first, leaving the driver waiting a minute for its GCS and exiting 1.
"""

from __future__ import annotations

import os
import re
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
base: {size_tab: [10, 16, 784], lr_tab: [0.05, 0.1], train_samples: 100, test_samples: 50, epochs: 6,
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


def ray_processes_of(driver_pid: int) -> list[str]:
    """The live processes of the Ray session a driver started (Ray names the session after the driver's pid)."""
    session = re.compile(rf"session_[0-9_-]+_{driver_pid}\b")
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if session.search(text):
            found.append(text[:80])
    return found


def signal_group_mid_run(cmd: list[str], folder: Path, log: Path, signum: int,
                         group: bool = True) -> tuple[int, float]:
    """Start cep-sweep as the leader of its own process group, signal the whole group (or the driver alone)
    once the trial has trained one more epoch (Ray up, mid-run); its exit code and how long it took to exit.
    Afterwards no process of the Ray it started is left."""
    before = epochs_done(folder)
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=ENV, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait(lambda: epochs_done(folder) > before, 300, "an epoch of the trial", proc, log)
        assert ray_processes_of(proc.pid), "no Ray session named after the driver: the check below sees nothing"
        t0 = time.monotonic()
        os.killpg(proc.pid, signum) if group else proc.send_signal(signum)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            pass
        took = time.monotonic() - t0
        wait(lambda: not ray_processes_of(proc.pid), 30, "the driver's Ray processes to exit")
        return proc.returncode if proc.returncode is not None else -1, took
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
    assert 0 < done < 4

    code, took = signal_group_mid_run(cmd, folder, tmp_path / "int.log", signal.SIGINT)  # Ctrl-C at a terminal
    out = tail(tmp_path / "int.log")
    assert code == 130 and took < STOP_WITHIN_S, (code, took, out)
    assert "resuming the experiment" in out and "Failed to connect to GCS" not in out
    assert done < epochs_done(folder) < 5

    # SIGKILL to the driver alone: Ray's processes, in their own session now, still die with it (fate sharing)
    code, _ = signal_group_mid_run(cmd, folder, tmp_path / "kill.log", signal.SIGKILL, group=False)
    assert code == -signal.SIGKILL

    final = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stdout + final.stderr
    reference = subprocess.run(DRIVER + [str(sweep_file), "--trial", TRIAL, "--local", "--out",
                                         str(tmp_path / "reference")], env=ENV, capture_output=True, text=True,
                               timeout=600)
    assert reference.returncode == 0, reference.stdout + reference.stderr
    assert metrics(folder) == metrics(tmp_path / "reference") and len(metrics(folder)) == 6  # bit for bit
    epochs = [ln.split(":")[0] for ln in log_lines(folder) if ln.startswith("epoch")]
    # no epoch trained twice (a SIGKILL right after an epoch's save may cost that epoch's log line, not more)
    assert len(epochs) == len(set(epochs)) and epochs[-1] == "epoch 6 done"
