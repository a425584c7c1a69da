"""The experiment folder's lifecycle: valid at every moment (kills, failed --restart), never running code from
its files, damaged trials rerun, one process per experiment, --dry-run's exit code, and a chaos test.

The Ray tests join the session cluster (conftest.ray_address) in this process or with --address; the chaos
test starts its own local Ray in each killed driver's process group.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from commands import run_cli
from processes import kill_all, tail, trials_stopped, wait
from trial_files import log_lines, metrics, summary

from cep.sweep.cli import main

SWEEP = """\
name: life
description: tiny float64 nets for the lifecycle tests
base: {size_tab: [10, 16, 784], lr_tab: [0.05, 0.1], train_samples: 200, test_samples: 100, epochs: 3,
       T: 10, Kmax: 4, dataset: mnist5k, dtype: float64}
experiments:
  EP: {rule: ep}
  C-VF: {rule: vf, continual: true, lr_tab: [0.01, 0.02], randbeta: 0.5, grid: {angle: [0, 90]}}
grid:
  seed: [0]
resources: {cpu: 1, gpu: 0}
max_failures: 0
"""
IDS = ["EP/seed=0", "C-VF/angle=0/seed=0", "C-VF/angle=90/seed=0"]
EPOCHS = 3
DRIVER = [sys.executable, "-c", "from cep.sweep.cli import main; main()"]
SLOW = 300


@pytest.fixture(scope="module")
def reference(sweep_file, ray_address, tmp_path_factory) -> Path:
    """An uninterrupted run of the sweep, in this process, on the session cluster."""
    storage = tmp_path_factory.mktemp("reference")
    with pytest.raises(SystemExit) as e:
        main([str(sweep_file), "--storage", str(storage), "--progress-interval", "0", "--no-aggregate"])
    assert e.value.code == 0
    return storage / "life"


def copy_of(ref: Path, tmp_path: Path) -> Path:
    """The reference experiment copied elsewhere (as a colleague's folder would be)."""
    exp = tmp_path / "life"
    shutil.copytree(ref, exp, symlinks=True)
    return exp


def assert_like_reference(exp: Path, ref: Path) -> None:
    for tid in IDS:
        assert metrics(exp / "trials" / tid) == metrics(ref / "trials" / tid), tid
        assert summary(exp / "trials" / tid)["status"] == "finished", tid


# ------------------------------------------------------------- item 1 and 7
@pytest.mark.ray
def test_leftovers_of_a_run_killed_before_sweep_json_start_the_experiment(reference, sweep_file, tmp_path, capsys):
    """What a run killed while Ray starts (or while undoing a refused start) leaves is our own: the same command
    starts the experiment; another program's file still makes the folder foreign; a refused start leaves nothing."""
    exp = tmp_path / "life"
    exp.mkdir()
    (exp / "ray.log").write_text("--- cep-sweep life, pid 1\n")
    (exp / ".cep-sweep.lock").write_text("pid 999999 host elsewhere started 2026-01-01T00:00:00+0000\n")
    (exp / ".sweep.4242.tmp.json").write_text('{"na')
    (exp / ".write-probe.4242").write_text("")
    args = [str(sweep_file), "--storage", str(tmp_path), "--no-aggregate", "--progress-interval", "0"]
    code, out, err = run_cli([*args, "--only", "C-VF/*"], capsys)
    assert code == 0, err
    assert "(a pack of trials shares one trial's resources: 2 trials in 1 Ray Tune trial)" in out  # item 7
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert_like_reference(exp, reference)

    other = tmp_path / "other" / "life"
    other.mkdir(parents=True)
    (other / "ray.log").write_text("")
    (other / "notes.txt").write_text("mine")
    code, out, err = run_cli([*args[:2], str(tmp_path / "other"), *args[3:]], capsys)
    assert code == 2 and err == (f"error: {other}: exists and is not a cep-sweep experiment (no sweep.json); "
                                 "choose another --name or --storage\n")
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt", "ray.log"]

    fresh = tmp_path / "fresh"
    code, out, err = run_cli([*args[:2], str(fresh / "deep"), *args[3:], "--set", "resources.cpu=64"], capsys)
    assert code == 2 and "no trial could ever start" in err and len(err.splitlines()) == 1
    assert not fresh.exists()  # sweep.json (written before Ray), the lock file and the folders: all undone


# ------------------------------------------------------------------ item 2
def _immutable(path: Path) -> bool:
    """Make `path` undeletable even for root (chattr +i); False where the file system does not allow it."""
    return subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0 if shutil.which(
        "chattr") else False


@pytest.mark.ray
def test_a_restart_that_cannot_delete_a_file_leaves_a_fresh_experiment(reference, sweep_file, tmp_path, capsys):
    exp = copy_of(reference, tmp_path)
    stuck = exp / "trials" / "EP" / "seed=0" / "stuck" / "file"
    stuck.parent.mkdir()
    stuck.write_text("cannot be deleted")
    if not _immutable(stuck):
        pytest.skip("chattr +i is not available here: no way to make a file undeletable for root")
    try:
        args = [str(sweep_file), "--storage", str(tmp_path), "--no-aggregate", "--progress-interval", "0"]
        code, out, err = run_cli([*args, "--restart"], capsys)
        trash = [p for p in tmp_path.iterdir() if p.name.startswith(".discarded-life-")]
        assert len(trash) == 1 and (trash[0] / "trials" / "EP" / "seed=0" / "stuck" / "file").exists()
        assert code == 0, err
        assert f"warning: --restart: could not delete all of the discarded {trash[0]}" in err
        assert f"--restart: discarded {exp}" in out and "3 trial(s): 3 finished" in out
        assert not (exp / "trials" / "EP" / "seed=0" / "stuck").exists()
        assert_like_reference(exp, reference)
        code, out, err = run_cli(args, capsys)  # and every later command takes it
        assert code == 0 and "nothing to run" in out, err
    finally:
        for p in tmp_path.rglob("file"):
            subprocess.run(["chattr", "-i", str(p)], capture_output=True)


# ------------------------------------------------------------------ item 3
class Payload:
    """Unpickling it creates a file: what a crafted tuner.pkl would do with a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.ray
def test_crafted_tune_state_in_a_copied_folder_runs_nothing(reference, sweep_file, tmp_path, capsys):
    exp = copy_of(reference, tmp_path)
    victim = tmp_path / "victim"
    victim.mkdir()
    proof = tmp_path / "proof.pkl"
    proof.write_bytes(pickle.dumps(Payload(victim / "payload-is-live")))
    subprocess.run([sys.executable, "-c", f"import pickle; pickle.loads(open({str(proof)!r}, 'rb').read())"],
                   check=True)
    assert (victim / "payload-is-live").exists()  # the payload really runs when unpickled
    crafted = pickle.dumps(Payload(victim / "marker"))
    state = json.dumps({"trial_data": [["{}", crafted.hex()]], "runner_data": crafted.hex(), "timestamp": 1})
    for folder in (exp, exp / "tune"):
        folder.mkdir(exist_ok=True)
        (folder / "tuner.pkl").write_bytes(crafted)
        (folder / "experiment_state-2026-01-01_00-00-00.json").write_text(state)
    shutil.rmtree(exp / "trials" / "EP")  # so that work remains
    code, out, err = run_cli([str(sweep_file), "--storage", str(tmp_path), "--no-aggregate", "--progress-interval",
                              "0"], capsys)
    assert code == 0, out + err
    assert not (victim / "marker").exists()
    assert_like_reference(exp, reference)


# ------------------------------------------------------------------ item 4
@pytest.mark.ray
def test_missing_or_damaged_trial_folders_are_run_again(reference, sweep_file, tmp_path, capsys):
    exp = copy_of(reference, tmp_path)
    shutil.rmtree(exp / "trials" / IDS[0])  # deleted by hand: trained again from the start
    (exp / "trials" / IDS[1] / "summary.json").write_text('{"status": "fini')  # damaged: replayed from checkpoint
    (exp / "trials" / IDS[2] / "metrics.csv").write_text("epoch,test_error\n1,x\n")  # damaged
    code, out, err = run_cli([str(sweep_file), "--storage", str(tmp_path), "--no-aggregate", "--progress-interval",
                              "0"], capsys)
    assert code == 0, out + err
    assert "3 trial(s): 3 finished, 0 errored" in out
    assert_like_reference(exp, reference)
    for tid in IDS[1:]:  # the damaged ones were replayed from their checkpoint, not trained again
        assert sum(ln.startswith("epoch") for ln in log_lines(exp / "trials" / tid)) == EPOCHS
        assert log_lines(exp / "trials" / tid)[-1].startswith("replay: already finished")


# ------------------------------------------------------------------ item 5
@pytest.mark.ray
def test_one_process_per_experiment(reference, sweep_file, ray_address, tmp_path, capsys):
    exp = tmp_path / "life"
    args = [str(sweep_file), "--storage", str(tmp_path), "--no-aggregate", "--progress-interval", "1"]
    env = {**os.environ, "CEP_TEST_EPOCH_SLEEP": "2", "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "first.log"
    with open(log, "w") as out:  # a --restart that runs the experiment
        first = subprocess.Popen(DRIVER + [*args, "--address", ray_address, "--restart"], env=env, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait(lambda: (exp / "sweep.json").exists() and any((exp / "trials").rglob("node.txt")), SLOW,
             "the first run to start its trials", first, log)
        record = (exp / "sweep.json").read_bytes()
        who = (f"in use by another cep-sweep (its .cep-sweep.lock says: pid {first.pid} on host "
               f"{socket.gethostname()} since ")
        for extra in ([], ["--restart"], ["--restart", "--only", "EP/*"], ["--dry-run"]):
            code, out, err = run_cli([*args, *extra], capsys)
            assert code == 2 and len(err.splitlines()) == 1 and err.startswith(f"error: {exp}: {who}"), (extra, err)
            assert "kill" not in err  # what the lock file claims is shown, never turned into advice (issue 28)
            assert (exp / "sweep.json").read_bytes() == record and (exp / "trials").is_dir()
        code, out, err = run_cli(["status", str(exp)], capsys)  # reading stays allowed
        assert "in use" not in err and code != 2, err
        code, out, err = run_cli(["aggregate", str(exp)], capsys)
        assert "in use" not in err and code != 2, err
        assert first.poll() is None
        os.killpg(first.pid, signal.SIGKILL)  # a dead holder: its lock is taken over silently
    finally:
        first.kill()
        first.wait(30)
    wait(lambda: trials_stopped(exp), SLOW, "the killed driver's trials to stop")
    code, out, err = run_cli(args, capsys)
    assert code == 0 and "in use" not in out + err, out + err
    assert_like_reference(exp, reference)



# ------------------------------------------------------------------ item 6
def test_dry_run_exits_2_on_an_experiment_it_could_not_run(sweep_file, tmp_path, capsys):
    exp = tmp_path / "life"
    args = [str(sweep_file), "--storage", str(tmp_path), "--dry-run", "--set", "epochs=1"]
    code, out, err = run_cli(args, capsys)
    assert code == 0 and f"experiment: {exp} (new)" in out, err
    exp.mkdir()
    (exp / "sweep.json").write_text('{"trials": [')
    code, out, err = run_cli(args, capsys)
    assert code == 2 and err.startswith(f"error: {exp / 'sweep.json'}: damaged") and len(err.splitlines()) == 1
    from cep.sweep.spec import load_sweep
    from cep.sweep.store import resolve_trials, sweep_record, write_sweep_record

    spec = load_sweep(str(sweep_file), ["epochs=1", "beta=0.3"])
    write_sweep_record(exp, sweep_record(spec, resolve_trials(spec.trials, exp)))
    code, out, err = run_cli(args, capsys)
    assert code == 2 and "different trial list" in err and len(err.splitlines()) == 1
    (exp / "notes.txt").write_text("")
    (exp / "sweep.json").unlink()
    code, out, err = run_cli(args, capsys)
    assert code == 2 and "not a cep-sweep experiment" in err


# ------------------------------------------------------------------ item 8
CHAOS_SWEEP = SWEEP.replace("name: life", "name: chaos\npack: 2").replace(
    "grid:\n  seed: [0]", "grid:\n  seed: [0, 1]").replace("  EP: {rule: ep}\n", "")


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            pids.append(int(stat.parent.name))
    return pids


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the driver's process group (its local Ray included) and wait until none of it is left."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(30)
    end = time.monotonic() + 60
    while _group_pids(proc.pid) and time.monotonic() < end:
        kill_all(_group_pids(proc.pid))
        time.sleep(0.2)
    assert not _group_pids(proc.pid), "processes of the killed group are left"


@pytest.mark.ray
def test_chaos_kills_at_any_moment_then_the_same_results(ray_address, tmp_path, capsys):
    """A packed float64 sweep (4 trials in 2 packs) killed with SIGKILL of its process group at moments over
    its whole run, start-up included, rerun each time: the same metrics bit for bit, each epoch once, exit 0.

    The first kills hit drivers with a local Ray of their own (in their process group, killed with it); the
    later runs join the session cluster (--address), to spare Ray's start-up time."""
    sweep = tmp_path / "chaos.yaml"
    sweep.write_text(CHAOS_SWEEP)
    code, out, err = run_cli([str(sweep), "--storage", str(tmp_path / "ref"), "--no-aggregate",
                              "--progress-interval", "0"], capsys)
    assert code == 0 and "4 trials in 2 Ray Tune trials" in out, err
    ids = ["C-VF/angle=0/seed=0", "C-VF/angle=0/seed=1", "C-VF/angle=90/seed=0", "C-VF/angle=90/seed=1"]
    exp = tmp_path / "chaos"
    folders = [exp / "trials" / tid for tid in ids]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(CEP_TEST_EPOCH_SLEEP="0.3", PYTHONUNBUFFERED="1")
    cmd = DRIVER + [str(sweep), "--storage", str(tmp_path), "--no-aggregate", "--progress-interval", "0"]

    def done_epochs() -> int:
        return sum(summary(f).get("epochs_done", 0) for f in folders)

    moments = [  # when to kill each run, on what the folder shows (a late kill is fine); its own Ray or not
        (lambda: True, True),  # right away: about 1 s in, before Ray
        (lambda: (exp / "ray.log").exists(), True),  # while Ray starts
        (lambda: done_epochs() >= 2, True),  # mid-training
        (lambda: done_epochs() >= 4 * EPOCHS - 3, False),  # near the end
    ]
    for k, (moment, own_ray) in enumerate(moments):
        log = tmp_path / f"run{k}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd + ([] if own_ray else ["--address", ray_address]), env=env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        try:
            time.sleep(1.0)
            end = time.monotonic() + SLOW
            while not moment() and proc.poll() is None and time.monotonic() < end:
                time.sleep(0.05)
            time.sleep(0.2 * k)
        finally:
            _kill_group(proc)
        assert proc.returncode in (-signal.SIGKILL, 0), tail(log)
        wait(lambda: trials_stopped(exp), SLOW, "the killed driver's trials to stop")
    final = subprocess.run(cmd + ["--address", ray_address], env=env, capture_output=True, text=True, timeout=SLOW)
    assert final.returncode == 0, final.stdout + final.stderr
    assert "4 trial(s): 4 finished" in final.stdout
    for tid, folder in zip(ids, folders, strict=True):
        assert metrics(folder) == metrics(tmp_path / "ref" / "chaos" / "trials" / tid), tid
        assert [r["epoch"] for r in metrics(folder)] == [str(e) for e in range(1, EPOCHS + 1)], tid  # each once


def test_a_lock_is_refused_while_its_process_lives_and_taken_over_once_it_is_killed(tmp_path):
    from cep.sweep.lock import ExperimentLock
    from cep.sweep.spec import SweepError

    exp = tmp_path / "life"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from cep.sweep.lock import ExperimentLock as L; L(Path(sys.argv[1])).acquire(); "
                               "print('held', flush=True); time.sleep(120)", str(exp)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        lock = ExperimentLock(exp)
        with pytest.raises(SweepError) as e:
            lock.acquire()
        since = e.value.problems[0].split(" since ")[1].split(")")[0]
        assert e.value.problems == [f"{exp}: in use by another cep-sweep (its .cep-sweep.lock says: pid {holder.pid} "
                                    f"on host {socket.gethostname()} since {since}); wait for it to end, or stop it "
                                    "(Ctrl-C where it runs) and rerun"]
        holder.kill()
        holder.wait(30)
        lock.acquire()  # SIGKILL released it: taken over silently
        assert f"pid {os.getpid()} " in (exp / ".cep-sweep.lock").read_text()
        lock.release(remove=True)
        assert list(exp.iterdir()) == []
    finally:
        holder.kill()
        holder.wait(30)


def test_a_pack_killed_while_it_saves_resumes_in_step_from_its_own_folders(tmp_path):
    """Ray Tune's checkpoint is no longer restored: a member saved a round ahead of the others continues from
    its checkpoint-previous.pt, so the pack runs as it would have, bit for bit."""
    import torch

    from cep.config import TrialConfig
    from cep.member import Member
    from cep.results import CHECKPOINT_FILE
    from cep.runner import PREVIOUS_CHECKPOINT, resume_pack, rounds, run_pack

    small = dict(size_tab=(10, 8, 784), lr_tab=(0.05, 0.1), T=5, Kmax=2, train_samples=60, test_samples=30,
                 dataset="mnist5k", device="cpu", dtype="float64", epochs=3, checkpoint=True)

    def pack(root: Path) -> list[Member]:
        return [Member(c, Path(c.out_dir)) for c in
                (TrialConfig(**small, seed=s, out_dir=str(root / f"m{s}")) for s in (1, 2))]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_pack(pack(tmp_path / "whole"))
        members = pack(tmp_path / "killed")

        with pytest.raises(KeyboardInterrupt):
            for trained in rounds(members):
                if trained[0].state.epoch == 1:
                    shutil.copyfile(members[1].folder / CHECKPOINT_FILE, tmp_path / "m2-round1.pt")
                if trained[0].state.epoch == 2:
                    raise KeyboardInterrupt  # the kill, after the round was saved ...
        # ... as if it came after member 1 saved round 2 and before member 2 did
        shutil.copyfile(tmp_path / "m2-round1.pt", members[1].folder / CHECKPOINT_FILE)
        (members[1].folder / PREVIOUS_CHECKPOINT).unlink(missing_ok=True)
        again = pack(tmp_path / "killed")
        resume_pack(again, {})
        assert [m.resumed.epoch for m in again] == [1, 1] and again[0].resumed.source == PREVIOUS_CHECKPOINT
        run_pack(again)
    finally:
        torch.set_num_threads(threads)
    for s in (1, 2):
        assert metrics(tmp_path / "killed" / f"m{s}") == metrics(tmp_path / "whole" / f"m{s}")
