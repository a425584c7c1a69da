"""Weights & Biases: one run per trial, grouped by experiment, named by the trial id, resumable by a stable
run id (kept in the trial folder's tracking-wandb.json). Offline by default: `wandb sync` uploads later.

Each epoch is logged at step = its epoch. Offline, what the run already has is read from its own offline
folders with wandb's reader (`wandb leet inspect --json`) when a process first opens the run: an epoch a
killed process logged is not logged again, one it had not yet written (W&B holds a step's row until the
next step) is. Online, tracking-wandb.json's count of epochs logged is the record."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from cep.tracking.trial_view import TrackingFile, TrialView, metric_names

EXIT_CODE = {"finished": 0, "collapsed": 0, "stopped": 0, "diverged": 1, "errored": 1}


def run_id(token: str, trial_id: str) -> str:
    """A W&B run id from the trial's token: stable across resumes, new after a --restart."""
    return hashlib.sha256(f"{token} {trial_id}".encode()).hexdigest()[:16]


class WandbTracker:
    name = "wandb"

    def __init__(self, project: str, mode: str, entity: str | None, folder: str | Path, timeout: float):
        self.project, self.mode, self.entity, self.timeout = project, mode, entity, timeout
        self.dir = Path(folder)
        self.runs: dict[str, Any] = {}  # trial id -> wandb Run open in this process
        self.logged: dict[str, set[int]] = {}  # trial id -> steps the run has

    def where(self) -> str:
        return f"project {self.project} ({self.mode}, {self.dir / 'wandb'})"

    def _run(self, v: TrialView, rec: TrackingFile) -> Any:
        if v.trial_id not in self.runs:
            import wandb

            os.environ.setdefault("WANDB_SILENT", "true")
            rid = run_id(rec.token, v.trial_id)
            rec.put(run_id=rid)
            self.dir.mkdir(parents=True, exist_ok=True)
            config = {**v.config, "trial_id": v.trial_id, "experiment": v.experiment, **v.grid,
                      **({"pack": v.pack} if v.pack else {})}
            self.runs[v.trial_id] = wandb.init(
                project=self.project, entity=self.entity, id=rid, resume="allow", name=v.trial_id,
                group=v.experiment, config=config, dir=str(self.dir), mode=self.mode, reinit="create_new",
                settings=wandb.Settings(silent=True, console="off", x_disable_stats=True,
                                        init_timeout=self.timeout))
        return self.runs[v.trial_id]

    def sync(self, v: TrialView) -> None:
        if not v.rows:
            return
        rec = TrackingFile(v.folder, self.name)
        if v.trial_id not in self.logged:
            count = rec.data.get("logged", 0) if isinstance(rec.data.get("logged"), int) else 0
            steps = set(range(1, count + 1))
            if self.mode == "offline":
                try:
                    steps = offline_steps(self.dir, run_id(rec.token, v.trial_id))
                except (OSError, subprocess.SubprocessError, ValueError):  # a wandb without `leet inspect`
                    pass  # the folder's record: an epoch a killed process logged unrecorded comes again
            self.logged[v.trial_id] = steps
        have = self.logged[v.trial_id]
        rows = [r for r in v.rows if int(r["epoch"]) not in have]
        if not rows:
            return
        run = self._run(v, rec)
        for row in rows:
            run.log({k: row[k] for k in metric_names(row)}, step=int(row["epoch"]))
            have.add(int(row["epoch"]))
        rec.put(logged=len(v.rows))

    def close(self, v: TrialView) -> None:
        """The last epochs, the files and the outcome; an interrupted trial's run is left to be resumed."""
        self.sync(v)
        if v.status not in EXIT_CODE:
            return
        rec = TrackingFile(v.folder, self.name)
        if rec.data.get("closed") == v.status and v.trial_id not in self.runs:
            return
        run = self._run(v, rec)
        run.summary["status"] = v.status
        for path in v.artifacts():
            run.save(str(path), base_path=str(v.folder), policy="now")
        run.finish(exit_code=EXIT_CODE[v.status])
        self.runs.pop(v.trial_id, None)
        self.logged.pop(v.trial_id, None)
        rec.put(closed=v.status)


def offline_steps(folder: Path, rid: str, timeout: float = 60.0) -> set[int]:
    """The history steps in run `rid`'s offline folders under folder/wandb/, read with wandb's own reader."""
    # a process killed before W&B wrote its log leaves a folder without run-<id>.wandb: nothing recorded there
    runs = [r for r in sorted((folder / "wandb").glob(f"offline-run-*-{rid}")) if any(r.glob("run-*.wandb"))]
    if not runs:
        return set()
    exe = shutil.which("wandb", path=str(Path(sys.executable).parent)) or shutil.which("wandb") or "wandb"
    steps: set[int] = set()
    for run in runs:
        out = subprocess.run([exe, "leet", "inspect", "--json", str(run)], capture_output=True, text=True,
                             timeout=timeout, check=True).stdout
        for line in out.splitlines():
            record = json.loads(line) if line.startswith("{") else {}
            step = record.get("history", {}).get("item", {}).get("_step") if record.get("type") == "history" else None
            if isinstance(step, int):
                steps.add(step)
    return steps
