"""The adaptive loop without Ray (its one call that trains, execute_sweep, replaced by a fake that writes
finished folders): the packs it trains are its rounds', a deleted folder of a told round is trained again before
new points are asked, and a suggestion a trial refuses is never recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cep.results import METRIC_COLUMNS
from cep.sweep import adaptive, driver
from cep.sweep.adaptive import run_adaptive
from cep.sweep.driver import SweepRun
from cep.sweep.searcher import SEARCH_FILE
from cep.sweep.spec import SweepError, parse_sweep

SWEEP = {"name": "s", "pack": 2,
         "base": {"dataset": "mnist5k", "epochs": 1, "train_samples": 40, "test_samples": 20,
                  "size_tab": [10, 8, 784], "seed": 0},
         "search": {"num_samples": 3, "searcher": "optuna", "space": {"beta": {"uniform": [0.1, 0.5]}}}}


def finish(folder: Path, error: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    row = {c: 0 for c in METRIC_COLUMNS} | {"epoch": 1, "test_error": error}
    (folder / "metrics.csv").write_text(",".join(METRIC_COLUMNS) + "\n" + ",".join(str(row[c]) for c in METRIC_COLUMNS)
                                        + "\n")
    (folder / "summary.json").write_text(json.dumps({"status": "finished", "epochs_done": 1, "epochs": 1,
                                                     "final": {"test_error": error}}))


@pytest.fixture
def trained(monkeypatch):
    calls: list[list[str]] = []

    def fake_execute(run: SweepRun) -> None:
        for p in run.packs:
            calls.append(list(p.ids))
            for t in p.members:
                finish(Path(t.config.out_dir), 10.0 + t.config.beta)

    monkeypatch.setattr(driver, "start_ray", lambda run: False)
    monkeypatch.setattr(driver, "execute_sweep", fake_execute)
    return calls


def run(spec, exp: Path, record=None):
    r = SweepRun(spec, [], [], exp)
    return run_adaptive(r, record, lambda line: None)


def test_rounds_train_in_their_own_packs_and_a_deleted_folder_is_trained_again(trained, tmp_path):
    spec = parse_sweep(SWEEP)
    trials, results = run(spec, tmp_path)
    assert all(o.complete for o in results.values()) and len(trials) == 3
    assert trained == [["search=0000", "search=0001"], ["search=0002"]]
    grown = parse_sweep({**SWEEP, "search": {**SWEEP["search"], "num_samples": 4}})
    record = json.loads((tmp_path / "sweep.json").read_text())
    trained.clear()
    run(grown, tmp_path, record)
    assert trained == [["search=0003"]]  # its own round, not packed with point 2
    assert json.loads((tmp_path / "sweep.json").read_text())["packs"] == [["search=0000", "search=0001"],
                                                                         ["search=0002"], ["search=0003"]]
    import shutil
    shutil.rmtree(tmp_path / "trials" / "search=0001")
    trained.clear()
    trials, results = run(grown, tmp_path, json.loads((tmp_path / "sweep.json").read_text()))
    assert trained == [["search=0000", "search=0001"]]  # its round's pack, before anything new is asked
    assert all(o.complete for o in results.values())


def test_a_suggestion_a_trial_refuses_is_not_recorded(trained, tmp_path, monkeypatch):
    spec = parse_sweep(SWEEP)
    real = adaptive.with_points

    def refusing(spec, points, *rounds):
        if len(points) > 2:
            raise SweepError(["search.space.beta: got 9; refused"])
        return real(spec, points, *rounds)

    monkeypatch.setattr(adaptive, "with_points", refusing)
    with pytest.raises(SweepError):
        run(spec, tmp_path)
    rounds = json.loads((tmp_path / SEARCH_FILE).read_text())["rounds"]
    assert [len(r) for r in rounds] == [2]  # the refused round was never written
