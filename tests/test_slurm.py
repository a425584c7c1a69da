"""cluster/slurm/cep-sweep.sbatch under a real one-node Slurm (cluster/slurm/local-slurm.sh): run, requeue, resume.

The Slurm is the one named by $SLURM_CONF, or local-slurm.sh's default one, when `sinfo` answers there
(`.ci/run` starts one), else this session starts one with cluster/slurm/local-slurm.sh (root; it installs no
packages here) in its own folder and stops it at the end; where none can run every test is skipped with the
reason. Jobs run this checkout's `cep`
(PYTHONPATH) in this interpreter's virtual environment (CEP_VENV), each with its results in its own folder,
and are compared bit for bit with one uninterrupted local `cep-sweep` run of the same sweep.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from processes import pids_matching, wait
from trial_files import log_lines, metrics, summary

pytestmark = [pytest.mark.slurm,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Slurm's daemons run on Linux")]

ROOT = Path(__file__).resolve().parents[1]
SBATCH = ROOT / "cluster" / "slurm" / "cep-sweep.sbatch"
LOCAL_SLURM = ROOT / "cluster" / "slurm" / "local-slurm.sh"
SWEEP_CLI = [sys.executable, "-c", "from cep.sweep.cli import main; main()"]
SWEEP = """\
name: slu
description: tiny float64 nets under a real one-node Slurm
base: {size_tab: [10, 16, 784], lr_tab: [0.05, 0.1], train_samples: 200, test_samples: 100, epochs: 3,
       T: 10, Kmax: 4, dataset: mnist5k, dtype: float64}
experiments:
  EP: {rule: ep}
grid:
  seed: [0, 1]
resources: {cpu: 1, gpu: 0}
max_failures: 1
pack: 1
"""
IDS = ["EP/seed=0", "EP/seed=1"]
EPOCHS = 3
NODE = ["--nodes=1", "--cpus-per-task=2", "--time=10"]  # this machine's one node, instead of the recipe's 2 x 8
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
SLEEP = {"CEP_TEST_EPOCH_SLEEP": "1.5"}  # slower epochs: time to interrupt a job after its first epoch


# ------------------------------------------------------------------ the cluster
class Slurm:
    """Client side of a running Slurm: the environment its commands and jobs get, and job queries."""

    def __init__(self, conf: str):
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RAY_", "CEP_"))}
        self.env.update(SLURM_CONF=conf, CEP_VENV=sys.prefix, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        self.jobs: list[str] = []  # submitted by the tests: cancelled after each test (a failed one leaves some)

    def run(self, *cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        p = subprocess.run(cmd, env={**self.env, **kw.pop("env", {})}, capture_output=True, text=True,
                           timeout=60, **kw)
        assert p.returncode == 0 or not check, f"{shlex.join(cmd)}: exit {p.returncode}\n{p.stdout}{p.stderr}"
        return p

    def job(self, job: str) -> dict[str, str]:
        out = self.run("scontrol", "show", "job", "-o", job, check=False).stdout
        return dict(re.findall(r"(\w+)=(\S*)", out))


def _alive(conf: str | None) -> bool:
    try:
        return bool(conf) and Path(conf).is_file() and subprocess.run(
            ["sinfo", "-h"], env={**os.environ, "SLURM_CONF": conf}, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def slurm():
    """The Slurm of $SLURM_CONF or of local-slurm.sh's folder if one answers, else one started (and stopped) here."""
    mine = subprocess.run(["bash", str(LOCAL_SLURM), "env"], capture_output=True, text=True).stdout
    for conf in (os.environ.get("SLURM_CONF"), mine.strip().removeprefix("export SLURM_CONF=")):
        if _alive(conf):
            yield Slurm(conf)
            return
    env = {**os.environ, "CEP_SLURM_DIR": f"/tmp/cep-slurm-test-{os.getpid()}", "CEP_SLURM_INSTALL": "0"}
    try:
        p = subprocess.run(["bash", str(LOCAL_SLURM), "start"], env=env, capture_output=True, text=True,
                           timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"no local Slurm: {e}")
    try:
        m = re.search(r"^export SLURM_CONF=(\S+)$", p.stdout, re.M)
        if p.returncode != 0 or not m:
            pytest.skip(f"no local Slurm: {(p.stderr.strip().splitlines() or ['local-slurm.sh failed'])[-1]}")
        yield Slurm(m.group(1))
    finally:
        subprocess.run(["bash", str(LOCAL_SLURM), "stop"], env=env, capture_output=True, timeout=120)


@pytest.fixture(autouse=True)
def _jobs_cancelled(slurm):
    yield
    if slurm.jobs:
        slurm.run("scancel", *slurm.jobs, check=False)
        slurm.jobs.clear()


@pytest.fixture(scope="session")
def sweep_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("slurm-sweep") / "sweep.yaml"
    path.write_text(SWEEP)
    return path


class Reference:
    """The sweep run once locally with `cep-sweep` (its own local Ray), uninterrupted, while the first job runs."""

    def __init__(self, env: dict[str, str], sweep: Path, storage: Path):
        self.exp, self.log = storage / "slu", storage / "cep-sweep.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(SWEEP_CLI + [str(sweep), "--storage", str(storage), "--no-aggregate"],
                                         env=env, stdout=log, stderr=subprocess.STDOUT)

    def folder(self) -> Path:
        """Its experiment folder, once the run has finished."""
        code = self.proc.wait(300)
        assert code == 0, f"the local reference run exited {code}:\n{self.log.read_text()}"
        return self.exp


@pytest.fixture(scope="session")
def reference(slurm, sweep_path, tmp_path_factory):
    ref = Reference(slurm.env, sweep_path, tmp_path_factory.mktemp("slurm-reference"))
    yield ref
    if ref.proc.poll() is None:  # a test failed before waiting for it: SIGTERM, so that it stops its Ray
        ref.proc.terminate()
        try:
            ref.proc.wait(60)
        except subprocess.TimeoutExpired:
            ref.proc.kill()


# ------------------------------------------------------------------ helpers
class Job:
    """One submission of the recipe from its own folder (default storage: <folder>/results)."""

    def __init__(self, slurm: Slurm, folder: Path, job: str, t0: float):
        self.slurm, self.folder, self.id, self.t0 = slurm, folder, job, t0
        self.exp = folder / "results" / "slu"

    @property
    def out(self) -> str:
        f = self.folder / f"cep-sweep-{self.id}.out"
        return f.read_text(errors="replace") if f.exists() else "(no output file yet)"

    def state(self) -> dict[str, str]:
        return self.slurm.job(self.id)

    def wait_epoch(self, n: int = 1, timeout: float = 120) -> float:
        """Seconds since submitting until some trial has finished epoch n."""
        wait(lambda: any(summary(self.exp / "trials" / t).get("epochs_done", 0) >= n for t in IDS)
             or self.state().get("JobState") in FINAL, timeout, f"epoch {n} of job {self.id}:\n{self.out}")
        assert self.state().get("JobState") not in FINAL, f"job {self.id} ended before epoch {n}:\n{self.out}"
        return time.monotonic() - self.t0

    def wait_end(self, restarts: int = 0, timeout: float = 180) -> dict[str, str]:
        """The job's final state once it has run `restarts` requeued times and ended."""
        def done():
            s = self.state()
            return s.get("JobState") in FINAL and int(s.get("Restarts", 0)) >= restarts
        wait(done, timeout, f"the end of job {self.id} (restart {restarts}): {self.state()}\n{self.out}")
        return self.state()

    def assert_equals(self, reference: Reference) -> None:
        ref = reference.folder()
        for tid in IDS:
            folder = self.exp / "trials" / tid
            assert metrics(folder) == metrics(ref / "trials" / tid), f"{tid}\n{self.out}"
            epochs = [ln.split(":")[0] for ln in log_lines(folder) if ln.startswith("epoch")]
            assert epochs == [f"epoch {e} done" for e in range(1, EPOCHS + 1)], f"{tid}: {epochs}\n{self.out}"

    def assert_ray_gone(self, cleaned: bool = False) -> None:
        """No process of the job's Ray is left; cleaned: the job (which ended by itself) removed Ray's folder."""
        wait(lambda: not pids_matching(f"/tmp/ray-{self.id}"), 30, f"job {self.id}'s Ray to end:\n{self.out}")
        assert not cleaned or not Path(f"/tmp/ray-{self.id}").exists(), f"/tmp/ray-{self.id} left:\n{self.out}"


def submit(slurm: Slurm, folder: Path, sweep: Path, *sbatch_opts: str, env: dict | None = None,
           sweep_opts: tuple[str, ...] = ("--no-aggregate",)) -> Job:
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    p = slurm.run("sbatch", "--parsable", *sbatch_opts, str(SBATCH), str(sweep), *sweep_opts, cwd=folder,
                  env=env or {})
    slurm.jobs.append(p.stdout.strip().split(";")[0])
    return Job(slurm, folder, slurm.jobs[-1], t0)


def readme_cpu_command() -> list[str]:
    """The sbatch command that cluster/README.md gives for a cluster without GPUs (the line with --gpus-per-node=0)."""
    lines = [ln for ln in (ROOT / "cluster" / "README.md").read_text().splitlines()
             if ln.startswith("sbatch ") and "--gpus-per-node=0" in ln]
    assert len(lines) == 1, lines
    return shlex.split(lines[0].split("#")[0])


# ------------------------------------------------------------------ tests
def test_cpu_only_command_of_the_readme_is_accepted_and_the_gpu_default_is_not(slurm, tmp_path):
    """A GPU-less cluster refuses the recipe's --gpus-per-node=1 at submit time; the README's command passes."""
    cmd = readme_cpu_command()
    assert cmd[:2] == ["sbatch", "--gpus-per-node=0"] and cmd[2] == "cluster/slurm/cep-sweep.sbatch", cmd
    refused = slurm.run("sbatch", "--test-only", *NODE, str(SBATCH), "sweep.yaml", check=False, cwd=tmp_path)
    assert refused.returncode != 0 and "Invalid generic resource (gres) specification" in refused.stderr
    slurm.run(cmd[0], "--test-only", *NODE, *cmd[1:], cwd=ROOT)


def test_recipe_runs_the_sweep_and_equals_a_local_run(slurm, reference, sweep_path, tmp_path):
    """The README's CPU-only command (on this machine's one node): exit 0, every trial bit for bit the local run's."""
    cmd = readme_cpu_command()
    sbatch_opts = [o for o in cmd[1:cmd.index("cluster/slurm/cep-sweep.sbatch")]]
    sweep_opts = cmd[cmd.index("cluster/slurm/cep-sweep.sbatch") + 2:]
    job = submit(slurm, tmp_path, sweep_path, *NODE, *sbatch_opts, sweep_opts=(*sweep_opts, "--no-aggregate"))
    first = job.wait_epoch()
    s = job.wait_end()
    wall = time.monotonic() - job.t0
    assert (s["JobState"], s["ExitCode"]) == ("COMPLETED", "0:0"), f"{s}\n{job.out}"
    assert "2 trial(s): 2 finished, 0 errored" in job.out
    job.assert_equals(reference)
    job.assert_ray_gone(cleaned=True)
    print(f"\nslurm: submit to first epoch {first:.1f} s; whole job {wall:.1f} s")


def test_time_limit_signal_saves_requeues_and_resumes(slurm, reference, sweep_path, tmp_path):
    """SIGUSR1 to the batch shell (what --signal=B:USR1@N sends near --time): save, requeue, resume, complete."""
    job = submit(slurm, tmp_path, sweep_path, *NODE, "--gpus-per-node=0", "--signal=B:USR1@30", env=SLEEP)
    job.wait_epoch()
    slurm.run("scancel", "--signal=USR1", "--batch", job.id)
    t_signal = time.monotonic()
    wait(lambda: "(restart 1)" in job.out, 180, f"the requeued run of job {job.id}:\n{job.out}")
    requeue_to_restart = time.monotonic() - t_signal
    s = job.wait_end(restarts=1)
    assert (s["JobState"], s["ExitCode"], s["Restarts"]) == ("COMPLETED", "0:0", "1"), f"{s}\n{job.out}"
    out = job.out
    assert "time limit near (SIGUSR1)" in out and f"requeueing job {job.id}" in out, out
    assert "SIGTERM: stopping the sweep and saving its state" in out, out  # cep-sweep saved
    assert "resuming the experiment" in out, out
    job.assert_equals(reference)
    job.assert_ray_gone(cleaned=True)
    print(f"\nslurm: USR1 to the requeued run's start {requeue_to_restart:.1f} s")


def test_time_limit_signal_while_ray_starts_and_max_requeues_stops_the_loop(slurm, sweep_path, tmp_path):
    """SIGUSR1 while Ray starts is not lost (the sweep is not started); CEP_MAX_REQUEUES=0: not requeued."""
    job = submit(slurm, tmp_path, sweep_path, *NODE, "--gpus-per-node=0", env={"CEP_MAX_REQUEUES": "0"})
    wait(lambda: "(restart 0)" in job.out or job.state().get("JobState") in FINAL, 120, f"job {job.id} to start")
    slurm.run("scancel", "--signal=USR1", "--batch", job.id)
    s = job.wait_end()
    assert (s["JobState"], s["Restarts"]) == ("FAILED", "0"), f"{s}\n{job.out}"
    assert "signalled while Ray started: the sweep was not started" in job.out, job.out
    assert "not requeueing: restarted 0 times already (CEP_MAX_REQUEUES=0)" in job.out, job.out
    assert f"requeueing job {job.id}" not in job.out and not job.exp.exists(), job.out
    job.assert_ray_gone(cleaned=True)


def test_scancel_then_submitting_again_resumes_exactly(slurm, reference, sweep_path, tmp_path):
    """scancel (SIGTERM to every process of the job, Ray's too) mid-sweep; `cep-sweep status` while it runs."""
    job = submit(slurm, tmp_path, sweep_path, *NODE, "--gpus-per-node=0", env=SLEEP)
    job.wait_epoch()
    status = slurm.run(*SWEEP_CLI, "status", str(job.exp))
    assert re.search(r"^EP/seed=\d\s+running", status.stdout, re.M), status.stdout
    slurm.run("scancel", job.id)
    s = job.wait_end()
    assert s["JobState"] == "CANCELLED", f"{s}\n{job.out}"
    job.assert_ray_gone()
    assert any(summary(job.exp / "trials" / t).get("status") != "finished" for t in IDS), job.out
    again = submit(slurm, tmp_path, sweep_path, *NODE, "--gpus-per-node=0")
    s = again.wait_end()
    assert (s["JobState"], s["ExitCode"]) == ("COMPLETED", "0:0"), f"{s}\n{again.out}"
    assert "resuming the experiment" in again.out, again.out
    again.assert_equals(reference)


def test_scontrol_requeue_resumes_exactly(slurm, reference, sweep_path, tmp_path):
    """Slurm's own requeue of a running job (as on preemption with PreemptMode=REQUEUE)."""
    job = submit(slurm, tmp_path, sweep_path, *NODE, "--gpus-per-node=0", env=SLEEP)
    job.wait_epoch()
    slurm.run("scontrol", "requeue", job.id)
    s = job.wait_end(restarts=1)
    assert (s["JobState"], s["ExitCode"], s["Restarts"]) == ("COMPLETED", "0:0", "1"), f"{s}\n{job.out}"
    assert "(restart 1)" in job.out and "resuming the experiment" in job.out, job.out
    job.assert_equals(reference)
    job.assert_ray_gone()


def test_two_jobs_on_the_node_at_once_use_their_own_ports(slurm, reference, sweep_path, tmp_path):
    """Two jobs of one CPU each on the one node at the same time: separate Ray port blocks, both complete."""
    one = [o.replace("--cpus-per-task=2", "--cpus-per-task=1") for o in NODE]
    a = submit(slurm, tmp_path / "a", sweep_path, *one, "--gpus-per-node=0", env={"CEP_TEST_EPOCH_SLEEP": "1"})
    b = submit(slurm, tmp_path / "b", sweep_path, *one, "--gpus-per-node=0", env={"CEP_TEST_EPOCH_SLEEP": "1"})
    wait(lambda: a.state().get("JobState") == b.state().get("JobState") == "RUNNING", 60,
         f"both jobs running: {a.state()} {b.state()}")
    for job in (a, b):
        s = job.wait_end()
        assert (s["JobState"], s["ExitCode"]) == ("COMPLETED", "0:0"), f"{s}\n{job.out}"
        job.assert_equals(reference)
    ports = [re.search(r"Ray ports (\d+)-(\d+)", j.out).groups() for j in (a, b)]
    assert ports[0] != ports[1], ports


def test_local_slurm_script_never_touches_a_slurm_it_did_not_start(slurm, tmp_path):
    """A second local-slurm.sh (another folder) refuses while this Slurm runs; `stop` leaves foreign folders be."""
    if not subprocess.run(["pgrep", "-x", "slurmctld"], capture_output=True).stdout:
        pytest.skip("no slurmctld on this machine (the Slurm of $SLURM_CONF is elsewhere)")
    other = tmp_path / "other"
    p = subprocess.run(["bash", str(LOCAL_SLURM), "start"], env={**os.environ, "CEP_SLURM_DIR": str(other)},
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and not other.exists(), p.stderr
    assert re.fullmatch(r"error: slurm: a slurmctld that this script did not start is running \(pid \d+( \d+)*\); "
                        r"not touching it: .*\n", p.stderr), p.stderr
    (tmp_path / "keep.txt").write_text("mine")
    p = subprocess.run(["bash", str(LOCAL_SLURM), "stop"], env={**os.environ, "CEP_SLURM_DIR": str(tmp_path)},
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and (tmp_path / "keep.txt").read_text() == "mine", p.stderr
    assert slurm.run("sinfo", "-h", "-o", "%t").stdout.strip() in {"idle", "mix", "alloc"}
