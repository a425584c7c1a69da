"""An adaptive search's trials train, rerun and replay in the packs of their round: a round's points train
together and never with a later round's, so `--trial ID --local` trains exactly the pack the sweep trained."""

from __future__ import annotations

import json

from cep.sweep.adaptive import recorded_spec, with_points
from cep.sweep.plan import make_packs, pack_sizes, sweep_packs
from cep.sweep.searcher import SEARCH_FILE
from cep.sweep.spec import parse_sweep

SWEEP = {"name": "s", "pack": 4, "grid": {"seed": [0, 1]},
         "base": {"dataset": "mnist5k", "epochs": 1, "train_samples": 40, "test_samples": 20,
                  "size_tab": [10, 8, 784]},
         "search": {"num_samples": 4, "searcher": "optuna", "space": {"beta": {"uniform": [0.1, 0.5]}}}}
POINTS = [{"beta": b} for b in (0.2, 0.3, 0.4)]


def test_packs_never_span_two_rounds():
    spec = with_points(parse_sweep(SWEEP), POINTS, rounds=[1, 2])
    packs = sweep_packs(spec, spec.trials)
    rounds = [{t.grid["search"] for t in p.members} for p in packs]
    assert rounds == [{0}, {1, 2}]  # round 0: point 0's two seeds; round 1: points 1 and 2 (4 trials, one pack)
    everything = make_packs(spec.trials, pack_sizes(spec))  # what a replay over all points would train
    assert [len(p.members) for p in everything] == [4, 2] != [len(p.members) for p in packs]


def test_a_grid_sweep_packs_as_before():
    spec = parse_sweep({k: v for k, v in SWEEP.items() if k != "search"})
    assert sweep_packs(spec, spec.trials) == make_packs(spec.trials, pack_sizes(spec))


def test_the_recorded_rounds_give_the_packs_a_trial_replays(tmp_path):
    spec = parse_sweep(SWEEP)
    rounds = [[{"k": 0, "suggested": {"beta": 0.2}, "result": 12.0}],
              [{"k": 1, "suggested": {"beta": 0.3}, "result": 11.0}, {"k": 2, "suggested": {"beta": 0.4},
                                                                      "result": None}]]
    (tmp_path / SEARCH_FILE).write_text(json.dumps({"searcher": "optuna", "seed": 0, "metric": "final_test_error",
                                                    "mode": "min", "rounds": rounds}))
    replay = recorded_spec(spec, tmp_path)
    assert replay.rounds == (1, 2)
    trial = next(t for t in replay.trials if t.grid["search"] == 0)
    pack = next(p for p in sweep_packs(replay, replay.trials) if trial.id in p.ids)
    assert {t.grid["search"] for t in pack.members} == {0} and len(pack.members) == 2


def test_restart_only_selects_a_recorded_trial_of_an_adaptive_search(tmp_path):
    import yaml
    from cli_runs import one_error_line, run_cli

    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SWEEP))
    exp = tmp_path / "st" / "s"
    exp.mkdir(parents=True)
    rounds = [[{"k": 0, "suggested": {"beta": 0.2}, "result": 12.0}]]
    (exp / SEARCH_FILE).write_text(json.dumps({"searcher": "optuna", "seed": 0, "metric": "final_test_error",
                                               "mode": "min", "rounds": rounds}))
    from cep.sweep.store import resolve_trials, sweep_record, write_sweep_record
    spec = recorded_spec(parse_sweep(SWEEP), exp)
    write_sweep_record(exp, sweep_record(spec, resolve_trials(spec.trials, exp, cwd=tmp_path)))
    args = ["s.yaml", "--storage", str(tmp_path / "st"), "--only", "search=0000/seed=1", "--dry-run"]
    proc = run_cli([*args, "--restart"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "search=0000/seed=1" in proc.stdout and "search=0000/seed=0" not in proc.stdout
    one_error_line(run_cli(args, tmp_path), "--only: an adaptive search runs all its points", "--restart --only ID")
