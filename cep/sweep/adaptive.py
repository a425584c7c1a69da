"""Run an adaptive search round by round: ask the searcher for one pack of points, train it, tell the results.

One fresh Tuner per round (the round's pack is one Tune trial; cep.sweep.driver): the searcher lives here in
the driver, never inside Tune, so its whole state is the ask/tell sequence of search.json, and exact resume
is a replay of it (cep.sweep.searcher). A killed round's points are recorded before they train: the rerun
replays the searcher, finds that round without results and resumes its trials from their checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cep.layout import Trial
from cep.results import FolderState
from cep.sweep.plan import pack_sizes, sweep_packs
from cep.sweep.searcher import AdaptiveSearch, point_metric, read_search_record, to_point, write_search_record
from cep.sweep.spec import SweepSpec, parse_sweep
from cep.sweep.store import grown_record, outcomes, pack_plan, resolve_trials, sweep_record, write_sweep_record

if TYPE_CHECKING:
    from cep.sweep.driver import SweepRun


def with_points(spec: SweepSpec, points: Sequence[dict[str, Any]], rounds: Sequence[int] = ()) -> SweepSpec:
    """The sweep with these search points (an adaptive search's suggestions so far) as its trials; `rounds`:
    the points of each round, the packs they train in (cep.sweep.plan.sweep_packs)."""
    data, overrides = spec.raw
    return replace(parse_sweep(data, overrides, source=spec.source, points=points), rounds=tuple(rounds))


def searched_spec(spec: SweepSpec, search: AdaptiveSearch) -> SweepSpec:
    """The sweep with the search's points so far, round by round."""
    return with_points(spec, search.points, [len(r) for r in search.rounds])


def recorded_spec(spec: SweepSpec, exp_dir: Path) -> SweepSpec:
    """For an adaptive search: the sweep with the points search.json records (none in a new experiment)."""
    if spec.search is None or not spec.search.adaptive:
        return spec
    rounds = read_search_record(exp_dir, spec.search)
    points = [to_point(spec.search, e["suggested"]) for r in rounds for e in r]
    return with_points(spec, points, [len(r) for r in rounds]) if rounds else spec


def points_per_round(spec: SweepSpec) -> int:
    """Points per round: as many as fill one pack with all their trials (seeds, grid points); at least one."""
    one = first_point_trials(spec)
    return max(1, pack_sizes(spec)(one[0].config) // len(one))


def first_point_trials(spec: SweepSpec) -> tuple[Trial, ...]:
    """The trials of one search point (the sweep's own trials when it has some): what the sizing of packs sees."""
    assert spec.search is not None
    return spec.trials or with_points(spec, [spec.search.point(0)]).trials


def run_adaptive(run: SweepRun, record: dict[str, Any] | None, say: Callable[[str], None]
                 ) -> tuple[list[Trial], dict[str, FolderState]]:
    """Rounds until num_samples points have results (or a stop, or a round that did not complete); returns
    every trial of the search so far and their outcomes."""
    import ray

    from cep.sweep.driver import start_ray

    spec, exp = run.spec, run.exp_dir
    search_spec = spec.search
    assert search_spec is not None
    search = AdaptiveSearch(search_spec, read_search_record(exp, search_spec), warn=say)
    per_round = points_per_round(spec)
    trials: list[Trial] = resolve_trials(with_points(spec, search.points).trials, exp) if search.points else []
    started = start_ray(run)
    try:
        # first what the told rounds miss (a deleted or damaged folder, --restart --only): rerun as a grid trial is
        told = [t for t in trials if t.grid["search"] < len(search.points) - len(search.pending)]
        if run.stop_signal is None and _train(run, searched_spec(spec, search), told):
            while run.stop_signal is None:
                if not search.pending:
                    if len(search.points) >= search_spec.num_samples:
                        break
                    search.ask(min(per_round, search_spec.num_samples - len(search.points)))
                    searched_spec(spec, search)  # a suggestion a trial refuses: said before it is recorded
                    write_search_record(exp, search)  # before its trials start: a rerun resumes this round
                current = searched_spec(spec, search)
                trials = resolve_trials(current.trials, exp)
                record = _write_record(exp, record, current, trials)
                ks = {e["k"] for e in search.pending}
                members = [t for t in trials if t.grid["search"] in ks]
                say(f"search round {len(search.rounds)}: point(s) {min(ks)}-{max(ks)} of {search_spec.num_samples} "
                    f"({search_spec.searcher}), {len(members)} trial(s)")
                if not _train(run, current, members):
                    break
                done = outcomes(exp, members)
                search.tell({k: point_metric(search_spec, [done[t.id].summary for t in members
                                                           if t.grid["search"] == k]) for k in sorted(ks)})
                write_search_record(exp, search)
    finally:
        if started:
            ray.shutdown()
    return trials, outcomes(exp, trials)


def _train(run: SweepRun, spec: SweepSpec, members: list[Trial]) -> bool:
    """Train the packs of `members` that have an incomplete trial; whether all are complete (and not stopped)."""
    from cep.sweep.driver import execute_sweep

    done = outcomes(run.exp_dir, members)
    run.packs = [p for p in sweep_packs(spec, members) if not all(done[t.id].complete for t in p.members)]
    run.trials = [t for p in run.packs for t in p.members]
    if run.packs:
        execute_sweep(run)
    done = outcomes(run.exp_dir, members)
    return run.stop_signal is None and all(o.complete for o in done.values())


def _write_record(exp: Path, record: dict[str, Any] | None, spec: SweepSpec, trials: list[Trial]
                  ) -> dict[str, Any]:
    """sweep.json for the search's trials so far (new, or grown by this round's points), with the packs each
    trial trains in, round by round."""
    new = sweep_record(spec, trials) if record is None else grown_record(record, spec, trials)
    if new is not None:
        new["packs"] = pack_plan(sweep_packs(spec, trials))
        write_sweep_record(exp, new)
    return new or record  # type: ignore[return-value]
