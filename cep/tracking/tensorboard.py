"""TensorBoard: the trial folder is the run folder (its event files beside metrics.csv), so that
`tensorboard --logdir results/NAME` lists the trials by id; each epoch is one step.

Exactly once across kills: events are written synchronously (tensorboardX's own writer queues them to a
thread, so its flush does not mean they are in the file) and flushed before tracking-tensorboard.json
records the epochs written; a new process starts its event file with a restart marker at the first epoch
it writes (TensorBoard's purge_step), which makes TensorBoard drop any events at that step or later from
the earlier files of the run (those of a process killed before it recorded them)."""

from __future__ import annotations

import os
import time
from typing import Any

from cep.tracking.trial_view import TrackingFile, TrialView, metric_names


def hparam_value(value: Any) -> int | float | str | bool:
    return value if isinstance(value, (int, float, str, bool)) else str(value)


class TensorBoardTracker:
    name = "tensorboard"

    def __init__(self) -> None:
        self.writers: dict[str, Any] = {}  # trial id -> EventsWriter open in this process

    def where(self) -> str:
        return "event files in each trial folder"

    def sync(self, v: TrialView) -> None:
        rec = TrackingFile(v.folder, self.name)
        rows = v.rows
        logged = rec.data.get("logged", 0) if isinstance(rec.data.get("logged"), int) else 0
        if logged > len(rows) or rec.data.get("token") is None:  # fewer epochs than written, or a new run
            logged = 0
        if not rows[logged:]:
            return
        rec.token  # noqa: B018 (a fresh trial folder gets its token: a --restart removes it)
        writer = self._writer(v, logged + 1)
        for row in rows[logged:]:
            self._write(writer, int(row["epoch"]), [_scalar(k, row[k]) for k in metric_names(row)])
        writer.flush()  # in the file (the OS has it: a SIGKILL now loses nothing) before it is recorded
        rec.put(logged=len(rows))

    def _writer(self, v: TrialView, first_step: int) -> Any:
        if v.trial_id not in self.writers:
            from tensorboardX.event_file_writer import EventsWriter
            from tensorboardX.proto.event_pb2 import Event, SessionLog

            writer = EventsWriter(str(v.folder / "events"), f".{os.getpid()}")
            writer.write_event(Event(wall_time=time.time(), step=first_step,
                                     session_log=SessionLog(status=SessionLog.START)))
            self.writers[v.trial_id] = writer
        return self.writers[v.trial_id]

    @staticmethod
    def _write(writer: Any, step: int, summaries: list[Any]) -> None:
        from tensorboardX.proto.event_pb2 import Event

        for summary in summaries:
            writer.write_event(Event(wall_time=time.time(), step=step, summary=summary))

    def close(self, v: TrialView) -> None:
        """The last epochs, then the run's fields and outcome as hparams (TensorBoard's HParams tab)."""
        self.sync(v)
        rec = TrackingFile(v.folder, self.name)
        if rec.data.get("closed") == v.status or not v.rows:
            self._drop(v)
            return
        from tensorboardX.summary import hparams, text

        params = {k: hparam_value(val) for k, val in {**v.config, **v.grid}.items() if val is not None}
        params.update({"trial_id": v.trial_id, "experiment": v.experiment, "status": v.status})
        final = v.rows[-1]
        metrics = {f"final/{k}": final[k] for k in ("train_error", "test_error") if k in final}
        writer = self._writer(v, len(v.rows) + 1)
        step = len(v.rows)
        self._write(writer, step, [*hparams(params, metrics), *(_scalar(k, x) for k, x in metrics.items()),
                                   text("status", f"{v.trial_id}: {v.status} after epoch {v.state.epochs_done}")])
        writer.flush()
        rec.put(closed=v.status)
        self._drop(v)

    def _drop(self, v: TrialView) -> None:
        writer = self.writers.pop(v.trial_id, None)
        if writer is not None:
            writer.close()


def _scalar(tag: str, value: float) -> Any:
    from tensorboardX.summary import scalar

    return scalar(tag, float(value))
