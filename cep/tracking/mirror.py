"""The mirror: after a round is saved, each tracker is given the trial folder to catch up with, in a
background thread of its own, so that a tracker that is down, slow or refusing never fails a trial and
holds up none of its rounds (one warning line; the next round catches up). Only a trial's end waits, at
most `timeout` seconds per tracker, for its last epochs and its outcome to be sent.

Callers: `mirror.round(trial_id, folder)` after each saved round, `mirror.close(trial_id, folder)` at a
trial's end. Nothing goes back from a tracker to training: both return nothing.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cep.layout import experiment_of, read_sweep_json
from cep.results import append_log
from cep.tracking.settings import Tracking, redact
from cep.tracking.trial_view import TrialView, view


def make_trackers(tracking: Tracking, experiment: str, root: Path) -> list[Any]:
    """The trackers `tracking` turns on (their libraries are checked before a sweep or run starts); one that
    cannot be made is a warning line, never the trial's failure."""
    def tensorboard() -> Any:
        from cep.tracking.tensorboard import TensorBoardTracker

        return TensorBoardTracker()

    def mlflow() -> Any:
        from cep.tracking.mlflow_run import MlflowTracker

        return MlflowTracker(tracking.mlflow_uri, tracking.mlflow_experiment or experiment, tracking.timeout)

    def wandb() -> Any:
        from cep.tracking.wandb_run import WandbTracker

        return WandbTracker(tracking.wandb_project, tracking.wandb_mode, tracking.wandb_entity,
                            tracking.wandb_dir or root, tracking.timeout)

    trackers: list[Any] = []
    for name, make in (("tensorboard", tensorboard), ("mlflow", mlflow), ("wandb", wandb)):
        if name not in tracking.names:
            continue
        try:
            trackers.append(make())
        except Exception as e:  # noqa: BLE001 (a tracker's failure is never the trial's)
            print(f"warning: {name}: cannot start ({type(e).__name__}: {redact(str(e))[:200]}); the trials run "
                  "without it (`cep-sweep track` can mirror them later)", file=sys.stderr, flush=True)
    return trackers


def prepare_trackers(tracking: dict[str, Any] | None, experiment: str, root: str | Path) -> None:
    """Before a sweep's trials start, in its driver: each tracker that needs it sets up what the trials share
    (MLflow: the experiment, and a new database's tables); a failure is a warning (the trials retry)."""
    t = Tracking.from_dict(tracking) if tracking is not None else Tracking(tensorboard=False)
    for tracker in make_trackers(t, experiment, Path(root)):
        if hasattr(tracker, "prepare"):
            try:
                tracker.prepare()
            except Exception as e:  # noqa: BLE001 (a tracker's failure is never the sweep's)
                print(f"warning: {tracker.name} ({redact(tracker.where())}): cannot prepare ({type(e).__name__}: "
                      f"{redact(' '.join(str(e).split())[:300], t.mlflow_uri)[:200]}); the trials will try again",
                      file=sys.stderr, flush=True)


def start_mirror(tracking: dict[str, Any] | None, experiment: str, root: str | Path,
                 packs: dict[str, str] | None = None) -> Mirror | NoMirror:
    """The mirror of a run's trials (a no-op when no tracker is on)."""
    t = Tracking.from_dict(tracking) if tracking is not None else Tracking(tensorboard=False)
    return Mirror(t, experiment, root, packs) if t.names else NoMirror()


def roots_of(folders: list[Path], ids: list[str]) -> Path:
    """The experiment folder of a pack's trial folders trials/<id>/."""
    return experiment_of(folders[0], ids[0])


class NoMirror:
    """No tracker: a round and an end are nothing to send."""

    def round(self, trial_id: str, folder: str | Path) -> None:
        pass

    def close(self, trial_id: str, folder: str | Path, wait: bool = True) -> None:
        pass


class _Feeder:
    """One tracker's background thread: a queue of trials to catch up with (a trial already waiting is not
    queued twice: it is read afresh when its turn comes)."""

    def __init__(self, tracker: Any, warn: Callable[[Any, TrialView | None, BaseException | None], None]):
        self.tracker, self.warn = tracker, warn
        self.jobs: queue.Queue[tuple[str, str, Callable[[], TrialView], threading.Event]] = queue.Queue()
        self.waiting: set[tuple[str, str]] = set()
        self.rounds: set[str] = set()  # trials this process sent a round of
        self.lock = threading.Lock()
        threading.Thread(target=self._work, daemon=True, name=f"cep-{tracker.name}").start()

    def submit(self, kind: str, trial_id: str, read: Callable[[], TrialView]) -> threading.Event:
        done = threading.Event()
        with self.lock:
            if kind == "round" and (kind, trial_id) in self.waiting:
                done.set()
                return done
            self.waiting.add((kind, trial_id))
        self.jobs.put((kind, trial_id, read, done))
        return done

    def _wanted(self, kind: str, v: TrialView) -> bool:
        """Whether to send `v`: never a folder refused or missing; an end only for a trial this process trained
        a round of, or one that has ended (a run refused before it began writes nothing)."""
        if v.status == "pending" or v.state.refused:
            return False
        if kind == "round":
            self.rounds.add(v.trial_id)
            return True
        return v.trial_id in self.rounds or v.state.complete

    def _work(self) -> None:
        while True:
            kind, trial_id, read, done = self.jobs.get()
            with self.lock:
                self.waiting.discard((kind, trial_id))
            v = None
            try:
                v = read()
                if not self._wanted(kind, v):
                    continue
                (self.tracker.close if kind == "close" else self.tracker.sync)(v)
                self.warn(self.tracker, v, None)
            except BaseException as e:  # a tracker's failure is never the trial's
                self.warn(self.tracker, v, e)
            finally:
                done.set()


class Mirror:
    """Feeds the trackers of `tracking` from trial folders of one experiment (`root`, its name `experiment`)."""

    def __init__(self, tracking: Tracking, experiment: str, root: str | Path, packs: dict[str, str] | None = None,
                 trackers: list[Any] | None = None):
        self.tracking, self.experiment, self.root = tracking, experiment, Path(root)
        self.packs = packs or {}  # trial id -> pack id
        self.grids = _grids(self.root)
        self.failing: set[str] = set()
        self.trackers = make_trackers(tracking, experiment, self.root) if trackers is None else trackers
        self.feeders = [_Feeder(t, self._warn) for t in self.trackers]

    def _read(self, trial_id: str, folder: str | Path) -> Callable[[], TrialView]:
        return lambda: view(trial_id, folder, self.experiment, self.grids.get(trial_id), self.packs.get(trial_id),
                            root=self.root)

    def round(self, trial_id: str, folder: str | Path) -> None:
        """A round of the trial is saved: each tracker catches up in the background (returns at once)."""
        for f in self.feeders:
            f.submit("round", trial_id, self._read(trial_id, folder))

    def close(self, trial_id: str, folder: str | Path, wait: bool = True) -> None:
        """The trial has ended (or stopped): each tracker gets its last epochs and outcome, waiting at most
        `timeout` seconds per tracker."""
        events = [f.submit("close", trial_id, self._read(trial_id, folder)) for f in self.feeders]
        for f, done in zip(self.feeders, events):
            if wait and not done.wait(self.tracking.timeout):
                self._say(f"warning: {f.tracker.name} ({redact(f.tracker.where())}) did not take trial {trial_id}'s "
                          f"end within {self.tracking.timeout:g} s; `cep-sweep track` can send it later", folder)

    def _warn(self, tracker: Any, v: TrialView | None, error: BaseException | None) -> None:
        """One line when a tracker starts failing (and one when it is back), not one per round; on stderr and
        in the trial's trial.log."""
        folder = v.folder if v is not None else None
        if error is None:
            if tracker.name in self.failing:
                self.failing.discard(tracker.name)
                self._say(f"{tracker.name} ({redact(tracker.where())}) reachable again; caught up", folder)
            return
        if tracker.name not in self.failing:
            self.failing.add(tracker.name)
            why = redact(" ".join(str(error).split())[:300], self.tracking.mlflow_uri)[:200]
            self._say(f"warning: {tracker.name} ({redact(tracker.where())}) failed for trial "
                      f"{v.trial_id if v else '?'} ({type(error).__name__}: {why}); training goes on, the next "
                      "round catches up", folder)

    def _say(self, line: str, folder: str | Path | None = None) -> None:
        print(line, file=sys.stderr, flush=True)
        if folder is not None:
            try:
                append_log(folder, line)
            except Exception:  # a trial.log that cannot take the line: stderr has it
                pass


def _grids(root: Path) -> dict[str, dict[str, Any]]:
    """Each trial's grid values from sweep.json (tags and hparams); {} outside a sweep."""
    try:
        record = read_sweep_json(root)
    except Exception:  # no sweep.json (cep train), or unreadable: the runs simply have no grid tags
        return {}
    trials = record.get("trials") if isinstance(record, dict) else None
    return {t["id"]: t["grid"] for t in trials or [] if isinstance(t, dict) and isinstance(t.get("grid"), dict)
            and isinstance(t.get("id"), str)}
