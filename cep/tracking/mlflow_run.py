"""MLflow: the sweep is an MLflow experiment, each trial one run named by its id, the grid fields as tags.

Exactly once: the run is found by the tag cep.token (kept in the trial folder's tracking-mlflow.json), so
a run created by a process killed before it could record the run id is found, not made twice; each round
logs only the epochs MLflow does not have (its history of test_error), in one log_batch."""

from __future__ import annotations

import os
import time
from typing import Any

from cep.tracking.settings import local_path, redact
from cep.tracking.trial_view import TrackingFile, TrialView, metric_names

RUN_STATUS = {"finished": "FINISHED", "collapsed": "FINISHED", "stopped": "KILLED", "diverged": "FAILED",
              "errored": "FAILED"}  # cep's ending -> MLflow's run state (the cep status is also a tag)
BATCH = 1000  # MLflow's most metrics per log_batch
UI_KIND = {"mlflow.experimentKind": "custom_model_development"}  # the MLflow UI opens on its training-runs view
PROBE_KEY = "test_error"  # every epoch row has it: its history says which epochs MLflow has


class MlflowTracker:
    name = "mlflow"

    def __init__(self, uri: str, experiment: str, timeout: float):
        # bounded HTTP: a server that is down costs one short try per round, not minutes of retries
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, int(timeout))))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        # no "View run ... at: URL" lines: the URL would bring a URI's credentials into the logs
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        import mlflow.tracking  # noqa: F401 (seconds of imports, paid when the mirror starts, not in a round)

        self.uri, self.experiment = uri, experiment
        self._client: Any = None
        self.experiment_id: str | None = None
        self.runs: dict[str, str] = {}  # trial id -> run id, in this process

    def where(self) -> str:
        return f"{redact(self.uri)} experiment {self.experiment}"

    @property
    def client(self) -> Any:
        """Made on first use, in the tracker's own thread: a store that cannot be opened yet (a database
        another process is creating) is that round's warning, and the next round tries again."""
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def prepare(self) -> None:
        """The experiment (and a new database's tables), made once by the sweep's driver before any trial starts:
        trial processes creating a sqlite database at the same time break each other's migrations."""
        self._experiment_id()

    def _experiment_id(self) -> str:
        if self.experiment_id is None:
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                try:
                    self.experiment_id = self.client.create_experiment(self.experiment, self._artifacts(), UI_KIND)
                except Exception:  # made meanwhile by another trial's process
                    found = self.client.get_experiment_by_name(self.experiment)
                    if found is None:
                        raise
            if found is not None:
                self.experiment_id = found.experiment_id
        return self.experiment_id

    def _artifacts(self) -> str | None:
        """Beside a local database, its mlruns/ (MLflow's default is ./mlruns of whatever the working folder is:
        a Ray worker's); a server decides for itself."""
        db = local_path(self.uri)
        return (db.expanduser().absolute().parent / "mlruns").as_uri() if db is not None else None

    def _run_id(self, v: TrialView) -> str:
        if v.trial_id in self.runs:
            return self.runs[v.trial_id]
        rec = TrackingFile(v.folder, self.name)
        token = rec.token
        exp_id = self._experiment_id()
        found = self.client.search_runs([exp_id], filter_string=f"tags.`cep.token` = '{token}'", max_results=2)
        if found:
            run_id = found[0].info.run_id
        else:
            tags = {"cep.token": token, "cep.trial_id": v.trial_id, "cep.experiment": v.experiment,
                    **({"cep.pack": v.pack} if v.pack else {}),
                    **{str(k): str(val) for k, val in v.grid.items()}}
            run_id = self.client.create_run(exp_id, run_name=v.trial_id, tags=tags).info.run_id
        rec.put(run_id=run_id, where=self.where())
        self.runs[v.trial_id] = run_id
        return run_id

    def sync(self, v: TrialView) -> None:
        from mlflow.entities import Metric, Param, RunTag

        if not v.rows and not v.config:
            return
        run_id = self._run_id(v)
        run = self.client.get_run(run_id)
        have = {m.step for m in self.client.get_metric_history(run_id, PROBE_KEY)}
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(r[k]), now, int(r["epoch"])) for r in v.rows if int(r["epoch"]) not in have
                   for k in metric_names(r)]
        params = [Param(k, str(val)[:6000]) for k, val in v.config.items() if k not in run.data.params]
        tags = [RunTag(f"provenance.{k}", str(val)) for k, val in v.provenance.items()
                if f"provenance.{k}" not in run.data.tags and val is not None]
        tags.append(RunTag("cep.status", v.status))
        # the probe key last: a batch cut by a kill leaves its epoch looking absent, so it is sent again
        metrics.sort(key=lambda m: (m.step, m.key == PROBE_KEY))
        for i in range(0, max(len(metrics), 1), BATCH):
            self.client.log_batch(run_id, metrics=metrics[i:i + BATCH], params=params if i == 0 else [],
                                  tags=tags if i == 0 else [])

    def close(self, v: TrialView) -> None:
        """The last epochs, the files as artifacts, and the run's end state (an interrupted trial stays running)."""
        self.sync(v)
        run_id = self._run_id(v)
        if v.status not in RUN_STATUS:
            return
        if self.client.get_run(run_id).info.status != RUN_STATUS[v.status]:
            for path in v.artifacts():
                self.client.log_artifact(run_id, str(path))
            self.client.set_terminated(run_id, RUN_STATUS[v.status])
        self.runs.pop(v.trial_id, None)
