"""Searches on a local Ray cluster: random search packed like a grid, grown, replayed locally."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from commands import run_cli
from processes import wait
from trial_files import metrics, summary

pytestmark = pytest.mark.ray

SWEEP = """\
name: search
base: {size_tab: [10, 16, 784], train_samples: 100, test_samples: 50, epochs: 2, T: 5, Kmax: 2, batch_size: 20,
       rule: vf, continual: true, randbeta: 0.5, dtype: float64, dataset: mnist5k}
experiments:
  C-VF-1h: {}
grid: {seed: [0, 1]}
search:
  num_samples: 2
  seed: 3
  space:
    lr_tab: [{loguniform: [0.005, 0.05]}, {loguniform: [1, 4], ratio_to: 0}]
resources: {cpu: 1, gpu: 0}
pack: 4
"""


def test_random_search_runs_packed_grows_and_replays_locally(ray_address, tmp_path, capsys):
    import torch

    first = tmp_path / "first.yaml"
    first.write_text(SWEEP)
    code, out, err = run_cli([str(first), "--storage", str(tmp_path), "--no-aggregate", "--progress-interval", "0"],
                             capsys)
    assert code == 0, err
    assert "4 trials in 1 Ray Tune trial" in out
    exp = tmp_path / "search"
    ids = [f"C-VF-1h/search={k:04d}/seed={s}" for k in range(2) for s in (0, 1)]
    record = json.loads((exp / "sweep.json").read_text())
    assert [t["id"] for t in record["trials"]] == ids and record["search"]["seed"] == 3
    done = {i: (exp / "trials" / i / "summary.json").read_text() for i in ids}
    assert all(summary(exp / "trials" / i)["status"] == "finished" for i in ids)
    # growing num_samples: the first points are kept (not rerun), the new ones run
    grown = tmp_path / "grown.yaml"
    grown.write_text(SWEEP.replace("num_samples: 2", "num_samples: 3"))
    code, out, err = run_cli([str(grown), "--storage", str(tmp_path), "--progress-interval", "0"], capsys)
    assert code == 0, err
    assert "growing the experiment" in out and "2 trial(s) added (e.g. C-VF-1h/search=0002/seed=0)" in out
    assert "6 trial(s): 6 finished, 0 errored (4 complete before this run, not rerun)" in out
    assert done == {i: (exp / "trials" / i / "summary.json").read_text() for i in ids}
    # --trial ID --local replays the trial's pack: the sweep's numbers, bit for bit
    threads = torch.get_num_threads()
    try:
        code, out, err = run_cli([str(grown), "--trial", ids[1], "--local", "--out", str(tmp_path / "local")], capsys)
    finally:
        torch.set_num_threads(threads)
    assert code == 0, err
    assert metrics(tmp_path / "local") == metrics(exp / "trials" / ids[1])


OPTUNA = SWEEP.replace("grid: {seed: [0, 1]}", "grid: {seed: [0]}").replace(
    "num_samples: 2\n  seed: 3\n", "num_samples: 6\n  seed: 3\n  searcher: optuna\n").replace("epochs: 2", "epochs: 3")
OPTUNA_IDS = [f"C-VF-1h/search={k:04d}/seed=0" for k in range(6)]
DRIVER = [sys.executable, "-c", "from cep.sweep.cli import main; main()"]


def _suggestions(exp) -> list[list[dict]]:
    return [[e["suggested"] for e in r] for r in json.loads((exp / "search.json").read_text())["rounds"]]


def test_optuna_search_in_packs_of_4_killed_and_rerun_continues_exactly(ray_address, tmp_path, capsys):
    """Rounds of one pack (4 points, then 2); every member's result goes to Optuna's study; a SIGKILL of the
    driver's process group mid-search and a rerun give the same suggestions and the same metrics, bit for bit."""
    from cep.sweep.searcher import AdaptiveSearch, read_search_record
    from cep.sweep.spec import load_sweep

    path = tmp_path / "optuna.yaml"
    path.write_text(OPTUNA)
    whole = tmp_path / "whole"
    code, out, err = run_cli([str(path), "--storage", str(whole), "--no-aggregate", "--progress-interval", "0"],
                             capsys)
    assert code == 0, err
    assert "search round 1: point(s) 0-3 of 6 (optuna), 4 trial(s)" in out and "search round 2: point(s) 4-5" in out
    exp = whole / "search"
    spec = load_sweep(path).search
    rounds = read_search_record(exp, spec)
    assert [len(r) for r in rounds] == [4, 2]
    study = AdaptiveSearch(spec, rounds).searcher._ot_study
    finals = [summary(exp / "trials" / i)["final"]["test_error"] for i in OPTUNA_IDS]
    assert [t.value for t in study.trials] == finals  # every member's result, told to the searcher

    # killed in its second round (SIGKILL of the process group), then rerun
    killed = tmp_path / "killed"
    log = tmp_path / "killed.log"
    env = {**os.environ, "CEP_TEST_EPOCH_SLEEP": "1", "PYTHONUNBUFFERED": "1"}
    cmd = DRIVER + [str(path), "--storage", str(killed), "--address", ray_address, "--no-aggregate"]
    with open(log, "w") as f:
        p = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    second = killed / "search" / "trials" / OPTUNA_IDS[4]
    try:
        wait(lambda: summary(second).get("epochs_done", 0) >= 1, 240, "the second round's first epoch", p, log)
        os.killpg(p.pid, signal.SIGKILL)
    finally:
        p.kill()
        p.wait(30)
    assert summary(second)["status"] != "finished"
    code, out, err = run_cli([str(path), "--storage", str(killed), "--no-aggregate", "--progress-interval", "0"],
                             capsys)
    assert code == 0, err
    assert "search round 2: point(s) 4-5" in out and "search round 1" not in out
    assert _suggestions(killed / "search") == _suggestions(exp)
    for i in OPTUNA_IDS:
        assert metrics(killed / "search" / "trials" / i) == metrics(exp / "trials" / i), i
    # --trial ID --local: a point of the recorded search, replayed with its pack, the sweep's numbers
    code, out, err = run_cli([str(path), "--storage", str(whole), "--trial", OPTUNA_IDS[5], "--local", "--out",
                              str(tmp_path / "local")], capsys)
    assert code == 0, err
    assert metrics(tmp_path / "local") == metrics(exp / "trials" / OPTUNA_IDS[5])
