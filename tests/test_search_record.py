"""search.json is read back as strictly as the sweep file: every value type a space allows (booleans, lists
from `choice`) resumes, anything a space cannot suggest or a result that is no finite number is damage, the
file holds at most num_samples points, and a search whose metric or mode changed is refused in one line."""

from __future__ import annotations

import json
import time

import pytest

from cep.sweep.searcher import SEARCH_FILE, AdaptiveSearch, read_search_record, write_search_record
from cep.sweep.spec import SweepError, parse_sweep

BASE = {"dataset": "mnist5k", "epochs": 1, "train_samples": 40, "test_samples": 20, "size_tab": [10, 8, 784]}
SPACE = {"stop_on_collapse": {"choice": [True, False]}, "size_tab": {"choice": [[10, 8, 784], [10, 16, 784]]},
         "T": {"quniform": [2, 10, 2]}, "Kmax": {"randint": [2, 5]}, "beta": {"uniform": [0.1, 0.5]}}


def search_spec(searcher: str = "optuna", n: int = 4, **kw):
    base = {k: v for k, v in BASE.items() if k != "size_tab"}
    return parse_sweep({"name": "s", "base": base, "search": {"num_samples": n, "searcher": searcher,
                                                               "space": SPACE, **kw}}).search


def recorded(tmp_path, searcher: str = "optuna", rounds: int = 2, per_round: int = 2) -> dict:
    search = AdaptiveSearch(search_spec(searcher))
    for r in range(rounds):
        search.ask(per_round)
        search.tell({e["k"]: 10.0 + e["k"] + r for e in search.pending})
    write_search_record(tmp_path, search)
    return json.loads((tmp_path / SEARCH_FILE).read_text())


@pytest.mark.parametrize("searcher", ["optuna", "hyperopt"])
def test_a_search_over_booleans_and_lists_resumes_from_its_own_record(searcher, tmp_path):
    pytest.importorskip(searcher)
    data = recorded(tmp_path, searcher)
    values = {type(v) for r in data["rounds"] for e in r for v in e["suggested"].values()}
    assert bool in values and list in values
    warnings: list[str] = []
    again = AdaptiveSearch(search_spec(searcher), read_search_record(tmp_path, search_spec(searcher)),
                           warn=warnings.append)
    assert warnings == [] and len(again.points) == 4  # replayed: the same suggestions, nothing called damaged


@pytest.mark.parametrize("edit,needle", [
    (lambda d: d["rounds"][0][0]["suggested"].update(stop_on_collapse="yes"), "stop_on_collapse 'yes'"),
    (lambda d: d["rounds"][0][0]["suggested"].update(size_tab=[10, 99, 784]), "size_tab"),
    (lambda d: d["rounds"][0][0]["suggested"].update(beta=7.0), "beta 7.0"),
    (lambda d: d["rounds"][0][0]["suggested"].update(Kmax=2.5), "Kmax 2.5"),
    (lambda d: d["rounds"][0][0]["suggested"].update(Kmax=True), "Kmax True"),
    (lambda d: d["rounds"][0][0].update(result="12.5"), "result '12.5'"),
    (lambda d: d["rounds"][0][0].update(result=True), "result True"),
    (lambda d: d["rounds"][0][0].update(result=None), "only the last round may be without results"),
    (lambda d: d["rounds"][0][0].update(result=1e999), "result inf"),
    (lambda d: d["rounds"].__setitem__(0, []), "round 0"),
    (lambda d: d["rounds"][1][0].update(k=7), "entry 2"),
])
def test_what_no_search_could_have_recorded_is_damage_in_one_line(edit, needle, tmp_path):
    data = recorded(tmp_path)
    edit(data)
    (tmp_path / SEARCH_FILE).write_text(json.dumps(data).replace("Infinity", "1e999"))
    with pytest.raises(SweepError) as e:
        read_search_record(tmp_path, search_spec())
    assert len(e.value.problems) == 1 and "damaged" in e.value.problems[0] and needle in e.value.problems[0], \
        e.value.problems


def test_the_last_round_may_be_without_results(tmp_path):
    data = recorded(tmp_path)
    for e in data["rounds"][-1]:
        e["result"] = None
    (tmp_path / SEARCH_FILE).write_text(json.dumps(data))
    assert len(read_search_record(tmp_path, search_spec())) == 2


def test_more_points_than_num_samples_are_refused_at_once(tmp_path):
    data = recorded(tmp_path)
    extra = dict(data["rounds"][0][0])
    data["rounds"].append([{**extra, "k": 4 + i} for i in range(20_000)])
    (tmp_path / SEARCH_FILE).write_text(json.dumps(data))
    start = time.process_time()
    with pytest.raises(SweepError) as e:
        read_search_record(tmp_path, search_spec())
    assert time.process_time() - start < 2
    assert e.value.problems == [f"search.num_samples: 4, but {tmp_path / SEARCH_FILE} records 20004 points; give "
                                "num_samples: 20004 or more to continue this search, or --name NEW to start another"]


def test_shrinking_num_samples_below_the_recorded_points_is_refused(tmp_path):
    recorded(tmp_path)
    with pytest.raises(SweepError) as e:
        read_search_record(tmp_path, search_spec(n=3))
    assert e.value.problems[0].startswith("search.num_samples: 3, but ") and "records 4 points" in e.value.problems[0]
    assert len(read_search_record(tmp_path, search_spec(n=6))) == 2  # growing continues it


@pytest.mark.parametrize("key,value", [("metric", "best_test_error"), ("mode", "max")])
def test_a_metric_or_mode_changed_mid_search_is_refused_in_one_line(key, value, tmp_path):
    recorded(tmp_path)
    with pytest.raises(SweepError) as e:
        read_search_record(tmp_path, search_spec(**{key: value}))
    line = e.value.problems[0]
    assert len(e.value.problems) == 1 and f"search.{key} is {value!r}" in line and "relabelled" in line
