"""Drift (cep.health.find_drift): a train error risen well above its own minimum for several epochs is flagged
from the epoch it began; stop_on_drift ends the run there, and a resume does not train it on."""

from __future__ import annotations

import json

import pytest

from cep.checkpoint import new_state, save_state
from cep.config import TrialConfig
from cep.health import DRIFT_EPOCHS, DRIFT_RATIO, DRIFT_RISE, find_drift
from cep.results import read_folder, write_results
from cep.runner import resume
from cep.train import _epoch_done


def history(train_errors: list[float]) -> list[dict]:
    return [{"epoch": i + 1, "train_error": e, "test_error": e + 1.5} for i, e in enumerate(train_errors)]


# the shape measured on full MNIST (issue 31): down to a minimum of 0.4-1.1%, then up to 3-5% and staying
CONVERGING = [12.0, 6.0, 3.5, 2.2, 1.6, 1.2, 1.0, 0.9, 0.7, 0.8, 0.6, 0.7, 0.65, 0.9, 0.75]
DRIFTING = CONVERGING + [1.4, 3.1, 3.6, 2.9, 4.2, 4.8]  # the rise begins at epoch 17 (3.1 >= 0.6 + 1.5, >= 2 x 0.6)


def test_a_drifting_history_is_flagged_from_the_epoch_it_began():
    drift = find_drift(history(DRIFTING))
    assert drift is not None
    assert drift["epoch"] == 17 and drift["flagged_at"] == 17 + DRIFT_EPOCHS - 1
    assert drift["min_train_error"] == 0.6 and drift["min_epoch"] == 11
    assert drift["train_error"] == DRIFTING[drift["flagged_at"] - 1]


@pytest.mark.parametrize("low, high", [(0.4, 3.0), (1.1, 3.0), (1.1, 5.0)])
def test_every_measured_drift_is_caught(low, high):
    assert find_drift(history([5.0, 2.0, low] + [high] * DRIFT_EPOCHS))["epoch"] == 4


def test_a_healthy_history_is_not_flagged():
    assert find_drift(history(CONVERGING)) is None
    # early training swings: +2 points from 10% is not twice the minimum
    assert find_drift(history([30.0, 10.0, 12.0, 12.5, 12.2, 9.0])) is None
    # one or two bad epochs are noise, not a trend
    spikes = CONVERGING + [3.0, 3.0, 0.7, 3.0, 0.8]
    assert find_drift(history(spikes)) is None


def test_both_thresholds_are_needed():
    low = 0.6
    just_below_rise = low + DRIFT_RISE - 0.01  # twice the minimum, not enough points
    assert find_drift(history([low] + [just_below_rise] * DRIFT_EPOCHS)) is None
    low = 4.0
    below_ratio = DRIFT_RATIO * low - 0.01  # enough points, not twice the minimum
    assert find_drift(history([low] + [below_ratio] * DRIFT_EPOCHS)) is None
    assert find_drift(history([low] + [DRIFT_RATIO * low] * DRIFT_EPOCHS))["epoch"] == 2


def test_non_finite_epochs_break_a_streak():
    nan = float("nan")
    assert find_drift(history([0.5, 3.0, nan, 3.0, 3.0])) is None


def _state(tmp_path, **fields):
    cfg = TrialConfig(size_tab=(10, 4, 784), lr_tab=(0.1, 0.1), epochs=40, seed=0, device="cpu",
                      checkpoint=True, out_dir=str(tmp_path), **fields)
    return new_state(cfg, "cpu")


def _train_through(state, errors):
    for e in errors:
        if state.status != "running":
            break
        _epoch_done(state, e, 0.1, e + 1.5, 0.1, {}, 1.0)


def test_the_trainer_records_drift_and_trains_on_by_default(tmp_path):
    state = _state(tmp_path)
    _train_through(state, DRIFTING)
    assert state.status == "running" and state.epoch == len(DRIFTING)
    assert state.info["drifting"]["epoch"] == 17
    write_results(tmp_path, state)
    assert json.loads((tmp_path / "summary.json").read_text())["drifting"]["epoch"] == 17


def test_stop_on_drift_ends_the_run_where_the_drift_is_confirmed_and_a_resume_keeps_it_ended(tmp_path):
    state = _state(tmp_path, stop_on_drift=True)
    _train_through(state, DRIFTING)
    assert state.status == "stopped" and state.epoch == 17 + DRIFT_EPOCHS - 1
    assert state.info["stopped"] == {"epoch": state.epoch, "by": "stop_on_drift"}
    write_results(tmp_path, state)
    save_state(state, tmp_path / "checkpoint.pt")
    folder = read_folder(tmp_path, "train", 40)
    assert folder.status == "stopped" and "by stop_on_drift" in folder.detail(tmp_path)
    again = resume(state.config.replace(epochs=60), tmp_path)
    assert again.state.status == "stopped"  # not trained on


def test_cep_sweep_status_shows_a_drifting_trial(tmp_path, capsys):
    from cep.sweep.status import trial_status

    folder = tmp_path / "t"
    state = _state(folder)
    _train_through(state, DRIFTING)
    write_results(folder, state)
    row = trial_status("C-EP-1h/seed=0", folder, "train", 40)
    assert row.drifting_epoch == 17 and row.cells(0.0)[1] == "interrupted, drifting from epoch 17"
    healthy = _state(tmp_path / "h")
    _train_through(healthy, CONVERGING)
    write_results(tmp_path / "h", healthy)
    assert trial_status("h", tmp_path / "h", "train", 40).drifting_epoch is None


def test_the_live_table_flags_a_drifting_member_once():
    import io
    from types import SimpleNamespace

    pytest.importorskip("ray")
    from cep.sweep.progress import ProgressTable

    out = io.StringIO()
    table = ProgressTable({"a": 30}, interval=1e9, out=out)
    trial = SimpleNamespace(config={"trial_id": "a"}, trial_id="t0", num_failures=0)
    table.on_trial_start(0, [], trial)
    for epoch, drifting in ((18, None), (19, 17), (20, 17)):
        table.on_trial_result(0, [], trial, {"members": [
            {"id": "a", "epoch": epoch, "epochs": 30, "train_error": 3.6, "test_error": 5.0, "status": "running",
             "collapsed_epoch": None, "drifting_epoch": drifting}]})
    lines = [ln for ln in out.getvalue().splitlines() if "drifting" in ln]
    assert len(lines) == 1 and lines[0].startswith("! a: drifting since epoch 17 (train error 3.60%")
    text = table.table()
    assert "1 drifting so far" in text.splitlines()[0] and "running, drifting from epoch 17" in text
