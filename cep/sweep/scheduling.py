"""A search's trial scheduler (Tune's ASHAScheduler, MedianStoppingRule) deciding per member of a pack.

Tune's schedulers stop Tune trials; a pack is one Tune trial, so its members are fed to a scheduler object
of their own through its public interface (on_trial_add, on_trial_result) with a stand-in per member. A
member it stops is frozen like a diverged one (status `stopped`, complete, never rerun); the others train on
unchanged. The decisions depend only on the members' metrics in round order, so a resumed pack replays its
members' histories into a fresh scheduler and gets the same decisions (nothing of Tune's is saved).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

NAMES = {"asha": "ASHA", "median": "median stopping"}


@dataclass(frozen=True)
class _Member:
    """What Tune's schedulers read of a trial: its id (and hash)."""

    trial_id: str


class _NoController:
    """The Tune controller a scheduler may ask for other live trials: a pack's scheduler sees only its own."""

    def get_live_trials(self) -> list[Any]:
        return []


def scheduler_settings(search: Any) -> dict[str, Any] | None:
    """The plain settings a trainable needs (None: no scheduler): name, metric, mode and options."""
    if search is None or search.scheduler == "none":
        return None
    return {"scheduler": search.scheduler, "metric": search.metric, "mode": search.mode,
            "grace_period": search.grace_period, "reduction_factor": search.reduction_factor,
            "min_samples_required": search.min_samples_required}


def _score(settings: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> float:
    """The search metric after the last epoch of `history` (best: the best so far)."""
    if settings["metric"] == "best_test_error":
        return min(float(r["test_error"]) for r in history)
    return float(history[-1]["train_error" if settings["metric"] == "final_train_error" else "test_error"])


class PackScheduler:
    """Tune's scheduler over the members of one pack; `decide` after each of a member's epochs."""

    def __init__(self, settings: Mapping[str, Any], ids: Sequence[str], epochs: int):
        from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule

        self.settings, self.epochs = dict(settings), epochs
        self.name = NAMES[settings["scheduler"]]
        if settings["scheduler"] == "asha":
            self.scheduler: Any = ASHAScheduler(time_attr="epoch", metric="score", mode=settings["mode"],
                                                max_t=max(1, epochs), grace_period=settings["grace_period"],
                                                reduction_factor=settings["reduction_factor"])
        else:
            self.scheduler = MedianStoppingRule(time_attr="epoch", metric="score", mode=settings["mode"],
                                                grace_period=settings["grace_period"],
                                                min_samples_required=settings["min_samples_required"],
                                                hard_stop=True)
        self.members = {i: _Member(i) for i in ids}
        for m in self.members.values():
            self.scheduler.on_trial_add(_NoController(), m)

    def decide(self, trial_id: str, history: Sequence[Mapping[str, Any]]) -> bool:
        """Whether the member stops after its last epoch (never at its final epoch: it has ended anyway)."""
        from ray.tune.schedulers import TrialScheduler

        epoch = int(history[-1]["epoch"])
        result = {"epoch": epoch, "score": _score(self.settings, history)}
        action = self.scheduler.on_trial_result(_NoController(), self.members[trial_id], result)
        return action == TrialScheduler.STOP and epoch < self.epochs

    def replay(self, histories: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, int]:
        """Feed resumed members' histories in round order (epoch by epoch, members in pack order); returns the
        epoch at which each stopped member stopped."""
        stopped: dict[str, int] = {}
        longest = max((len(h) for h in histories.values()), default=0)
        for e in range(1, longest + 1):
            for i, h in histories.items():
                if i not in stopped and len(h) >= e and self.decide(i, h[:e]):
                    stopped[i] = e
        return stopped


    def after_round(self, trained: Sequence[Any]) -> None:
        """After a round (cep.runner.rounds: each trained member's id and state, in pack order): stop
        (freeze) the running members the scheduler stops."""
        for e in trained:
            st = e.state
            if st.status == "running" and st.history and self.decide(e.id, st.history):
                stop(st, st.epoch, self.name)


def resume_scheduler(settings: Mapping[str, Any] | None, ids: Sequence[str], states: Sequence[Any | None],
                     epochs: int) -> PackScheduler | None:
    """The scheduler of a pack whose members resume at `states` (TrainState or None), its earlier decisions
    replayed from their histories: a member it had stopped is stopped again before anything trains."""
    if settings is None:
        return None
    scheduler = PackScheduler(settings, ids, epochs)
    by_id = {i: st for i, st in zip(ids, states, strict=True) if st is not None}
    for i, epoch in scheduler.replay({i: st.history for i, st in by_id.items()}).items():
        if by_id[i].status == "running" and by_id[i].epoch == epoch:
            stop(by_id[i], epoch, scheduler.name)
    return scheduler


def stop(state: Any, epoch: int, by: str) -> None:
    """Freeze a member its scheduler stopped (like a diverged one: the pack trains on without it)."""
    from cep.results import append_log

    state.status = "stopped"
    state.info["stopped"] = stop_info(by, epoch)
    if state.config.out_dir:
        append_log(state.config.out_dir, f"stopped at epoch {epoch} by {by}")


def stop_info(name: str, epoch: int) -> dict[str, Any]:
    """A stopped member's summary.json record."""
    return {"epoch": epoch, "by": name}
