"""TensorBoard: the trial folder is the run folder (its event files beside metrics.csv), so that
`tensorboard --logdir results/NAME` lists the trials by id; each epoch is one step.

Exactly once across kills: tracking-tensorboard.json records the epochs written (after a flush); a new
process opens its writer with purge_step = the first epoch it writes, which makes TensorBoard drop any
events at that step or later from the earlier files of the run (those of a process killed before it
recorded them)."""

from __future__ import annotations

from typing import Any

from cep.tracking.trial_view import TrackingFile, TrialView, metric_names


def hparam_value(value: Any) -> int | float | str | bool:
    return value if isinstance(value, (int, float, str, bool)) else str(value)


class TensorBoardTracker:
    name = "tensorboard"

    def __init__(self) -> None:
        self.writers: dict[str, Any] = {}  # trial id -> SummaryWriter open in this process

    def where(self) -> str:
        return "event files in each trial folder"

    def sync(self, v: TrialView) -> None:
        rec = TrackingFile(v.folder, self.name)
        rec.token  # noqa: B018 (a fresh trial folder gets its token: a --restart removes it)
        rows = v.rows
        logged = rec.data.get("logged", 0) if isinstance(rec.data.get("logged"), int) else 0
        if logged > len(rows):  # the folder has fewer epochs than were written: begin again
            logged = 0
        if not rows[logged:]:
            return
        writer = self._writer(v, logged + 1)
        for row in rows[logged:]:
            step = int(row["epoch"])
            for key in metric_names(row):
                writer.add_scalar(key, row[key], global_step=step)
        writer.flush()
        rec.put(logged=len(rows))

    def _writer(self, v: TrialView, first_step: int) -> Any:
        if v.trial_id not in self.writers:
            from tensorboardX import SummaryWriter

            self.writers[v.trial_id] = SummaryWriter(logdir=str(v.folder), purge_step=first_step, flush_secs=3600)
        return self.writers[v.trial_id]

    def close(self, v: TrialView) -> None:
        """The last epochs, then the run's fields and outcome as hparams (TensorBoard's HParams tab)."""
        self.sync(v)
        rec = TrackingFile(v.folder, self.name)
        if rec.data.get("closed") == v.status:
            self._drop(v)
            return
        from tensorboardX.summary import hparams

        params = {k: hparam_value(val) for k, val in {**v.config, **v.grid}.items() if val is not None}
        params.update({"trial_id": v.trial_id, "experiment": v.experiment, "status": v.status})
        final = v.rows[-1] if v.rows else {}
        metrics = {f"final/{k}": final[k] for k in ("train_error", "test_error") if k in final}
        writer = self._writer(v, len(v.rows) + 1)
        for summary in hparams(params, metrics):
            writer._get_file_writer().add_summary(summary)
        for k, val in metrics.items():
            writer.add_scalar(k, val, global_step=len(v.rows))
        writer.add_text("status", f"{v.trial_id}: {v.status} after epoch {v.state.epochs_done}",
                        global_step=len(v.rows))
        writer.flush()
        rec.put(closed=v.status)
        self._drop(v)

    def _drop(self, v: TrialView) -> None:
        writer = self.writers.pop(v.trial_id, None)
        if writer is not None:
            writer.close()
