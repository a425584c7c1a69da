"""`cep-sweep status RESULTS_DIR`: where each trial of an experiment stands, read from its folder, without Ray.

The trial folders are the truth (cep.results.read_folder); whether an unfinished trial is
still running is judged from node.txt (host and pid of its last attempt) and the age of
its files: a pid on this host that is gone is not running, whatever the files say; on
another host only the time since the last update can be told.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import click

from cep.health import find_drift
from cep.layout import trial_dir
from cep.reading import TEXT_BYTES
from cep.results import (
    LOG_FILE,
    METRICS_FILE,
    NODE_FILE,
    SUMMARY_FILE,
    FolderState,
    config_edit_line,
    config_edits,
    read_folder,
)
from cep.safe_files import LinkRefused, pid_alive, read_text
from cep.sweep.spec import SweepError
from cep.sweep.store import read_sweep_record
from cep.text import duration, text_table


@dataclass
class TrialStatus:
    """One row of the status table."""

    id: str
    status: str  # a cep.results status, or "running" (an unfinished trial whose process is alive here)
    folder: FolderState
    host: str | None
    updated: float | None  # seconds since the epoch of the newest file, None when there is none
    why: str = ""  # how liveness was judged
    edited: str = ""  # config.yaml differs from sweep.json's record (config_edit_line), "" when not

    @property
    def drifting_epoch(self) -> int | None:
        """Where the trial's drift began (cep.health): summary.json's record, else found in metrics.csv."""
        found = (self.folder.summary or {}).get("drifting") or find_drift(self.folder.metrics)
        epoch = found.get("epoch") if isinstance(found, dict) else None
        return int(epoch) if isinstance(epoch, (int, float)) else None

    def cells(self, now: float) -> list[str]:
        err, drift = self.folder.test_error, self.drifting_epoch
        status = self.status + (f", drifting from epoch {drift}" if drift is not None else "")
        return [self.id, status, f"{self.folder.epochs_done}/{self.folder.epochs}",
                f"{err:.2f}%" if isinstance(err, (int, float)) else "-", self.host or "-",
                _ago(now - self.updated) if self.updated is not None else "-", self.why]


def _ago(seconds: float) -> str:
    return f"{duration(seconds)} ago"


def _node(folder: Path) -> dict[str, str]:
    """node.txt as key -> value (host, node_ip, ray_node_id, pid, started); {} when absent or unreadable."""
    try:
        lines = read_text(folder / NODE_FILE, limit=TEXT_BYTES, what=NODE_FILE, errors="replace").splitlines()
    except (OSError, LinkRefused):
        return {}
    return dict(ln.split(" ", 1) for ln in lines if " " in ln)


def _last_log_line(folder: Path) -> str:
    try:
        lines = read_text(folder / LOG_FILE, limit=TEXT_BYTES, what=LOG_FILE, errors="replace").splitlines()
    except (OSError, LinkRefused):
        return ""
    return lines[-1].split(" ", 3)[3] if lines and lines[-1].count(" ") >= 3 else ""


def trial_status(trial_id: str, folder: Path, action: str, epochs: int, host: str | None = None,
                 root: Path | None = None) -> TrialStatus:
    """Where one trial stands, with liveness judged on this host (`host`: this machine's name); nothing is read
    through a link below `root` (the experiment folder)."""
    host = host or socket.gethostname()
    st = read_folder(folder, action, epochs, root=root)
    if st.refused:
        return TrialStatus(trial_id, st.status, st, None, None, str(st.error))
    node = _node(folder)
    times = [p.lstat().st_mtime for p in (folder / n for n in (LOG_FILE, SUMMARY_FILE, METRICS_FILE, NODE_FILE))
             if os.path.lexists(p)]
    row = TrialStatus(trial_id, st.status, st, node.get("host"), max(times) if times else None)
    if st.status != "interrupted":
        return row
    last = _last_log_line(folder)
    pid = node.get("pid", "")
    if last.startswith(("end:", "replay:", "error")):
        row.why = "its last attempt ended"
    elif not node:
        row.why = f"no {NODE_FILE}"
    elif node.get("host") == host and pid.isdigit():
        if pid_alive(int(pid)):
            row.status, row.why = "running", f"pid {pid} alive"
        else:
            row.why = f"pid {pid} is gone"
    else:
        row.why = "on another host: see last update"
    return row


def experiment_status(exp_dir: str | Path) -> list[TrialStatus]:
    """Every trial of sweep.json, in its order; raises SweepError when the folder is not an experiment."""
    exp_dir = Path(exp_dir)
    record = read_sweep_record(exp_dir) if exp_dir.is_dir() else None
    if record is None:
        raise SweepError([f"{exp_dir}: not a cep-sweep experiment (no sweep.json); give <storage>/<sweep name>"])
    rows = []
    for t in record["trials"]:
        if not isinstance(t, dict) or not isinstance(t.get("id"), str):
            continue
        cfg = t.get("config") if isinstance(t.get("config"), dict) else {}
        epochs = cfg.get("epochs") if isinstance(cfg.get("epochs"), int) else 1
        folder = trial_dir(exp_dir, t["id"])
        row = trial_status(t["id"], folder, str(cfg.get("action", "train")), epochs, root=exp_dir)
        edits = config_edits(folder, cfg) if not row.folder.refused else []
        row.edited = config_edit_line(t["id"], edits) if edits else ""
        rows.append(row)
    return rows


@click.command("status", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("results_dir", type=click.Path(path_type=Path))
def status_command(results_dir: Path) -> int:
    """Where each trial of RESULTS_DIR (<storage>/<sweep name>/) stands: status, epochs, last test error,
    node and last update. Reads the trial folders only (no Ray); safe while a sweep runs."""
    try:
        rows = experiment_status(results_dir)
    except SweepError as e:
        raise click.ClickException(e.problems[0]) from None
    now = time.time()
    click.echo(text_table(["trial", "status", "epochs", "test error", "node", "last update", "why"],
                          [r.cells(now) for r in rows]))
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    for r in rows:
        if r.edited:
            click.echo(f"warning: {r.edited}")
    drifting = sum(r.drifting_epoch is not None for r in rows)
    click.echo(f"\n{len(rows)} trial(s): " + ", ".join(f"{n} {s}" for s, n in counts.items())
               + (f"; {drifting} drifting (train error well above its minimum: cep.health)" if drifting else ""))
    return 0
