"""cep-sweep on a real two-node Ray cluster on this machine: trials on the worker, a lost node, node-local storage.

The cluster is this module's own: `ray start --head` on loopback with its own
port, temp folder and token, and a worker `ray start --address` with a custom
resource (`worker_only`) that the sweep file asks for, so that every trial runs
on the worker. It is separate from the session cluster of conftest, and every
process it starts is killed by pid at the end (never `ray stop`, which stops
every Ray on the machine, other people's test clusters included).

Besides the checks, the clean run prints the orchestration overhead on this
machine (`pytest -s`): seconds from starting `cep-sweep` to the first trial's
first epoch, and the whole sweep's wall time against its training time.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from processes import free_port, kill_all, pids_matching, wait
from trial_files import log_lines, metrics, summary

pytestmark = [pytest.mark.ray,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds process trees in /proc")]

RAY = Path(sys.executable).with_name("ray")  # the `ray` CLI of this interpreter's environment
DRIVER = [sys.executable, "-c", "from cep.sweep.cli import main; main()"]
SWEEP = """\
name: clu
description: tiny nets on a two-node cluster; every trial needs the worker's custom resource
base: {size_tab: [10, 32, 784], lr_tab: [0.05, 0.1], train_samples: 200, test_samples: 100, epochs: 3,
       T: 10, Kmax: 4, dataset: mnist5k}
experiments:
  EP: {rule: ep}
  C-VF: {rule: vf, continual: true, lr_tab: [0.01, 0.02], randbeta: 0.5}
grid:
  seed: [0, 1]
resources: {cpu: 1, gpu: 0, worker_only: 1}
max_failures: 2
pack: 1  # each trial its own Ray Tune trial: node loss per trial (packs retried whole: test_sweep_ray's faults)
"""
IDS = ["EP/seed=0", "EP/seed=1", "C-VF/seed=0", "C-VF/seed=1"]
EPOCHS = 3
NODES = """
import json, sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
print(json.dumps([{"id": n["NodeID"], "alive": n["Alive"], "resources": n["Resources"]} for n in ray.nodes()]))
"""


# ------------------------------------------------------------------ helpers
def _tree(pid: int) -> list[int]:
    """`pid` and all its descendants (Ray's worker processes have process groups of their own)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a process and everything under it: a node lost without warning."""
    kill_all(_tree(proc.pid))
    proc.wait(30)


def _kill_matching(marker: str) -> None:
    kill_all(pids_matching(marker))


def node_of(folder: Path) -> str:
    """The Ray node id that ran (or runs) the trial's latest attempt, from its node.txt."""
    return dict(ln.split(" ", 1) for ln in (folder / "node.txt").read_text().splitlines())["ray_node_id"]


class LocalCluster:
    """A Ray cluster of `ray start --block` processes on loopback, owned (and killed) by this test module."""

    def __init__(self, root: Path):
        self.root = root
        self.address = f"127.0.0.1:{free_port()}"
        env = {k: v for k, v in os.environ.items()
               if k not in ("RAY_ADDRESS", "CEP_FAULT_INJECT", "CEP_TEST_EPOCH_SLEEP")}
        # Token authentication as on a real cluster: the same token on every node and in the driver.
        self.env = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
                    "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1",
                    # the head declares a killed node dead after ~3 s instead of ~30 s
                    "RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "1000",
                    "RAY_health_check_failure_threshold": "3"}
        self.procs: dict[str, subprocess.Popen] = {}
        self.head_id = self.worker_id = ""

    def start_node(self, name: str, args: list[str], prefix: list[str] | None = None) -> subprocess.Popen:
        log = self.root / f"{name}.log"
        cmd = [*(prefix or []), str(RAY), "start", "--block", "--node-ip-address", "127.0.0.1",
               "--temp-dir", str(self.root / name), "--dashboard-agent-listen-port", str(free_port()),
               "--object-store-memory", str(100 * 1024 * 1024), "--disable-usage-stats", *args]
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        try:
            wait(lambda: proc.poll() is not None or "Ray runtime started" in log.read_text(), 180, f"node {name}")
        except AssertionError:
            proc.poll()
        if proc.returncode is not None or "Ray runtime started" not in log.read_text():
            raise AssertionError(f"node {name} did not start:\n{log.read_text()[-3000:]}")
        return proc

    def start_head(self) -> subprocess.Popen:
        port = self.address.rsplit(":", 1)[1]
        return self.start_node("head", ["--head", "--port", port, "--num-cpus", "1", "--num-gpus", "0",
                                        "--include-dashboard", "false"])

    def start_worker(self, name: str) -> subprocess.Popen:
        return self.start_node(name, ["--address", self.address, "--num-cpus", "2", "--num-gpus", "0",
                                      "--resources", json.dumps({"worker_only": 2})])

    def nodes(self) -> list[dict]:
        p = subprocess.run([sys.executable, "-c", NODES, self.address], env=self.env, capture_output=True,
                           text=True, timeout=120)
        assert p.returncode == 0, p.stderr[-3000:]
        return json.loads(p.stdout.strip().splitlines()[-1])

    def node_with(self, resource: str, exclude: set[str] = frozenset()) -> str:
        """The id of the live node that has `resource` (and is not in `exclude`)."""
        found = [n["id"] for n in self.nodes() if n["alive"] and resource in n["resources"] and n["id"] not in exclude]
        assert len(found) == 1, found
        return found[0]

    def close(self) -> None:
        for proc in reversed(self.procs.values()):
            _kill_tree(proc)
        _kill_matching(str(self.root))  # anything of ours that outlived its parent


def sweep_cmd(sweep_file: Path, storage: Path, address: str, *extra: str) -> list[str]:
    return DRIVER + [str(sweep_file), "--address", address, "--storage", str(storage), "--progress-interval", "2",
                     *extra]


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def cluster():
    if not RAY.exists():
        pytest.skip(f"no ray CLI next to {sys.executable}")
    root = Path(tempfile.mkdtemp(prefix="cep-ray-", dir="/tmp"))  # short: Ray's socket paths live under it
    c = LocalCluster(root)
    try:
        c.start_head()
        c.start_worker("worker1")
        c.head_id = c.node_with("CPU", exclude={c.node_with("worker_only")})
        c.worker_id = c.node_with("worker_only")
        yield c
    finally:
        c.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def clean_run(cluster, sweep_file, tmp_path_factory):
    """An uninterrupted run of the sweep on the two-node cluster, timed."""
    storage = tmp_path_factory.mktemp("clean")
    exp = storage / "clu"
    t0 = time.monotonic()
    proc = subprocess.Popen(sweep_cmd(sweep_file, storage, cluster.address), env=cluster.env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait(lambda: proc.poll() is not None or any((exp / "trials" / t / "metrics.csv").exists() for t in IDS),
              240, "the first epoch")
        first_epoch = time.monotonic() - t0
        out, _ = proc.communicate(timeout=240)
    finally:
        proc.kill()
    wall = time.monotonic() - t0
    train = sum(summary(exp / "trials" / t).get("wall_seconds") or 0 for t in IDS)
    print(f"\noverhead on this machine: {first_epoch:.1f} s from starting cep-sweep to the first trial epoch; "
          f"{len(IDS)} trials in {wall:.1f} s wall, {train:.1f} s of it training (2 at a time on the worker)")
    return proc.returncode, out, exp


# ------------------------------------------------------------------ tests
def test_sweep_runs_its_trials_on_the_worker_node(cluster, clean_run):
    code, out, exp = clean_run
    assert code == 0, out
    assert f"Ray: cluster at {cluster.address} with 3 CPU(s), 0 GPU(s) on 2 node(s); per trial 1 CPU, 0 GPU, " \
           "1 worker_only" in out
    assert "4 trial(s): 4 finished, 0 errored" in out
    for tid in IDS:
        folder = exp / "trials" / tid
        assert [int(r["epoch"]) for r in metrics(folder)] == list(range(1, EPOCHS + 1))
        s = summary(folder)
        assert s["status"] == "finished" and s["host"] == socket.gethostname()
        assert node_of(folder) == cluster.worker_id != cluster.head_id  # the custom resource put it there
    assert json.loads((exp / "sweep.json").read_text())["resources"] == {"cpu": 1.0, "gpu": 0.0, "worker_only": 1.0}
    assert not list(exp.glob(".storage-probe-*"))  # the shared-storage check cleans up after itself


def test_node_local_storage_is_refused(cluster, sweep_file, tmp_path):
    """A node that does not see the storage path (its own mount namespace, a tmpfs over it) is named; nothing runs."""
    if subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs `unshare -m` (root or CAP_SYS_ADMIN) to give a node a private view of a folder")
    local = tmp_path / "local"
    local.mkdir()
    blind = cluster.start_node("blind", ["--address", cluster.address, "--num-cpus", "1", "--num-gpus", "0"],
                               prefix=["unshare", "-m", "--propagation", "private", "sh", "-c",
                                       'mount -t tmpfs tmpfs "$0" && exec "$@"', str(local)])
    try:
        p = subprocess.run(sweep_cmd(sweep_file, local, cluster.address), env=cluster.env, capture_output=True,
                           text=True, timeout=180)
    finally:
        _kill_tree(blind)
    assert p.returncode == 2, p.stdout + p.stderr
    err = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and err[0].startswith(f"error: --storage: {local / 'clu'} is not visible on 1 of 3 node(s): "
                                               f"{socket.gethostname()} ")
    assert "mounted at the same path on every node" in err[0]
    assert list(local.iterdir()) == []  # nothing left behind


def test_sweep_survives_losing_the_worker_node(cluster, clean_run, sweep_file, tmp_path):
    """Kill the worker node (SIGKILL of raylet and trial processes) mid-sweep, start a fresh one: same results."""
    _, _, ref = clean_run
    exp = tmp_path / "clu"
    env = {**cluster.env, "CEP_TEST_EPOCH_SLEEP": "2"}  # epochs slow enough to kill one mid-trial
    first_worker = cluster.worker_id
    folders = {tid: exp / "trials" / tid for tid in IDS}
    log = open(tmp_path / "driver.log", "w")
    proc = subprocess.Popen(sweep_cmd(sweep_file, tmp_path, cluster.address, "--no-aggregate"), env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        def midway() -> list[str]:
            return [t for t, f in folders.items()
                    # after epoch 1 of 3: at least two sleeps of margin before it could finish
                    if summary(f).get("status") == "running" and summary(f).get("epochs_done", 0) == 1]

        wait(lambda: proc.poll() is not None or (midway() and any(summary(f).get("status") == "finished"
                                                                    for f in folders.values())), 240,
              "a finished and a half-done trial")
        assert proc.poll() is None, (tmp_path / "driver.log").read_text()
        _kill_tree(cluster.procs["worker1"])  # the node is gone: raylet, agents and the trials running on it
        hit = {t: summary(f)["epochs_done"] for t, f in folders.items() if summary(f).get("status") == "running"}
        done_before = {t: log_lines(f) for t, f in folders.items() if summary(f).get("status") == "finished"}
        cluster.start_worker("worker2")
        proc.wait(300)
    finally:
        proc.kill()
        log.close()
    out = (tmp_path / "driver.log").read_text()
    assert proc.returncode == 0, out
    assert "4 trial(s): 4 finished, 0 errored" in out
    assert hit and any(n >= 1 for n in hit.values()), hit
    second_worker = cluster.node_with("worker_only", exclude={first_worker})
    for tid, folder in folders.items():
        assert metrics(folder) == metrics(ref / "trials" / tid), tid  # exactly the uninterrupted run's numbers
    resumed = {}
    for tid, epochs_done in hit.items():  # retried on the new node, from their last checkpoint
        starts = [ln.split(" (")[0] for ln in log_lines(folders[tid]) if ln.startswith("start")]
        assert node_of(folders[tid]) == second_worker, tid
        assert len(starts) >= 2, (tid, starts)
        resumed[tid] = int(starts[-1].rsplit(" ", 1)[1])
        # (the kill may fall between writing an epoch's summary.json and its checkpoint)
        assert epochs_done - 1 <= resumed[tid] <= epochs_done, (tid, epochs_done, starts)
        assert f"! {tid}: failed (" in out
    assert max(resumed.values()) >= 1, resumed  # not restarted from scratch
    for tid, lines in done_before.items():  # finished before the loss: never trained again
        added = log_lines(folders[tid])[len(lines):]  # (Tune may not have seen the end yet: then it replays)
        assert all(ln.startswith("replay: already finished") for ln in added), (tid, added)
