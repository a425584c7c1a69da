"""A trial id from sweep.json (a file a user can edit or hand over) never names a folder outside trials/:
status, aggregate and every path derived from an id refuse an absolute one or one that climbs with `..`."""

from __future__ import annotations

import json

import pytest
from cli_runs import one_error_line, run_cli

from cep.layout import TrialIdRefused, trial_dir

BAD = ["/etc", "../../outside", "a/../../..", "a//b", "./a", ""]


def _experiment(tmp_path, tid: str):
    outside = tmp_path / "outside"
    (outside / "x").mkdir(parents=True)
    (outside / "trial.log").write_text("2026-01-01T00:00:00 h pid=1 end: finished\n")
    exp = tmp_path / "st" / "exp"
    (exp / "trials" / "ok").mkdir(parents=True)
    trials = [{"id": "ok", "experiment": "ok", "grid": {}, "config": {"epochs": 1}},
              {"id": tid, "experiment": "e", "grid": {}, "config": {"epochs": 1}}]
    (exp / "sweep.json").write_text(json.dumps({"name": "exp", "trials": trials}))
    return exp


@pytest.mark.parametrize("tid", BAD)
def test_trial_dir_refuses_ids_that_leave_trials(tid, tmp_path):
    with pytest.raises(TrialIdRefused):
        trial_dir(tmp_path, tid)


def test_trial_dir_keeps_nested_ids(tmp_path):
    assert trial_dir(tmp_path, "C-VF/angle=45/seed=1") == tmp_path / "trials" / "C-VF" / "angle=45" / "seed=1"


@pytest.mark.parametrize("command", ["status", "aggregate"])
@pytest.mark.parametrize("tid", ["/etc", "../../outside"])
def test_status_and_aggregate_refuse_a_trial_id_that_leaves_the_experiment(command, tid, tmp_path):
    exp = _experiment(tmp_path, tid)
    proc = run_cli([command, str(exp)], tmp_path, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert repr(tid) in line and "relative folder path" in line, line
    assert "outside" not in proc.stdout and not (exp / "summary").exists()


def test_a_sweep_refuses_to_resume_an_experiment_with_such_an_id(tmp_path):
    from cli_runs import SWEEP
    exp = _experiment(tmp_path, "../../outside")
    (tmp_path / "s.yaml").write_text(SWEEP)
    proc = run_cli(["s.yaml", "--storage", str(tmp_path / "st"), "--name", "exp", "--dry-run"], tmp_path)
    one_error_line(proc, "sweep.json", "relative folder path")
    assert (tmp_path / "outside" / "trial.log").exists() and exp.exists()
