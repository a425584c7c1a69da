"""A trial's results folder: its layout, the writer, and the one reader that says where the trial stands.

Files: config.yaml, metrics.csv, summary.json, learning_curve.png, checkpoint.pt
(the exact trainer state), trial.log (one line per start, epoch, replay and end),
and in sweeps node.txt (where it ran) and error.txt (while its last attempt failed).
Every file is written atomically (temporary file then rename), and metrics.csv is
rewritten from the trainer's history each epoch, so a restored run leaves the
same files as an uninterrupted one. Readers need neither Ray nor torch.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cep.config import MAX_EPOCHS, result_differences
from cep.layout import GDU_DIR
from cep.provenance import provenance
from cep.reading import EPOCH_ROW_BYTES, JSON_BYTES, TEXT_BYTES, parse_json
from cep.safe_files import LinkRefused, append_text, find_link, read_bytes, refuse_links, write_atomic
from cep.selection import best_record
from cep.yaml_file import YAMLFileError, read_yaml

METRICS_BYTES = EPOCH_ROW_BYTES * (MAX_EPOCHS + 1)  # one row per epoch and the header

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
CHECKPOINT_FILE = "checkpoint.pt"
BEST_CHECKPOINT_FILE = "checkpoint-best.pt"  # the state at the selected best epoch (cep.checkpoint.save_best)
CURVE_FILE = "learning_curve.png"
LOG_FILE = "trial.log"
ERROR_FILE = "error.txt"  # the last attempt's error; removed when the trial runs again
ERRORS_LOG = "errors.log"  # every error of the trial, appended
NODE_FILE = "node.txt"  # host, node IP and Ray node id of the attempt now running or last run
TRACKING_FILES = ("tracking-tensorboard.json", "tracking-mlflow.json", "tracking-wandb.json")  # cep.tracking
# everything a run writes into its folder: what "the folder holds an earlier result" and --overwrite mean
RESULT_FILES = (CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, CHECKPOINT_FILE, BEST_CHECKPOINT_FILE, CURVE_FILE, LOG_FILE,
                ERROR_FILE, ERRORS_LOG, NODE_FILE, GDU_DIR, *TRACKING_FILES)

# Where a trial stands, read from its folder; the one vocabulary of the completion check, the live
# table, the sweep's summary and the aggregator. "collapsed": ended early at a collapse because the trial
# asked for it (stop_on_collapse; a run that trains on through a collapse stays "finished", with summary.json's
# `collapsed` record); "interrupted": started and not ended (from the files alone it may still be running);
# "pending": never started.
STATUSES = ("finished", "diverged", "collapsed", "stopped", "interrupted", "errored", "pending")
COMPLETE = ("finished", "diverged", "collapsed", "stopped")  # stopped: by a search's scheduler (cep.sweep.scheduling)

METRIC_COLUMNS = ("epoch", "train_error", "test_error", "train_loss", "test_loss", "epoch_seconds",
                  "elapsed_seconds")

def append_log(folder: str | Path, line: str) -> None:
    """One line of trial.log: time, host, pid, then what happened (never through a link)."""
    append_text(Path(folder) / LOG_FILE,
                f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {socket.gethostname()} pid={os.getpid()} {line}\n")


def result_link(root: str | Path, folder: str | Path) -> Path | None:
    """The first symbolic link on the way from `root` to a results folder or at one of its files (None: none)."""
    folder = Path(folder)
    return next((link for link in (find_link(root, folder), *(find_link(folder, folder / n) for n in RESULT_FILES))
                 if link is not None), None)


def config_edits(folder: str | Path, recorded: dict[str, Any]) -> list[str]:
    """The result fields in which a folder's config.yaml differs from the trial's recorded configuration
    (sweep.json's, the checkpoint's): a hand edit; ["unreadable"] when it cannot be read, [] when it agrees
    or is absent. The record is the truth: readers use it, and the next run rewrites config.yaml."""
    path = Path(folder) / CONFIG_FILE
    if not os.path.lexists(path):
        return []
    try:
        refuse_links(folder, path, "read")
        written = read_yaml(path, "trial config")
    except (YAMLFileError, LinkRefused):
        return ["unreadable"]
    if not isinstance(written, dict):
        return ["unreadable"]
    return [k for k in result_differences(written, recorded) if k != "epochs"]  # epochs may grow on a rerun


def config_edit_line(trial: str, edits: list[str]) -> str:
    """The one line that says a trial's config.yaml was edited by hand."""
    what = "is unreadable" if edits == ["unreadable"] else f"differs in {', '.join(edits)}"
    return (f"trial {trial}: {CONFIG_FILE} {what} from the trial's recorded configuration (edited by hand?); "
            "the recorded one is used, and a rerun rewrites the file from it")


def json_safe(value: Any) -> Any:
    """NaN and infinities become null: summary.json stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def metric_columns(history: list[dict[str, Any]]) -> list[str]:
    """metrics.csv's columns: METRIC_COLUMNS first (older readers find them where they were), then the health
    columns of the history in their order (rows from before they existed leave them empty)."""
    extra = dict.fromkeys(k for row in history for k in row if k not in METRIC_COLUMNS and k != "status")
    return [*METRIC_COLUMNS, *extra]


def metrics_csv(history: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=metric_columns(history), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return buf.getvalue()


def best_epoch(history: list[dict[str, Any]], key: str = "test_error") -> dict[str, Any] | None:
    """The row with the lowest finite `key` (the first of equal ones); None when there is none."""
    rows = [h for h in history if isinstance(h.get(key), (int, float)) and math.isfinite(h[key])]
    return min(rows, key=lambda h: h[key]) if rows else None


def summarize(state: Any) -> dict[str, Any]:
    """The run's summary.json content, from a TrainState."""
    cfg, hist = state.config, state.history
    last = hist[-1] if hist else {}
    best = best_epoch(hist)
    return json_safe({
        "status": state.status,
        "epochs_done": state.epoch,
        "epochs": cfg.epochs,
        "final": {k: last.get(k) for k in ("train_error", "test_error", "train_loss", "test_loss")},
        "best_test_error": best["test_error"] if best else None,
        "best_test_epoch": int(best["epoch"]) if best else None,
        "best": best_record(hist),  # the epoch selected on validation (val_samples), else on test
        "seed": cfg.seed,
        **state.info,
        "wall_seconds": state.elapsed,
        "host": socket.gethostname(),
        "provenance": provenance(str(state.params.W[0].device), cfg.dtype),
        "config": cfg.to_dict(),
    })


def earlier_results(folder: str | Path) -> list[str]:
    """The files of an earlier run in `folder` (RESULT_FILES that exist), by name."""
    return [name for name in RESULT_FILES if os.path.lexists(Path(folder) / name)]


def discard_results(folder: str | Path) -> None:
    """Remove an earlier run's files (RESULT_FILES) from `folder`, leaving anything else there."""
    found = earlier_results(folder)
    for name in found:  # a link is refused before anything is deleted
        refuse_links(folder, Path(folder) / name, "delete")
    for name in found:
        path = Path(folder) / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def unwritable(folder: str | Path) -> str:
    """Why a results folder cannot be written ("" when it can), found before anything runs.

    Creates the missing folders and a probe file, then removes what it made: a refused run leaves nothing.
    """
    folder = Path(folder).expanduser().absolute()
    missing = [p for p in [folder, *folder.parents] if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        if folder.exists() and not folder.is_dir():
            return "a file, not a folder, is there"
        return f"cannot write there ({e.strerror or type(e).__name__})"
    finally:
        for p in missing:  # innermost first
            try:
                p.rmdir()
            except OSError:
                break
    return ""


def default_out_dir(label: str) -> str:
    """runs/LABEL-DATE-TIME: where a run given no --out writes its results."""
    return str(Path("runs") / f"{label}-{time.strftime('%Y%m%d-%H%M%S')}")


def write_results(folder: str | Path, state: Any) -> None:
    """config.yaml, metrics.csv and summary.json of a TrainState (folders are made on first write)."""
    folder = Path(folder)
    write_atomic(folder / CONFIG_FILE, yaml.safe_dump(state.config.to_dict(), sort_keys=False))
    write_atomic(folder / METRICS_FILE, metrics_csv(state.history))
    write_atomic(folder / SUMMARY_FILE, json.dumps(summarize(state), indent=2) + "\n")


def run_title(cfg: Any) -> str:
    extra = f", angle {cfg.angle:g}°" if cfg.rule == "vf" else ""
    return f"{cfg.model_label} ({cfg.setting}{extra}), seed {cfg.seed}"


# ---------------------------------------------------------------- reading
def read_summary(path: str | Path) -> dict[str, Any]:
    """summary.json of a trial folder (never through a link: LinkRefused)."""
    return parse_json(read_bytes(Path(path) / SUMMARY_FILE, limit=JSON_BYTES, what=SUMMARY_FILE))


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """metrics.csv of a trial folder (never through a link: LinkRefused)."""
    text = read_bytes(Path(path) / METRICS_FILE, limit=METRICS_BYTES, what=METRICS_FILE).decode("utf-8")
    return [{k: float(v) if v not in ("", None) else math.nan for k, v in row.items()}
            for row in csv.DictReader(io.StringIO(text, newline=""))]


def error_line(text: str) -> str:
    """The informative line of an error.txt: a traceback's last line (after a pack member's line saying whose
    failure it was), else the first; at most 200 characters."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return "(error.txt is empty)"
    line = lines[-1] if any(ln.startswith("Traceback") for ln in lines[:2]) else lines[0]
    return line if len(line) <= 200 else line[:197] + "..."


LINK_FIX = "cep reads no links inside a results folder; replace it with a real copy (cp -rL) or remove it"


def _read_part(folder: Path, name: str, read: Any, st: FolderState) -> Any:
    """read(folder) when `name` is there (None when not); why it cannot be read goes to st.notes."""
    if not os.path.lexists(folder / name):
        return None
    try:
        return read(folder)
    except LinkRefused:
        st.notes.append(f"{name} is a symbolic link; not read ({LINK_FIX})")
    except (OSError, ValueError, csv.Error) as e:
        st.notes.append(f"{name} unreadable ({type(e).__name__}: {e})")
    return None


@dataclass
class FolderState:
    """Where a trial stands according to its results folder (the truth, whatever Ray Tune says)."""

    status: str  # one of STATUSES
    epochs_done: int
    epochs: int
    summary: dict[str, Any] | None = None
    metrics: list[dict[str, float]] = field(default_factory=list)
    error: str | None = None  # error_line of error.txt
    notes: list[str] = field(default_factory=list)  # what could not be read, and oddities
    refused: bool = False  # the folder is a symbolic link (error says where): not read at all

    @property
    def complete(self) -> bool:
        return self.status in COMPLETE

    @property
    def test_error(self) -> float | None:
        final = (self.summary or {}).get("final")
        return final.get("test_error") if isinstance(final, dict) else None

    def detail(self, folder: str | Path) -> str:
        """Why the trial is not finished, in a few words ("" when it is)."""
        if self.status == "diverged":
            return f"diverged at epoch {(self.summary or {}).get('diverged_at_epoch', self.epochs_done + 1)}"
        if self.status == "stopped":
            stop = (self.summary or {}).get("stopped") or {}
            return f"stopped at epoch {stop.get('epoch', self.epochs_done)} by {stop.get('by', 'the scheduler')}"
        if self.status == "collapsed":
            return f"collapsed at epoch {self.epochs_done}; stopped there (stop_on_collapse)"
        if self.status == "errored" and self.refused:
            return str(self.error)
        if self.status == "errored":
            return f"{self.error} (see {Path(folder) / ERROR_FILE})"
        if self.status == "interrupted":
            return f"stopped after epoch {self.epochs_done} of {self.epochs}"
        return ""


def read_folder(folder: str | Path, action: str = "train", epochs: int = 1,
                root: str | Path | None = None) -> FolderState:
    """Read a trial folder; damaged or missing files become notes, never exceptions. Nothing is read through
    a symbolic link (below `root`, e.g. the experiment folder, or in the folder itself): a trial folder
    that is a link is "errored" with the reason, a file that is one a note."""
    folder = Path(folder)
    epochs = epochs if action == "train" else 1
    link = find_link(root, folder) if root is not None else None
    if link is not None:
        return FolderState("errored", 0, epochs, error=f"{link} is a symbolic link; not read ({LINK_FIX})",
                           refused=True)
    if not folder.is_dir():
        return FolderState("pending", 0, epochs)
    st = FolderState("interrupted", 0, epochs)
    summary = _read_part(folder, SUMMARY_FILE, read_summary, st)
    if isinstance(summary, dict):
        st.summary = summary
    elif summary is not None:
        st.notes.append(f"{SUMMARY_FILE} unreadable (not a JSON object)")
    elif action == "train" and not os.path.lexists(folder / SUMMARY_FILE):
        st.notes.append(f"no {SUMMARY_FILE} yet (no epoch reported)")
    st.metrics = _read_part(folder, METRICS_FILE, read_metrics, st) or []
    if not os.path.lexists(folder / METRICS_FILE) and action == "train" and (st.summary or {}).get("epochs_done"):
        st.notes.append(f"no {METRICS_FILE}")
    text = _read_part(folder, ERROR_FILE,
                      lambda f: read_bytes(f / ERROR_FILE, limit=TEXT_BYTES, what=ERROR_FILE).decode(errors="replace"),
                      st)
    if text is not None:
        st.error = error_line(text)
    summary = st.summary or {}
    done = summary.get("epochs_done")
    st.epochs_done = int(done) if isinstance(done, (int, float)) and math.isfinite(done) else len(st.metrics)
    status = summary.get("status")
    if action != "train":
        ended = st.summary is not None and status in (None, "finished")
        st.epochs_done = 1 if ended else 0
        status = "finished" if ended else None
    if status == "finished" and st.epochs_done < epochs:
        st.notes.append(f"{SUMMARY_FILE} says finished after {st.epochs_done} of {epochs} epochs")
    elif status in COMPLETE:
        st.status = status
    if st.complete and st.error:
        st.notes.append("error.txt from an earlier, retried attempt")
    elif not st.complete and st.error:
        st.status = "errored"
    return st
