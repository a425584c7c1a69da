"""The `search` section without Ray running: its checks, its points (reproducible, stable as it grows), ids."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import pytest
import yaml

from cep.sweep.plan import compare, make_packs
from cep.sweep.search_space import parse_search
from cep.sweep.spec import SweepError, parse_sweep
from cep.sweep.store import resolve_trials, sweep_record

SEARCH = """\
name: s
base: {size_tab: [10, 16, 784], epochs: 2, train_samples: 200, test_samples: 100, rule: vf, continual: true}
experiments:
  C-VF-1h: {}
grid: {seed: [0, 1]}
search:
  num_samples: 4
  seed: 5
  space:
    lr_tab: [{loguniform: [0.001, 0.1]}, {loguniform: [0.5, 4], ratio_to: 0}]
    beta: {uniform: [0.1, 0.5]}
"""


def parse(text: str, overrides=(), **kw):
    return parse_sweep(yaml.safe_load(textwrap.dedent(text)), overrides, **kw)


def problems(text: str, overrides=()) -> list[str]:
    with pytest.raises(SweepError) as e:
        parse(text, overrides)
    return e.value.problems


def grown(text: str, n: int) -> str:
    return text.replace("num_samples: 4", f"num_samples: {n}")


def test_points_are_trials_with_readable_ids_and_every_seed_trains_each_point():
    spec = parse(SEARCH)
    assert spec.ids == [f"C-VF-1h/search={k:04d}/seed={s}" for k in range(4) for s in (0, 1)]
    by_id = {t.id: t for t in spec.trials}
    for k in range(4):
        a, b = by_id[f"C-VF-1h/search={k:04d}/seed=0"], by_id[f"C-VF-1h/search={k:04d}/seed=1"]
        assert a.config.replace(seed=1) == b.config  # the point is the same for every seed
        lr0, lr1 = a.config.lr_tab
        assert 0.001 <= lr0 <= 0.1 and 0.5 <= lr1 / lr0 <= 4  # ratio_to: entry 1 is entry 0 times the draw
        assert 0.1 <= a.config.beta <= 0.5
        assert a.grid == {"search": k, "lr_tab": list(a.config.lr_tab), "beta": a.config.beta, "seed": 0}
    assert len({t.config.beta for t in spec.trials}) == 4


def test_points_are_reproducible_from_the_seed_and_kept_when_num_samples_grows():
    first, again = parse(SEARCH), parse(SEARCH)
    assert first.trials == again.trials
    more = parse(grown(SEARCH, 7))
    assert more.trials[:8] == first.trials and len(more.trials) == 14
    change = compare([t.record() for t in first.trials], more.trials)
    assert change.growth.startswith("6 trial(s) added") and not change.refused
    other = parse(SEARCH.replace("seed: 5", "seed: 6"))
    assert [t.config.beta for t in other.trials] != [t.config.beta for t in first.trials]
    assert compare([t.record() for t in first.trials], other.trials).refused  # another search: refused


def test_a_search_point_is_drawn_by_tunes_domain_from_its_own_stream():
    import numpy as np
    from ray import tune

    spec = parse(SEARCH).search
    rng = np.random.default_rng([5, 3])
    lr0 = tune.loguniform(0.001, 0.1).sample(random_state=rng)
    ratio = tune.loguniform(0.5, 4).sample(random_state=rng)
    beta = tune.uniform(0.1, 0.5).sample(random_state=rng)
    assert spec.point(3) == {"lr_tab": [lr0, lr0 * ratio], "beta": beta}
    assert spec.log_fields() == ["lr_tab[0]"]


def test_sweep_json_records_the_search_and_its_points(tmp_path):
    spec = parse(SEARCH)
    trials = resolve_trials(spec.trials, tmp_path)
    record = json.loads(json.dumps(sweep_record(spec, trials, make_packs(trials, 9))))
    assert record["search"]["seed"] == 5 and record["search"]["num_samples"] == 4
    assert record["search"]["space"]["lr_tab"][1] == {"loguniform": [0.5, 4], "ratio_to": 0}
    assert [r["grid"]["beta"] for r in record["trials"]] == [t.config.beta for t in spec.trials]
    assert record["packs"] == [spec.ids]  # packed like a grid: one structure, 8 trials


def test_grid_fields_combine_with_the_search_and_other_spaces():
    spec = parse("""\
        name: s
        base: {size_tab: [10, 16, 784], lr_tab: [0.01, 0.02], rule: vf}
        grid: {angle: [0, 90], seed: [0]}
        search:
          num_samples: 2
          space:
            T: {randint: [5, 9]}
            activation: {choice: [sigm, tanh]}
            dt: {quniform: [0.1, 0.5, 0.1]}
        """)
    assert spec.ids == ["search=0000/angle=0/seed=0", "search=0000/angle=90/seed=0",
                        "search=0001/angle=0/seed=0", "search=0001/angle=90/seed=0"]
    for t in spec.trials:
        assert 5 <= t.config.T < 9 and t.config.activation in ("sigm", "tanh")
        assert round(t.config.dt * 10, 9).is_integer() and isinstance(t.config.T, int)


BAD = """\
name: s
base: {size_tab: [10, 16, 784], beta: 0.2}
grid: {seed: [0], angle: [0]}
search:
  num_sample: 3
  searcher: tpe
  metric: test_error
  scheduler: asha
  grace_period: 0
  space:
    beta: {uniform: [0.1, 0.5]}
    angle: {uniform: [0, 90]}
    seed: {randint: [0, 9]}
    lr_tab: [{loguniform: [0, 0.1]}, {logunif: [1, 2]}]
    dt: {uniform: [0.5, 0.1]}
    T: {randint: [1.5, 9]}
    Kmax: 3
    batch: {choice: [1, 2]}
    size_tab: [10, {randint: [8, 32]}, {randint: [1, 9], ratio_to: 2}]
"""


def test_every_bad_search_problem_is_one_line_with_its_path():
    got = problems(BAD)
    assert got == [
        "search.num_sample: unknown key; did you mean num_samples?",
        "search.space.seed: seed cannot be sampled; give the seeds as a grid (grid: {seed: [0, 1]}): every point "
        "trains with each",
        "search.space.lr_tab[0].loguniform: low 0 must be > 0 for a log-uniform space",
        "search.space.lr_tab[1]: unknown sample space 'logunif'; did you mean loguniform?; "
        "e.g. {loguniform: [0.001, 0.1]}",
        "search.space.dt.uniform: low 0.5 is not below high 0.1; give [low, high]",
        "search.space.T.randint: expected integers [low, high) (high excluded), got [1.5, 9]",
        "search.space.Kmax: expected a sample space like {loguniform: [0.001, 0.1]}, got 3; a fixed value belongs "
        "in base",
        "search.space.batch: unknown trial field 'batch'; did you mean batch_size?",
        "search.space.size_tab[2].ratio_to: 2 is itself a ratio (or this entry); name an entry that is sampled or "
        "fixed",
        "search.num_samples: missing; how many points to draw, e.g. num_samples: 16",
        "search.grace_period: got 0; an integer from 1 to 1000000",
        "search.searcher: got 'tpe'; one of random, optuna, hyperopt",
        "search.metric: got 'test_error'; one of final_test_error, best_test_error, final_train_error; did you "
        "mean best_test_error?",
        "search.space.beta: also set in base.beta; remove one of them",
        "search.space.angle: also a grid key; remove one of them",
    ]
    assert len(got) == len(set(got))


def test_a_sampled_field_fixed_elsewhere_and_drawn_values_the_trial_refuses():
    text = SEARCH.replace("rule: vf", "beta: 0.2, rule: vf")
    assert problems(text) == ["search.space.beta: also set in base.beta; remove one of them"]
    assert problems(SEARCH, ["beta=0.3"]) == [
        "--set beta: beta is sampled by this sweep's search; edit search.space.beta instead"]
    assert problems(SEARCH.replace("grid: {seed: [0, 1]}", "grid: {seed: [0, 1], beta: [0.1]}")) == [
        "search.space.beta: also a grid key; remove one of them"]
    wrong_length = SEARCH.replace(", {loguniform: [0.5, 4], ratio_to: 0}]", "]")
    got = problems(wrong_length)
    assert len(got) == 1 and got[0].startswith("search.space.lr_tab: 2 values needed for size_tab")
    assert parse_search(None, []) is None
    assert problems(ASHA + "pack: 1\n") == [
        "search.scheduler: asha compares the members of a pack, and pack: 1 trains every trial alone, so nothing "
        "would be stopped; use pack: 2 or more (or auto), or scheduler: none"]


def test_bad_search_from_the_command_line_is_one_line_each_and_exit_2(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    p = subprocess.run([sys.executable, "-c", "from cep.sweep.cli import main; main()", str(path), "--storage",
                        str(tmp_path / "r")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert len(p.stderr.splitlines()) == len(problems(BAD))
    assert all(line.startswith("error: search.") for line in p.stderr.splitlines())
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------- adaptive searchers (Tune's, replayed from JSON)
OPTUNA = SEARCH.replace("  seed: 5\n", "  seed: 5\n  searcher: optuna\n")


def _score(point: dict) -> float:
    """A synthetic metric with a clear optimum, so that TPE (after its 10 random start-up points) has work."""
    return abs(math.log10(point["lr_tab"][0]) + 2) + abs(point["beta"] - 0.3)


def _rounds(search, n_rounds: int, per_round: int) -> None:
    for _ in range(n_rounds):
        entries = search.ask(per_round)
        points = search.points
        search.tell({e["k"]: _score(points[e["k"]]) for e in entries})


@pytest.mark.parametrize("searcher", ["optuna", "hyperopt"])
def test_a_replayed_searcher_suggests_what_the_uninterrupted_one_does(searcher):
    pytest.importorskip(searcher)
    from cep.sweep.searcher import AdaptiveSearch

    spec = parse(OPTUNA.replace("searcher: optuna", f"searcher: {searcher}")).search
    assert parse(OPTUNA).trials == ()  # an adaptive search's points come from its searcher, round by round
    whole = AdaptiveSearch(spec)
    _rounds(whole, 4, 4)  # 16 points: past TPE's random start-up
    killed = AdaptiveSearch(spec)
    _rounds(killed, 3, 4)
    killed.ask(4)  # a round asked (and recorded), then the process dies
    record = json.loads(json.dumps(killed.record()))  # all that survives: search.json
    warnings = []
    resumed = AdaptiveSearch(spec, record["rounds"], warn=warnings.append)
    assert warnings == [] and [e["k"] for e in resumed.pending] == [12, 13, 14, 15]
    assert resumed.points == whole.points[:16]
    points = resumed.points
    resumed.tell({e["k"]: _score(points[e["k"]]) for e in resumed.pending})
    assert resumed.ask(4) == whole.ask(4)  # the next suggestions: those of the uninterrupted run, bit for bit
    if searcher == "optuna":  # Optuna's study holds every point's result (pack members included)
        study = resumed.searcher._ot_study
        assert [t.value for t in study.trials[:16]] == [e["result"] for r in whole.rounds[:4] for e in r]


def test_a_replay_that_does_not_reproduce_says_so_and_keeps_the_recorded_points():
    pytest.importorskip("optuna")
    from cep.sweep.searcher import AdaptiveSearch

    spec = parse(OPTUNA).search
    first = AdaptiveSearch(spec)
    _rounds(first, 1, 2)
    rounds = json.loads(json.dumps(first.record()))["rounds"]
    rounds[0][1]["suggested"]["beta"] = 0.25
    warnings = []
    again = AdaptiveSearch(spec, rounds, warn=warnings.append)
    assert warnings == ["warning: search.json: replaying the recorded search did not reproduce the suggestions of "
                        "point(s) 1 (another optuna version?); continuing from the recorded points"]
    assert again.points[1]["beta"] == 0.25


def test_a_damaged_search_record_is_one_line(tmp_path):
    from cep.sweep.searcher import SEARCH_FILE, read_search_record

    spec = parse(OPTUNA).search
    for text in ("{", json.dumps({"searcher": "optuna", "seed": 5, "rounds": [[{"k": 0, "suggested": {"x": 1}}]]}),
                 json.dumps({"searcher": "optuna", "seed": 5, "rounds": 3}), "[]"):
        (tmp_path / SEARCH_FILE).write_text(text)
        with pytest.raises(SweepError) as e:
            read_search_record(tmp_path, spec)
        assert len(e.value.problems) == 1 and e.value.problems[0].startswith(f"{tmp_path / SEARCH_FILE}: damaged")
    (tmp_path / SEARCH_FILE).write_text(json.dumps({"searcher": "hyperopt", "seed": 5, "rounds": []}))
    with pytest.raises(SweepError) as e:
        read_search_record(tmp_path, spec)
    assert e.value.problems == [f"{tmp_path / SEARCH_FILE}: recorded by another search ('hyperopt', seed 5; this one: "
                                "optuna, seed 5); rerun with --name NEW to keep it and start another, or --restart "
                                "to discard it"]


def test_a_missing_searcher_library_is_one_line_naming_the_extra(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(OPTUNA)
    code = ("import sys; sys.modules['optuna'] = None\n"  # as without the optuna extra
            "from cep.sweep.cli import main; main()")
    p = subprocess.run([sys.executable, "-c", code, str(path), "--storage", str(tmp_path / "r")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr == ('error: search.searcher: optuna needs the optuna package; install it '
                                              'with pip install -e ".[optuna]" (or pip install optuna)\n')
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------- schedulers per member of a pack
ASHA = """\
name: asha
base: {size_tab: [10, 16, 784], train_samples: 200, test_samples: 100, epochs: 4, T: 5, Kmax: 2, batch_size: 20,
       rule: vf, continual: true, dtype: float64}
grid: {seed: [0]}
search:
  num_samples: 4
  seed: 1
  scheduler: asha
  grace_period: 1
  reduction_factor: 2
  space:
    lr_tab: [{loguniform: [0.0005, 0.5]}, {loguniform: [0.5, 2], ratio_to: 0}]
"""


def _train_pack(text: str, folder, ids=None):
    """The sweep's one pack through the Tune trainable, called directly (tune.report is a no-op outside Tune)."""
    from cep.sweep.scheduling import scheduler_settings
    from cep.sweep.trainable import TrialContext, run_pack_trial

    spec = parse(text)
    trials = [t for t in resolve_trials(spec.trials, folder) if ids is None or t.id in ids]
    ctx = TrialContext({t.id: t.config.to_dict() for t in trials}, {"cpu": 1.0, "gpu": 0.0},
                       {"pack": tuple(t.id for t in trials)}, scheduler=scheduler_settings(spec.search))
    run_pack_trial({"trial_id": "pack"}, ctx)
    return {t.id: folder / "trials" / t.id for t in trials}


def test_asha_stops_members_of_a_pack_and_the_others_train_on_unchanged(tmp_path):
    from trial_files import log_lines, metrics, summary

    from cep.results import read_folder

    stopped = _train_pack(ASHA, tmp_path / "asha")
    states = {i: summary(f) for i, f in stopped.items()}
    halted = [i for i, s in states.items() if s["status"] == "stopped"]
    assert halted and len(halted) < len(states)  # ASHA stops some members, not all
    for i in halted:
        epoch = states[i]["stopped"]["epoch"]
        assert states[i]["stopped"] == {"epoch": epoch, "by": "ASHA"} and epoch < 4
        assert f"stopped at epoch {epoch} by ASHA" in log_lines(stopped[i])
        assert len(metrics(stopped[i])) == epoch
        st = read_folder(stopped[i], "train", 4)
        assert st.complete and st.detail(stopped[i]) == f"stopped at epoch {epoch} by ASHA"
    # the others equal, in float64, their run in the pack without any scheduler
    free = _train_pack(ASHA.replace("scheduler: asha", "scheduler: none"), tmp_path / "none")
    for i, f in stopped.items():
        ran = metrics(f)
        assert ran == metrics(free[i])[:len(ran)], i
    # a rerun (the pack resumed from its folders) replays the decisions: nothing trains, nothing changes
    before = {i: metrics(f) for i, f in stopped.items()}
    _train_pack(ASHA, tmp_path / "asha")
    assert before == {i: metrics(f) for i, f in stopped.items()}
    assert all(summary(f)["status"] == states[i]["status"] for i, f in stopped.items())
    # --trial ID --local replays the pack with its scheduler: the stopped member stops there too
    from cep.sweep.local import run_local

    local = tmp_path / "local"
    assert run_local(parse(ASHA), halted[0], str(local), alone=False) == 0
    assert metrics(local) == metrics(stopped[halted[0]]) and summary(local)["status"] == "stopped"
    # the summary counts and names them
    from cep.aggregate.summary import aggregate_experiment
    from cep.sweep.store import write_sweep_record

    spec = parse(ASHA)
    write_sweep_record(tmp_path / "asha", sweep_record(spec, resolve_trials(spec.trials, tmp_path / "asha")))
    agg = aggregate_experiment(tmp_path / "asha")
    assert f"{len(halted)} stopped by the search's scheduler" in agg.experiment.banner
    assert "scheduler asha" in (tmp_path / "asha" / "summary" / "table.md").read_text()


# ------------------------------------------------------------- the summary of a search
def test_the_summary_of_a_search_ranks_points_over_their_seeds_in_every_output(tmp_path, capsys):
    from cep.aggregate.search_report import search_report
    from cep.aggregate.summary import aggregate_experiment
    from cep.sweep.store import write_sweep_record

    text = ASHA.replace("seed: [0]", "seed: [0, 1]").replace("num_samples: 4", "num_samples: 2").replace(
        "scheduler: asha", "scheduler: none").replace("epochs: 4", "epochs: 2")
    folders = _train_pack(text, tmp_path)
    spec = parse(text)
    write_sweep_record(tmp_path, sweep_record(spec, resolve_trials(spec.trials, tmp_path)))
    agg = aggregate_experiment(tmp_path, echo=True)
    report = search_report(agg.experiment)
    assert report.dims == ["lr_tab[0]", "lr_tab[1]"] and report.log_dims == ["lr_tab[0]", "lr_tab[1]"]
    finals = {i: json.loads((f / "summary.json").read_text())["final"]["test_error"] for i, f in folders.items()}
    means = [(finals[f"search={k:04d}/seed=0"] + finals[f"search={k:04d}/seed=1"]) / 2 for k in range(2)]
    assert [p.metric.mean for p in report.points] == pytest.approx(means)
    assert [p.metric.n for p in report.points] == [2, 2]
    assert [p.k for p in report.ranked] == sorted(range(2), key=lambda k: (means[k], k))
    assert report.best_so_far() == pytest.approx([means[0], min(means)])
    md = (tmp_path / "summary" / "table.md").read_text()
    assert "## Search: the 2 best points" in md and "| Rank | Point |" in md
    assert "![Metric versus each searched field](search_fields.png)" in md
    html = (tmp_path / "summary" / "index.html").read_text()
    assert "<h2>Search: the 2 best points</h2>" in html and 'src="search_progress.png"' in html
    assert (tmp_path / "summary" / "search_fields.png").stat().st_size > 0
    out = capsys.readouterr().out
    assert "random search, 2 point(s), final_test_error (min)" in out and "best so far after each point" in out


def test_the_search_sweep_file_samples_the_rates_around_the_papers():
    from pathlib import Path

    from cep.sweep.spec import load_sweep

    spec = load_sweep(Path(__file__).parents[1] / "sweeps" / "search_cvf_rates.yaml")
    assert spec.search.scheduler == "asha" and spec.search.log_fields() == ["lr_tab[0]", "lr_tab[1]"]
    assert len(spec.trials) == 16 and {t.config.seed for t in spec.trials} == {0, 1}
    for t in spec.trials:
        lr0, lr1 = t.config.lr_tab
        assert 0.0038 / 3 <= lr0 <= 0.0038 * 3 and 0.0076 / 3 <= lr1 <= 0.0076 * 3
        assert t.config.dataset == "mnist5k" and t.config.rule == "vf" and t.config.continual


def test_dry_run_of_a_new_adaptive_search_says_how_it_will_ask(tmp_path, capsys):
    pytest.importorskip("optuna")
    from cep.sweep.cli import main

    path = tmp_path / "s.yaml"
    path.write_text(OPTUNA + "pack: 4\n")
    with pytest.raises(SystemExit) as e:
        main([str(path), "--storage", str(tmp_path / "r"), "--dry-run"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    assert "optuna search: 4 point(s), suggested in rounds of 2 (one pack each)" in out  # 2 seeds per point
    assert not (tmp_path / "r").exists()
