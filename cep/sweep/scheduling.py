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


def stop_info(name: str, epoch: int) -> dict[str, Any]:
    """A stopped member's summary.json record."""
    return {"epoch": epoch, "by": name}
