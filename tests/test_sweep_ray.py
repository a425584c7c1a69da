"""cep-sweep on a local Ray cluster: end to end, interruption and exact resume, retries, --trial --local, bad input.

One Ray cluster serves the session (conftest.ray_address); drivers in subprocesses
join it with --address, so killing a driver leaves no Ray behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from commands import run_cli
from processes import free_port, trials_stopped, wait
from trial_files import log_lines, metrics, summary

from cep.sweep.cli import main
from cep.sweep.trainable import PACK_FAILURE

pytestmark = pytest.mark.ray

SWEEP = """\
name: small
description: tiny nets for the cep-sweep tests
base: {size_tab: [10, 32, 784], lr_tab: [0.05, 0.1], train_samples: 200, test_samples: 100, epochs: 4,
       T: 10, Kmax: 4, dataset: mnist5k}
experiments:
  EP: {rule: ep}
  C-VF: {rule: vf, continual: true, lr_tab: [0.01, 0.02], randbeta: 0.5, grid: {angle: [0, 90]}}
grid:
  seed: [0]
resources: {cpu: 1, gpu: 0}
max_failures: 1
"""
IDS = ["EP/seed=0", "C-VF/angle=0/seed=0", "C-VF/angle=90/seed=0"]
EPOCHS = 4
DRIVER = [sys.executable, "-c", "from cep.sweep.cli import main; main()"]


@pytest.fixture(scope="module")
def reference(sweep_file, ray_address, tmp_path_factory):
    """An uninterrupted run of the small sweep, in this process, on the session cluster."""
    storage = tmp_path_factory.mktemp("reference")
    with pytest.raises(SystemExit) as e:
        main([str(sweep_file), "--storage", str(storage), "--progress-interval", "0"])
    return e.value.code, storage / "small"


# ------------------------------------------------------------------ end to end
def test_small_sweep_end_to_end(reference, capfd):
    code, exp = reference
    assert code == 0
    assert (exp / "summary").is_dir()  # the aggregator ran after the sweep
    record = json.loads((exp / "sweep.json").read_text())
    assert set(record) >= {"name", "description", "fingerprint", "created", "cep_version", "sweep_file", "trials"}
    assert [t["id"] for t in record["trials"]] == IDS
    assert record["trials"][2]["grid"] == {"angle": 90.0, "seed": 0}
    assert record["trials"][2]["config"]["out_dir"] == str(exp / "trials" / IDS[2])
    import torch

    for tid in IDS:
        folder = exp / "trials" / tid
        for name in ("config.yaml", "metrics.csv", "summary.json", "learning_curve.png", "checkpoint.pt", "node.txt"):
            assert (folder / name).exists(), (tid, name)
        assert not (folder / "error.txt").exists()
        assert [int(r["epoch"]) for r in metrics(folder)] == list(range(1, EPOCHS + 1))
        s = summary(folder)
        assert s["status"] == "finished" and s["epochs_done"] == EPOCHS and s["host"]
        assert [ln for ln in log_lines(folder) if ln.startswith("epoch")] == [
            f"epoch {k} done: test error {float(r['test_error']):.2f}%" for k, r in enumerate(metrics(folder), 1)]
    # one Ray Tune trial per pack (pack: auto): EP alone, the two C-VF trials (same structure) as one program
    assert record["packs"] == [[IDS[0]], IDS[1:]]
    for pack_id, members in ((IDS[0], IDS[:1]), (IDS[1] + "+1", IDS[1:])):
        # its folder keeps exactly one checkpoint: the final epoch's exact trainer state of every member
        tune_dirs = [d for d in (exp / "tune").iterdir() if d.name.startswith(pack_id.replace("/", "_") + "_")]
        assert len(tune_dirs) == 1
        checkpoints = sorted(tune_dirs[0].glob("checkpoint_*"))
        assert len(checkpoints) == 1
        assert json.loads((checkpoints[0] / "members.json").read_text()) == members
        for k, tid in enumerate(members):
            name = "state.pt" if len(members) == 1 else f"state-{k}.pt"
            state = torch.load(checkpoints[0] / name, weights_only=False)
            assert state["epoch"] == EPOCHS and state["status"] == "finished"
            assert state["config"]["out_dir"] == str(exp / "trials" / tid)
        assert len((tune_dirs[0] / "result.json").read_text().splitlines()) == EPOCHS


def test_train_local_and_ray_trial_run_through_one_runner_alike(reference, sweep_file, tmp_path, capsys,
                                                               monkeypatch):
    """`cep train --checkpoint`, `cep-sweep --trial ID --local` and the Ray trial: the same runner, the same
    metrics.csv (the Ray trial ran in the reference sweep; its trial.log lines are the runner's)."""
    import torch
    import yaml

    import cep.runner
    from cep.cli import cli, run_main
    from cep.config import RUN_FIELDS

    _, exp = reference
    ray_trial = exp / "trials" / IDS[0]
    calls = []
    real_rounds = cep.runner.rounds
    monkeypatch.setattr(cep.runner, "rounds", lambda members, **kw: calls.append(str(members[0].folder)) or real_rounds(
        members, **kw))
    threads = torch.get_num_threads()
    try:
        local = tmp_path / "local"
        code, out, err = run_cli([str(sweep_file), "--trial", IDS[0], "--local", "--out", str(local)], capsys)
        assert code == 0, err
        fields = yaml.safe_load((ray_trial / "config.yaml").read_text())
        (tmp_path / "trial.yaml").write_text(yaml.safe_dump({k: v for k, v in fields.items() if k not in RUN_FIELDS}))
        trained = tmp_path / "train"
        torch.set_num_threads(1)  # as the sweep's trials (resources.cpu: 1)
        with pytest.raises(SystemExit) as e:
            run_main(cli, {}, ["train", "--config", str(tmp_path / "trial.yaml"), "--out", str(trained),
                               "--checkpoint", "--quiet"])
        assert e.value.code == 0
    finally:
        torch.set_num_threads(threads)
    assert calls == [str(local), str(trained)]
    assert metrics(local) == metrics(trained) == metrics(ray_trial)
    for folder in (local, trained, ray_trial):
        lines = log_lines(folder)
        assert lines[0].startswith("start after epoch 0") and lines[-1] == f"end: finished after epoch {EPOCHS}"


def test_a_packed_trial_computes_what_it_computes_alone(sweep_file, ray_address, tmp_path, capsys):
    """float64: each member of the C-VF pack equals `--trial ID --local --alone` (the trial alone) to 1e-9; float32
    would drift apart chaotically, since the pack sums in another order."""
    sets = ["--set", "dtype=float64", "--set", "epochs=2"]
    code, out, err = run_cli([str(sweep_file), "--storage", str(tmp_path), "--no-aggregate", *sets], capsys)
    assert code == 0, err
    assert "3 trials in 2 Ray Tune trials" in out
    for tid in IDS[1:]:
        alone = tmp_path / "alone" / tid
        code, out, err = run_cli([str(sweep_file), "--trial", tid, "--local", "--alone", "--out", str(alone), *sets],
                                 capsys)
        assert code == 0, err
        packed = metrics(tmp_path / "small" / "trials" / tid)
        assert [r["epoch"] for r in packed] == ["1", "2"]
        for a, b in zip(metrics(alone), packed, strict=True):
            for key in ("train_error", "test_error", "train_loss", "test_loss"):
                assert abs(float(a[key]) - float(b[key])) <= 1e-9 * max(1.0, abs(float(a[key]))), (tid, key, a, b)


def test_finished_experiment_is_not_rerun_and_a_changed_one_is_refused(reference, sweep_file, capsys):
    _, exp = reference
    before = {tid: (exp / "trials" / tid / "trial.log").read_text() for tid in IDS}
    code, out, err = run_cli([str(sweep_file), "--storage", str(exp.parent), "--no-aggregate"], capsys)
    assert code == 0 and "every selected trial is already complete; nothing to run" in out
    assert "3 finished, 0 errored (3 complete before this run, not rerun)" in out
    assert before == {tid: (exp / "trials" / tid / "trial.log").read_text() for tid in IDS}
    code, out, err = run_cli([str(sweep_file), "--storage", str(exp.parent), "--set", "epochs=2"], capsys)
    assert code == 2 and out == ""
    assert err.startswith(f"error: {exp}: this experiment was started from a different trial list (3 trial(s) "
                          "changed (e.g. EP/seed=0: epochs 4 -> 2))")


def test_trial_local_gives_the_sweeps_metrics(reference, sweep_file, tmp_path, capsys):
    import torch

    _, exp = reference
    threads = torch.get_num_threads()
    try:
        code, out, err = run_cli([str(sweep_file), "--trial", "C-VF/angle=90/seed=0", "--local",
                                  "--out", str(tmp_path / "local")], capsys)
    finally:
        torch.set_num_threads(threads)
    assert code == 0 and "locally on cpu (1 thread(s))" in out and "epoch   4" in out
    # it trains its whole pack here, so its metrics equal the sweep's bit for bit (tests/test_pack_replay.py)
    assert "the sweep trains this trial in a pack of 2 (C-VF/angle=0/seed=0+1): training that whole pack" in out
    assert metrics(tmp_path / "local") == metrics(exp / "trials/C-VF/angle=90/seed=0")


def test_only_runs_a_subset_and_the_full_run_does_not_redo_it(reference, sweep_file, tmp_path, capsys):
    _, ref = reference
    exp = tmp_path / "small"
    code, out, err = run_cli([str(sweep_file), "--storage", str(tmp_path), "--only", "EP", "--no-aggregate"], capsys)
    assert code == 0 and "cep-sweep small: 1 trial(s) of 3" in out and "1 trial(s): 1 finished" in out
    assert [p.name for p in (exp / "trials").iterdir()] == ["EP"]
    assert (exp / "tune" / "tuner.pkl").exists()  # Tune's files of the latest run (never read back)
    code, out, err = run_cli([str(sweep_file), "--storage", str(tmp_path), "--no-aggregate"], capsys)
    assert code == 0 and "3 trial(s): 3 finished, 0 errored (1 complete before this run, not rerun)" in out
    assert "EP/seed=0" not in out  # its pack is complete: not even replayed
    lines = log_lines(exp / "trials/EP/seed=0")
    assert sum(ln.startswith("epoch") for ln in lines) == EPOCHS and lines[-1].startswith("end: finished")
    for tid in IDS:
        assert metrics(exp / "trials" / tid) == metrics(ref / "trials" / tid)
    # --restart --only: just that trial afresh
    code, out, err = run_cli([str(sweep_file), "--storage", str(tmp_path), "--no-aggregate", "--restart",
                              "--only", "EP/seed=0"], capsys)
    assert code == 0 and "--restart: discarded the results of 1 trial(s) in" in out
    lines = log_lines(exp / "trials/EP/seed=0")
    assert lines[0].startswith("start after epoch 0") and sum(ln.startswith("start") for ln in lines) == 1
    assert metrics(exp / "trials/EP/seed=0") == metrics(ref / "trials/EP/seed=0")
    assert summary(exp / "trials/C-VF/angle=0/seed=0")["status"] == "finished"  # untouched


def test_a_sweep_that_only_adds_trials_or_epochs_grows_the_experiment(reference, sweep_file, tmp_path, capsys):
    """Ray Tune cannot add trials to an experiment: the grown one runs its unfinished trials in a Tune folder
    of their own; finished trials are kept, extended ones continue exactly, the summary covers all."""
    _, ref = reference
    exp = tmp_path / "small"
    first = tmp_path / "first.yaml"
    first.write_text(SWEEP.replace("epochs: 4", "epochs: 2").replace("  C-VF:", "  # C-VF:"))
    code, out, err = run_cli([str(first), "--storage", str(tmp_path), "--no-aggregate"], capsys)
    assert code == 0 and "1 trial(s): 1 finished" in out
    created = json.loads((exp / "sweep.json").read_text())["created"]
    code, out, err = run_cli([str(sweep_file), "--storage", str(tmp_path)], capsys)
    assert code == 0, err
    assert "growing the experiment" in out and "2 trial(s) added (e.g. C-VF/angle=0/seed=0)" in out
    assert "1 trial(s) with more epochs (e.g. EP/seed=0)" in out and "3 trial(s): 3 finished" in out
    record = json.loads((exp / "sweep.json").read_text())
    assert [t["id"] for t in record["trials"]] == IDS and record["created"] == created
    for tid in IDS:  # EP/seed=0 ran 2 epochs, then 2 more: the same numbers as 4 from the start
        assert metrics(exp / "trials" / tid) == metrics(ref / "trials" / tid)
    assert "EP" in (exp / "summary" / "table.md").read_text() and "C-VF" in (exp / "summary" / "table.md").read_text()
    code, out, err = run_cli([str(sweep_file), "--storage", str(tmp_path), "--no-aggregate"], capsys)
    assert code == 0 and "nothing to run" in out
    code, out, err = run_cli([str(first), "--storage", str(tmp_path), "--no-aggregate"], capsys)  # removes two
    assert code == 2 and "2 trial(s) removed (e.g. C-VF/angle=0/seed=0)" in err


GDU_SWEEP = """\
name: gdu
base: {action: gdu, size_tab: [10, 32, 784], lr_tab: [0.00002, 0.00002], batch_size: 1, T: 20, Kmax: 5,
       activation: tanh, beta: 0.01, dataset: mnist5k, seed: 0, gdu_units: 2}
experiments:
  C-EP: {rule: ep, continual: true}
"""


def test_gdu_action_runs_as_one_report(ray_address, tmp_path, capsys):
    (tmp_path / "gdu.yaml").write_text(GDU_SWEEP)
    args = [str(tmp_path / "gdu.yaml"), "--storage", str(tmp_path), "--no-aggregate"]
    code, out, err = run_cli(args, capsys)
    assert code == 0 and "1 trial(s): 1 finished" in out
    folder = tmp_path / "gdu/trials/C-EP"
    s = summary(folder)
    assert s["status"] == "finished" and s["action"] == "gdu" and s["angle_grad"] >= 0
    assert (folder / "gdu").is_dir() and (folder / "node.txt").exists()
    assert log_lines(folder)[-1] == "end: gdu analysis done"
    code, out, err = run_cli(args, capsys)
    assert code == 0 and "already complete; nothing to run" in out


# ---------------------------------------------------------- faults and retries
def test_fault_retried_from_checkpoint_and_max_failures(reference, sweep_file, tmp_path, capsys, monkeypatch):
    _, ref = reference
    monkeypatch.setenv("CEP_FAULT_INJECT", "C-VF/angle=90/*:3:pack;EP/*:2:always")
    code, out, err = run_cli([str(sweep_file), "--storage", str(tmp_path), "--no-aggregate",
                              "--progress-interval", "0"], capsys)
    exp = tmp_path / "small"
    assert code == 1
    # injected once into the C-VF pack's shared program (`:pack`; a member's own fault ends it alone:
    # test_pack_survives_ray): the round is lost whole (no member saved epoch 3), each member's errors.log
    # says it was the pack's, and the pack is retried from its epoch-2 checkpoints, with the same result as
    # never failing
    for tid in IDS[1:]:
        folder = exp / "trials" / tid
        assert summary(folder)["status"] == "finished" and metrics(folder) == metrics(ref / "trials" / tid)
        assert not (folder / "error.txt").exists() and "fault injected" in (folder / "errors.log").read_text()
        assert PACK_FAILURE.format(ids=", ".join(IDS[1:])) in (folder / "errors.log").read_text()
        lines = log_lines(folder)
        assert [ln.split(" (")[0] for ln in lines if ln.startswith("start")] == ["start after epoch 0",
                                                                                "start after epoch 2"]
        assert [ln for ln in lines if ln.startswith("epoch")] == [
            f"epoch {k} done: test error {float(r['test_error']):.2f}%" for k, r in enumerate(metrics(folder), 1)]
    assert f"! {IDS[1]}+1 (pack of 2): failed (" in out and "retrying from its last checkpoint" in out
    # always failing: errored after 1 + max_failures attempts, the others complete
    bad = exp / "trials/EP/seed=0"
    assert "FaultInjected: fault injected by CEP_FAULT_INJECT in epoch 2" in (bad / "error.txt").read_text()
    assert (bad / "errors.log").read_text().count("\ncep.sweep.faults.FaultInjected: ") == 2  # 1 + max_failures
    assert summary(bad)["status"] == "running" and summary(bad)["epochs_done"] == 1
    assert "3 trial(s): 2 finished, 1 errored" in out
    assert "EP/seed=0: errored: cep.sweep.faults.FaultInjected: fault injected" in err
    assert "1 trial(s) incomplete: rerun the same command" in err
    # rerunning the same command (no more faults) resumes the errored trial from its last checkpoint
    monkeypatch.delenv("CEP_FAULT_INJECT")
    code, out, err = run_cli([str(sweep_file), "--storage", str(tmp_path), "--no-aggregate"], capsys)
    assert code == 0 and "3 trial(s): 3 finished, 0 errored (2 complete before this run, not rerun)" in out
    assert "resuming the experiment" in out and not (bad / "error.txt").exists()
    assert [ln.split(" (")[0] for ln in log_lines(bad) if ln.startswith("start")][-1] == "start after epoch 1"
    assert metrics(bad) == metrics(ref / "trials/EP/seed=0")


def test_a_killed_trials_checkpoint_staging_folder_is_removed_later(tmp_path, monkeypatch):
    from cep.sweep.trainable import STAGING_PREFIX, remove_stale_staging

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"{STAGING_PREFIX}{int(dead.stdout)}-abc"
    live = tmp_path / f"{STAGING_PREFIX}{os.getpid()}-def"
    recent = tmp_path / f"{STAGING_PREFIX}{int(dead.stdout)}-ghi"  # dead pid, but just written: spared
    other = tmp_path / "cep-ckpt-notapid-x"
    for d in (stale, live, recent, other):
        d.mkdir()
        (d / "state.pt").write_bytes(b"x")
        if d != recent:
            os.utime(d, (time.time() - 7200, time.time() - 7200))
    remove_stale_staging()
    assert not stale.exists() and live.exists() and recent.exists() and other.exists()


# ------------------------------------------------------ interruption and resume
# Generous limits: a loaded CI machine can take minutes to start Ray workers (each imports torch); the waits
# end as soon as their condition holds, and fail at once, with the driver's output, if the driver exits.
SLOW = 300



def test_interrupted_sweep_resumes_exactly(reference, sweep_file, ray_address, tmp_path):
    _, ref = reference
    exp = tmp_path / "small"
    cmd = DRIVER + [str(sweep_file), "--storage", str(tmp_path), "--address", ray_address, "--no-aggregate",
                    "--progress-interval", "1"]
    env = {**os.environ, "CEP_TEST_EPOCH_SLEEP": "1.5", "PYTHONUNBUFFERED": "1"}
    folders = {tid: exp / "trials" / tid for tid in IDS}

    def states() -> dict[str, dict]:
        return {tid: summary(f) for tid, f in folders.items()}

    # 1. SIGKILL the driver once a trial has finished and another is mid-way
    # (the drivers' output goes to files: an unread pipe fills up and blocks the driver)
    log1 = tmp_path / "run1.log"
    with open(log1, "w") as out:
        p1 = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        # (at least two epochs left, so that the resumed run below is still busy when SIGTERM comes)
        wait(lambda: any(s.get("status") == "finished" for s in states().values())
              and any(s.get("status") == "running" and 0 < s.get("epochs_done", 0) <= EPOCHS - 2
                      for s in states().values()), SLOW, "a finished and a half-done trial", p1, log1)
        p1.send_signal(signal.SIGKILL)
    finally:
        p1.kill()
        p1.wait(30)
    wait(lambda: trials_stopped(exp), SLOW, "the killed driver's trials to stop")
    finished = [tid for tid, s in states().items() if s.get("status") == "finished"]
    assert finished and len(finished) < len(IDS)
    logs_after_kill = {tid: log_lines(folders[tid]) for tid in finished}

    # 2. the same command resumes; SIGTERM (what SLURM / Kubernetes send) stops it cleanly, resumable
    before = {tid: s.get("epochs_done", 0) for tid, s in states().items()}
    log2 = tmp_path / "run2.log"
    with open(log2, "w") as out:
        p2 = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait(lambda: any(s.get("epochs_done", 0) > before[tid] for tid, s in states().items()), SLOW,
              "progress after resuming", p2, log2)
        p2.send_signal(signal.SIGTERM)
        p2.wait(SLOW)
    finally:
        p2.kill()
        p2.wait(30)
    out2 = log2.read_text()
    assert p2.returncode == 128 + signal.SIGTERM, out2
    assert "SIGTERM: stopping the sweep and saving its state" in out2
    assert "stopped before the end: rerun the same command to resume" in out2
    assert "resuming the experiment" in out2

    # 3. and again: it completes
    p3 = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=2 * SLOW)
    assert p3.returncode == 0, p3.stdout
    assert "3 trial(s): 3 finished, 0 errored" in p3.stdout

    for tid, folder in folders.items():
        # bit for bit what the uninterrupted run gave
        assert metrics(folder) == metrics(ref / "trials" / tid), tid
        lines = log_lines(folder)
        assert [ln.split(":")[0] for ln in lines if ln.startswith("epoch")] == [
            f"epoch {k} done" for k in range(1, EPOCHS + 1)], (tid, lines)  # no epoch ran twice
    for tid in finished:  # finished before the kill: never trained again (at most a replay line)
        added = log_lines(folders[tid])[len(logs_after_kill[tid]):]
        assert all(ln.startswith("replay: already finished") for ln in added), (tid, added)


# ------------------------------------------------------------- bad input
BAD = {
    "unknown_key.yaml": ("name: b\nbase: {epoch: 3}\n", ["error: base.epoch: unknown trial field 'epoch'; "
                                                         "did you mean epochs?"]),
    "wrong_type.yaml": ("name: b\nbase: {T: many}\nresources: {gpu: lots}\n",
                        ["error: base.T: got 'many'; expected an integer",
                         "error: resources.gpu: got 'lots'; expected a number"]),
    "lr_tab.yaml": ("name: b\nexperiments:\n  C-VF-2h: {rule: vf, size_tab: [10, 512, 512, 784], "
                    "lr_tab: [0.1, 0.2]}\n",
                    ["error: experiments.C-VF-2h.lr_tab: 3 values needed for size_tab [10, 512, 512, 784] "
                     "(one per weight matrix, output-first), got 2"]),
    "empty_grid.yaml": ("name: b\ngrid: {seed: [], angle: [0]}\n",
                        ["error: grid.seed: empty list gives no trials; give at least one value or remove seed"]),
    "duplicate.yaml": ("name: b\nexperiments:\n  A: {seed: 1}\n  B: {seed: 1}\n",
                       ["error: experiments.B: trial B has exactly the configuration of trial A (a duplicate); "
                        "remove one or make them differ (e.g. another seed)"]),
}
CHECK = """
import contextlib, io, json, sys
from cep.sweep.cli import main
report = {}
for args in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(args)
        except SystemExit as e:
            code = e.code
    report[args[0] + " " + " ".join(args[1:])] = [code, err.getvalue()]
report["ray imported"] = "ray" in sys.modules
print(json.dumps(report))
"""


def test_bad_sweeps_give_one_line_errors_and_start_nothing(tmp_path):
    storage = tmp_path / "results"
    runs = []
    for name, (text, _) in BAD.items():
        (tmp_path / name).write_text(text)
        runs.append([str(tmp_path / name), "--storage", str(storage)])
    good = tmp_path / "good.yaml"
    good.write_text(textwrap.dedent(SWEEP))
    runs += [[str(good), "--storage", "relative/results", "--address", "10.0.0.1:6379"],
             [str(good), "--storage", str(storage), "--only", "nothing*"],
             [str(good), "--storage", str(storage), "--set", "epochs=zero"],
             [str(good), "--storage", str(storage), "--trial", "EP/seed=9", "--local"],
             [str(good), "--storage", str(storage), "--trial", "EP/seed=0"],
             [str(good), "--storage", "s3://bucket/results"],
             [str(good), "--storage", str(storage), "--address", f"127.0.0.1:{free_port()}"],
             [str(good), "--storage", str(storage), "--address", "headnode"]]
    p = subprocess.run([sys.executable, "-c", CHECK, json.dumps(runs)], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report.pop("ray imported") is False  # validation never imports (let alone starts) Ray
    results = list(report.values())
    for (code, err), (name, (_, expected)) in zip(results, BAD.items(), strict=False):
        assert code == 2, name
        assert err.splitlines() == expected, (name, err)
    extra = [err for _, err in results[len(BAD):]]
    assert all(code == 2 for code, _ in results)
    assert extra[0] == ("error: --storage relative/results: with --address every node must see the results, so "
                        "give shared storage as an absolute path (e.g. --storage /shared/results)\n")
    assert extra[1].startswith("error: --only nothing*: matches no trial; ids look like EP/seed=0")
    assert extra[2] == "error: --set epochs: got 'zero'; expected an integer\n"
    assert extra[3].startswith("error: --trial EP/seed=9: no such trial in sweep small; did you mean EP/seed=0?")
    assert extra[4].startswith("error: --trial ID and --local go together")
    assert extra[5].startswith("error: --storage s3://bucket/results: cloud URIs are not supported yet")
    assert extra[6].startswith("error: --address 127.0.0.1:") and "no Ray head answers there" in extra[6]
    assert extra[7] == ("error: --address headnode: expected HOST:PORT of the Ray head (e.g. 10.0.0.5:6379), "
                        "or auto\n")
    assert not storage.exists() and not (tmp_path / "relative").exists()  # nothing written


# ------------------------------------------------------------- a quiet terminal
OUR_LINES = (r"cep-sweep \S+: \d+ trial\(s\)", r"Ray: local with ", r"\[\d+:\d\d:\d\d\] ", r"  ", r"\+ \S+: ",
             r"sweep \S+: \d+ trial\(s\): ", r"wall time per experiment: ", r"results: ", r"$")


def test_a_local_run_prints_only_our_lines_and_keeps_rays_in_the_experiment_folder(tmp_path):
    """A fresh local Ray (as a new user's first `cep-sweep`): its start-up notices (e.g. token authentication),
    Tune's log lines and the trials' output land in <experiment>/ray.log; the terminal has only our lines."""
    import re

    sweep = tmp_path / "one.yaml"
    sweep.write_text(SWEEP.replace("name: small", "name: quiet").replace("epochs: 4", "epochs: 2")
                     .replace("grid: {angle: [0, 90]}", "grid: {angle: [90]}"))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    p = subprocess.run(DRIVER + [str(sweep), "--storage", str(tmp_path), "--no-aggregate", "--progress-interval", "0"],
                       env={**env, "PYTHONUNBUFFERED": "1"}, capture_output=True, text=True, timeout=SLOW)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = (p.stdout + p.stderr).splitlines()
    foreign = [ln for ln in lines if not any(re.match(pat, ln) for pat in OUR_LINES)
               or re.search(r"timestamp_ns|WARNING|INFO|\(pid=|run_pack_trial pid", ln)]
    assert not foreign, "\n".join(foreign)
    assert any("sweep ETA" in ln for ln in lines) and any(ln.startswith("wall time per experiment") for ln in lines)
    log = (tmp_path / "quiet" / "ray.log").read_text()
    assert log.startswith("--- cep-sweep quiet, pid ")
    assert "Token authentication is enabled" in log  # Ray 2.60's notice of a local start without RAY_AUTH_MODE
