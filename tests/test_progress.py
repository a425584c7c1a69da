"""The live sweep table (a Tune callback) driven by hand, its ETAs and the summary's wall times: no Ray cluster."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest

pytest.importorskip("ray")

from cep.sweep.progress import ProgressTable  # noqa: E402


def test_a_collapse_gets_a_line_and_stays_in_its_row():
    out = io.StringIO()
    table = ProgressTable({"a": 5, "b": 5}, interval=1e9, out=out, packs={"a+1": ("a", "b")})
    pack = SimpleNamespace(config={"trial_id": "a+1"}, trial_id="t0", num_failures=0)
    table.on_trial_start(0, [], pack)

    def report(epoch: int, b_train: float, b_collapsed: int | None, b_status: str = "running") -> None:
        members = [{"id": "a", "epoch": epoch, "epochs": 5, "train_error": 10.0, "test_error": 11.0,
                    "status": "running", "collapsed_epoch": None},
                   {"id": "b", "epoch": epoch, "epochs": 5, "train_error": b_train, "test_error": 90.0,
                    "status": b_status, "collapsed_epoch": b_collapsed}]
        table.on_trial_result(0, [], pack, {"members": members})

    report(1, 15.0, None)
    assert "collapsed" not in out.getvalue()
    report(2, 88.0, 2)
    report(3, 89.0, 2)
    lines = [ln for ln in out.getvalue().splitlines() if "collapsed" in ln]
    assert lines[0].startswith("! b: collapsed at epoch 2 (train error 88.00%); training on") and len(lines) == 1
    text = table.table()
    assert "1 collapsed so far" in text.splitlines()[0]
    assert "running, collapsed at epoch 2" in next(ln for ln in text.splitlines() if ln.strip().startswith("b "))
    report(4, 89.0, 2, "collapsed")
    table.on_trial_complete(0, [], pack)
    assert "+ b: collapsed at epoch 4/5, test error 90.00%, collapsed at epoch 2" in out.getvalue()


from cep.config import TrialConfig  # noqa: E402
from cep.device import default_threads  # noqa: E402
from cep.layout import Trial  # noqa: E402
from cep.sweep.progress import Schedule, makespan  # noqa: E402
from cep.sweep.report import wall_times  # noqa: E402
from cep.text import duration  # noqa: E402


class _Trial:
    def __init__(self, trial_id: str):
        self.config = {"trial_id": trial_id}
        self.trial_id = trial_id


def test_makespan_fills_slots_as_they_free():
    assert makespan([], [], 2) == 0
    assert makespan([10.0], [5.0, 5.0], 2) == 10.0  # the free slot takes both waiting ones
    assert makespan([10.0, 4.0], [8.0], 2) == 12.0  # the waiting one starts when the 4 s one ends
    assert makespan([], [3.0, 3.0, 3.0], 1) == 9.0


def test_eta_per_trial_and_for_the_sweep_with_a_waiting_pack():
    # pack P (two trials, cost 2 per round) runs; pack Q (one trial, cost 1) waits; one slot
    table = ProgressTable({"a": 4, "b": 4, "c": 3}, interval=1e9, packs={"P": ("a", "b")},
                          schedule=Schedule({"P": 2.0, "c": 1.0}, slots=1))
    table.on_trial_start(0, [], _Trial("P"))
    assert table.eta() is None and "ETA after the first epoch" in table.table()
    members = [{"id": i, "epoch": 1, "epochs": 4, "status": "running", "epoch_seconds": 10.0,
                "train_error": 50.0, "test_error": 40.0} for i in ("a", "b")]
    table.on_trial_result(0, [], _Trial("P"), {"members": members})
    # P: 3 rounds of 10 s left; Q then: 3 epochs at 10 s / 2 cost units = 5 s per unit x 1
    assert table.eta() == pytest.approx(30 + 15)
    text = table.table()
    assert "sweep ETA 45s" in text and "s/epoch" in text
    assert [ln.split()[-2] for ln in text.splitlines()[3:]] == ["30s", "30s"]  # per trial: 3 x 10 s


def test_wall_time_per_experiment_spans_its_trials():
    cfg = TrialConfig()
    trials = [Trial("E/seed=0", "E", {}, cfg), Trial("E/seed=1", "E", {}, cfg), Trial("C/seed=0", "C", {}, cfg)]
    line = wall_times(trials, {"E/seed=0": (0.0, 50.0), "E/seed=1": (10.0, 100.0), "C/seed=0": (5.0, 3725.0)})
    assert line == "wall time per experiment: E 1m40s (2 trial(s)), C 1h02m (1 trial(s))"
    assert wall_times(trials, {}) == ""
    assert duration(59.4) == "59s"


def test_default_threads_one_for_the_papers_nets():
    assert default_threads(TrialConfig(size_tab=(10, 512, 784)), cpus=16) == 1
    assert default_threads(TrialConfig(size_tab=(10, 512, 512, 784), lr_tab=(0.1, 0.1, 0.1)), cpus=16) == 1
    big = TrialConfig(size_tab=(10, 4096, 784))
    assert default_threads(big, cpus=1) == 1 and default_threads(big, cpus=16) == 2
