"""An adaptive search: Ray Tune's searcher (OptunaSearch, HyperOptSearch) asked in rounds, its history as JSON.

A thin adapter over Tune's Searcher interface (`suggest`, `on_trial_complete`): each round asks for the
points of one pack, and tells every point's result (the mean over its seeds) once the pack is done.
`search.json` in the experiment records every round's suggestions and results; nothing is pickled: a
rerun builds a fresh searcher with the same seed and replays the recorded ask/tell sequence into it, so its
next suggestions are those of an uninterrupted run (a replay that does not reproduce a recorded suggestion
says so and continues from the recorded points).
"""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cep.reading import JSON_BYTES, parse_json
from cep.safe_files import LinkRefused, read_bytes, write_atomic
from cep.sweep.search_space import EXTRAS, Dist, SearchSpec
from cep.sweep.spec import SweepError

SEARCH_FILE = "search.json"
WORST = 100.0  # the metric (an error in percent) of a point whose trials have none (diverged at once): the worst


def flat_space(search: SearchSpec) -> dict[str, Dist]:
    """The searched dimensions by name: `beta`, `lr_tab[0]` (a ratio entry is its factor)."""
    out: dict[str, Dist] = {}
    for name, space in search.space.items():
        if isinstance(space, Dist):
            out[name] = space
        else:
            out.update({f"{name}[{i}]": e for i, e in enumerate(space) if isinstance(e, Dist)})
    return out


def to_point(search: SearchSpec, flat: Mapping[str, Any]) -> dict[str, Any]:
    """A suggestion (flat dimensions) as trial fields, ratios applied."""
    out: dict[str, Any] = {}
    for name, space in search.space.items():
        if isinstance(space, Dist):
            out[name] = flat[name]
            continue
        entries = [flat[f"{name}[{i}]"] if isinstance(e, Dist) else e for i, e in enumerate(space)]
        for i, e in enumerate(space):
            if isinstance(e, Dist) and e.ratio_to is not None:
                entries[i] = entries[e.ratio_to] * entries[i]
        out[name] = entries
    return out


def searcher_problems(search: SearchSpec | None) -> list[str]:
    """A searcher whose library is missing: one line naming the extra that installs it (nothing imported)."""
    if search is None or not search.adaptive or importlib.util.find_spec(search.searcher) is not None:
        return []
    return [f"search.searcher: {search.searcher} needs the {search.searcher} package; install it with "
            f"pip install -e \".[{EXTRAS[search.searcher]}]\" (or pip install {search.searcher})"]


def make_searcher(search: SearchSpec) -> Any:
    """A fresh Tune searcher for the search (seeded); a missing library is one line naming the extra."""
    problems = searcher_problems(search)
    if problems:
        raise SweepError(problems)
    space = {k: d.domain() for k, d in flat_space(search).items()}
    if search.searcher == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return OptunaSearch(space=OptunaSearch.convert_search_space(space), metric="score", mode=search.mode,
                            seed=search.seed)
    from ray.tune.search.hyperopt import HyperOptSearch

    return HyperOptSearch(space=HyperOptSearch.convert_search_space(space), metric="score", mode=search.mode,
                          random_state_seed=search.seed)


def _plain(flat: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v.item() if hasattr(v, "item") else v for k, v in flat.items()}


class AdaptiveSearch:
    """The searcher and its recorded rounds: [[{"k", "suggested", "result"}, ...], ...] in ask/tell order."""

    def __init__(self, search: SearchSpec, rounds: Sequence[Sequence[Mapping[str, Any]]] = (),
                 warn: Callable[[str], None] = print):
        self.search = search
        self.searcher = make_searcher(search)
        self.rounds: list[list[dict[str, Any]]] = []
        self._replay(rounds, warn)

    @property
    def points(self) -> list[dict[str, Any]]:
        """Every suggested point so far, by k, as trial fields."""
        return [to_point(self.search, e["suggested"]) for r in self.rounds for e in r]

    @property
    def pending(self) -> list[dict[str, Any]]:
        """The entries of the last round without a result (trained, or being trained, now)."""
        return [e for e in (self.rounds[-1] if self.rounds else []) if e["result"] is None]

    def _replay(self, rounds: Sequence[Sequence[Mapping[str, Any]]], warn: Callable[[str], None]) -> None:
        differs = []
        for recorded in rounds:
            entries = []
            for e in recorded:
                got = _plain(self.searcher.suggest(_tid(e["k"])))
                if got != e["suggested"]:
                    differs.append(e["k"])
                entries.append({"k": e["k"], "suggested": dict(e["suggested"]), "result": e["result"]})
            self.rounds.append(entries)
            for e in entries:
                if e["result"] is not None:
                    self.searcher.on_trial_complete(_tid(e["k"]), {"score": e["result"]})
        if differs:
            warn(f"warning: {SEARCH_FILE}: replaying the recorded search did not reproduce the suggestions of "
                 f"point(s) {', '.join(map(str, differs[:5]))} (another {self.search.searcher} version?); "
                 "continuing from the recorded points")

    def ask(self, n: int) -> list[dict[str, Any]]:
        """A new round of n suggestions (points k, k+1, ...)."""
        start = sum(len(r) for r in self.rounds)
        entries = [{"k": k, "suggested": _plain(self.searcher.suggest(_tid(k))), "result": None}
                   for k in range(start, start + n)]
        self.rounds.append(entries)
        return entries

    def tell(self, results: Mapping[int, float]) -> None:
        """The last round's results, in k order (the order a replay tells them)."""
        for e in self.pending:
            value = results[e["k"]]
            e["result"] = value
            self.searcher.on_trial_complete(_tid(e["k"]), {"score": value})

    def record(self) -> dict[str, Any]:
        return {"searcher": self.search.searcher, "seed": self.search.seed, "metric": self.search.metric,
                "mode": self.search.mode, "rounds": self.rounds}


def _tid(k: int) -> str:
    return f"point-{k:04d}"


def read_search_record(exp_dir: Path, search: SearchSpec) -> list[list[dict[str, Any]]]:
    """The recorded rounds of search.json (JSON only: never unpickled); [] when absent. A damaged or foreign
    file is a SweepError naming the ways out."""
    path = Path(exp_dir) / SEARCH_FILE
    if not path.exists():
        return []
    names = set(flat_space(search))
    try:
        data = parse_json(read_bytes(path, limit=JSON_BYTES, what=SEARCH_FILE))  # no link, a bounded size
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if (data.get("searcher"), data.get("seed")) != (search.searcher, search.seed):
            raise SweepError([f"{path}: recorded by another search ({data.get('searcher')!r}, seed "
                              f"{data.get('seed')!r}; this one: {search.searcher}, seed {search.seed}); rerun with "
                              "--name NEW to keep it and start another, or --restart to discard it"])
        rounds = data.get("rounds")
        k = 0
        for r in rounds:
            for e in r:
                ok = (e.get("k") == k and isinstance(e.get("suggested"), dict) and set(e["suggested"]) == names
                      and all(_number(v) for v in e["suggested"].values())
                      and (e.get("result") is None or _number(e["result"])))
                if not ok:
                    raise ValueError(f"entry {k} is not a point of this search space")
                k += 1
    except SweepError:
        raise
    except LinkRefused as e:
        raise SweepError([str(e)]) from None
    except (OSError, ValueError, TypeError, AttributeError) as e:
        why = " ".join(str(e).split())[:160]
        raise SweepError([f"{path}: damaged ({type(e).__name__}: {why}); restore it, or rerun with --restart to "
                          "discard the experiment (or --name NEW to keep it)"]) from None
    return rounds


def _number(v: Any) -> bool:
    return isinstance(v, (int, float, str)) and not isinstance(v, bool) and (
        isinstance(v, str) or math.isfinite(v))


def write_search_record(exp_dir: Path, search: AdaptiveSearch) -> None:
    write_atomic(Path(exp_dir) / SEARCH_FILE, json.dumps(search.record(), indent=1) + "\n")


def point_metric(search: SearchSpec, summaries: Sequence[Mapping[str, Any] | None]) -> float:
    """A point's result for the searcher: the mean of the metric over its trials (seeds); WORST without one."""
    values = []
    for s in summaries:
        s = s or {}
        final = s.get("final") if isinstance(s.get("final"), dict) else {}
        v = {"final_test_error": final.get("test_error"), "final_train_error": final.get("train_error"),
             "best_test_error": s.get("best_test_error")}[search.metric]
        values.append(float(v) if isinstance(v, (int, float)) and math.isfinite(v) else WORST)
    return sum(values) / len(values) if values else WORST
