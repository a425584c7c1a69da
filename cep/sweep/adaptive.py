"""Run an adaptive search round by round: ask the searcher for one pack of points, train it, tell the results.

One fresh Tuner per round (the round's pack is one Tune trial; cep.sweep.driver): the searcher lives here in
the driver, never inside Tune, so its whole state is the ask/tell sequence of search.json, and exact resume
is a replay of it (cep.sweep.searcher). A killed round's points are recorded before they train: the rerun
replays the searcher, finds that round without results and resumes its trials from their checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cep.layout import Trial
from cep.results import FolderState
from cep.sweep.plan import make_packs, pack_sizes
from cep.sweep.searcher import AdaptiveSearch, point_metric, read_search_record, to_point, write_search_record
from cep.sweep.spec import SweepSpec, parse_sweep
from cep.sweep.store import grown_record, outcomes, resolve_trials, sweep_record, write_sweep_record

if TYPE_CHECKING:
    from cep.sweep.driver import SweepRun


def with_points(spec: SweepSpec, points: Sequence[dict[str, Any]]) -> SweepSpec:
    """The sweep with these search points (an adaptive search's suggestions so far) as its trials."""
    data, overrides = spec.raw
    return parse_sweep(data, overrides, source=spec.source, points=points)


def recorded_spec(spec: SweepSpec, exp_dir: Path) -> SweepSpec:
    """For an adaptive search: the sweep with the points search.json records (none in a new experiment)."""
    if spec.search is None or not spec.search.adaptive:
        return spec
    rounds = read_search_record(exp_dir, spec.search)
    return with_points(spec, [to_point(spec.search, e["suggested"]) for r in rounds for e in r]) if rounds else spec


def points_per_round(spec: SweepSpec) -> int:
    """Points per round: as many as fill one pack with all their trials (seeds, grid points); at least one."""
    assert spec.search is not None
    one = with_points(spec, [spec.search.point(0)]).trials
    return max(1, pack_sizes(spec)(one[0].config) // len(one))


def run_adaptive(run: SweepRun, record: dict[str, Any] | None, say: Callable[[str], None]
                 ) -> tuple[list[Trial], dict[str, FolderState]]:
    """Rounds until num_samples points have results (or a stop, or a round that did not complete); returns
    every trial of the search so far and their outcomes."""
    import ray

    from cep.sweep.driver import execute_sweep, start_ray

    spec, exp = run.spec, run.exp_dir
    search_spec = spec.search
    assert search_spec is not None
    search = AdaptiveSearch(search_spec, read_search_record(exp, search_spec), warn=say)
    per_round = points_per_round(spec)
    trials: list[Trial] = resolve_trials(with_points(spec, search.points).trials, exp) if search.points else []
    started = start_ray(run)
    try:
        while run.stop_signal is None:
            if not search.pending:
                if len(search.points) >= search_spec.num_samples:
                    break
                search.ask(min(per_round, search_spec.num_samples - len(search.points)))
                write_search_record(exp, search)  # before its trials start: a rerun resumes this round
            current = with_points(spec, search.points)
            trials = resolve_trials(current.trials, exp)
            record = _write_record(exp, record, current, trials)
            ks = {e["k"] for e in search.pending}
            members = [t for t in trials if t.grid["search"] in ks]
            say(f"search round {len(search.rounds)}: point(s) {min(ks)}-{max(ks)} of {search_spec.num_samples} "
                f"({search_spec.searcher}), {len(members)} trial(s)")
            done = outcomes(exp, members)
            run.packs = [p for p in make_packs(members, pack_sizes(spec)) if not all(done[i].complete for i in p.ids)]
            run.trials = [t for p in run.packs for t in p.members]
            if run.packs:
                execute_sweep(run)
            done = outcomes(exp, members)
            if run.stop_signal is not None or not all(o.complete for o in done.values()):
                break
            search.tell({k: point_metric(search_spec, [done[t.id].summary for t in members if t.grid["search"] == k])
                         for k in sorted(ks)})
            write_search_record(exp, search)
    finally:
        if started:
            ray.shutdown()
    return trials, outcomes(exp, trials)


def _write_record(exp: Path, record: dict[str, Any] | None, spec: SweepSpec, trials: list[Trial]
                  ) -> dict[str, Any]:
    """sweep.json for the search's trials so far (new, or grown by this round's points)."""
    new = sweep_record(spec, trials, make_packs(trials, pack_sizes(spec))) if record is None else grown_record(
        record, spec, trials)
    if new is not None:
        write_sweep_record(exp, new)
    return new or record  # type: ignore[return-value]
