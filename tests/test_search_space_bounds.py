"""Every value a searcher may suggest is checked as a trial field when the sweep file is read (so --dry-run
catches it), and sample spaces that Tune, Optuna or numpy would crash on are one line with the fix."""

from __future__ import annotations

import pytest
from cli_runs import one_error_line, run_cli

from cep.sweep.search_space import parse_search
from cep.sweep.spec import SweepError, parse_sweep

BASE = {"dataset": "mnist5k", "epochs": 1, "train_samples": 40, "test_samples": 20, "size_tab": [10, 8, 784]}


def sweep(search: dict) -> dict:
    return {"name": "s", "base": dict(BASE), "search": {"num_samples": 2, **search}}


@pytest.mark.parametrize("space,seed,needle", [
    ({"beta": {"quniform": [0.1, 0.45, 0.2]}}, 0, "multiples of q"),
    ({"beta": {"uniform": [0.1, float("inf")]}}, 0, "finite numbers"),
    ({"beta": {"uniform": [float("-inf"), 0.5]}}, 0, "finite numbers"),
    ({"beta": {"loguniform": [0.1, 10**400]}}, 0, "finite numbers"),
    ({"T": {"randint": [1, 2**70]}}, 0, "64-bit"),
    ({"T": {"randint": [-(2**64), 5]}}, 0, "64-bit"),
    ({"beta": {"uniform": [0.1, 0.5]}}, 2**32, "search.seed"),
])
@pytest.mark.parametrize("searcher", ["random", "optuna", "hyperopt"])
def test_a_space_the_searcher_would_crash_on_is_one_line(space, seed, needle, searcher):
    problems: list[str] = []
    parse_search({"space": space, "num_samples": 2, "seed": seed, "searcher": searcher}, problems)
    assert len(problems) == 1 and needle in problems[0], problems


def test_the_largest_allowed_seed_and_bounds_still_draw():
    from cep.sweep.searcher import AdaptiveSearch

    problems: list[str] = []
    search = parse_search({"space": {"T": {"randint": [1, 2**63 - 1]}, "beta": {"quniform": [0.1, 0.5, 0.1]}},
                           "num_samples": 2, "seed": 2**32 - 1, "searcher": "optuna"}, problems)
    assert problems == []
    assert len(AdaptiveSearch(search).ask(2)) == 2


@pytest.mark.parametrize("searcher", ["random", "optuna"])
def test_a_ratio_whose_edge_is_no_valid_field_is_refused_when_read(searcher):
    data = sweep({"searcher": searcher, "space": {"lr_tab": [{"loguniform": [0.001, 0.1]},
                                                             {"uniform": [-2, 1], "ratio_to": 0}]}})
    with pytest.raises(SweepError) as e:
        parse_sweep(data)
    assert len(e.value.problems) == 1, e.value.problems
    assert e.value.problems[0].startswith("search.space.lr_tab: got [") and "must be >= 0" in e.value.problems[0]
    assert "edge of search.space" in e.value.problems[0]


def test_a_choice_of_an_invalid_list_is_refused_when_read():
    data = sweep({"searcher": "optuna", "space": {"size_tab": {"choice": [[10, 8, 784], [10, -8, 784]]}}})
    with pytest.raises(SweepError) as e:
        parse_sweep(data)
    assert any("search.space.size_tab" in p for p in e.value.problems), e.value.problems


def test_edges_that_are_valid_pass_and_every_choice_is_an_edge():
    spec = parse_sweep(sweep({"searcher": "optuna", "space": {
        "lr_tab": [{"loguniform": [0.001, 0.1]}, {"uniform": [0.5, 2], "ratio_to": 0}],
        "T": {"choice": [5, 6, 7]}}}))
    edges = spec.search.edge_points()
    assert {p["T"] for p in edges} == {5, 6, 7}
    products = {round(p["lr_tab"][1] / p["lr_tab"][0], 9) for p in edges}
    assert products == {0.5, 2.0}  # the factor at both of its edges
    assert {p["lr_tab"][0] for p in edges} == {0.001, 0.1}


def test_an_adaptive_dry_run_refuses_an_invalid_edge_in_one_line(tmp_path):
    (tmp_path / "a.yaml").write_text(
        "name: a\nbase: {dataset: mnist5k, epochs: 1, train_samples: 40, test_samples: 20, size_tab: [10, 8, 784]}\n"
        "search:\n  num_samples: 4\n  searcher: optuna\n  space:\n"
        "    lr_tab: [{loguniform: [0.001, 0.1]}, {uniform: [-2, -1], ratio_to: 0}]\n")
    proc = run_cli(["a.yaml", "--dry-run", "--storage", str(tmp_path / "st")], tmp_path)
    one_error_line(proc, "search.space.lr_tab", ">= 0")
    assert not (tmp_path / "st").exists()
