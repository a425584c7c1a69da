"""Paths and files inside an experiment folder and a results folder (issue #19): no symbolic link is followed
out of them, temporaries of a killed run are removed, text from files is escaped, a full disk is one line,
and a hand-edited config.yaml is noticed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_aggregate import ExperimentBuilder, history, small_config

from cep.aggregate.cli import aggregate_command
from cep.cli import TRAIN_FIELD_NAMES, cli, run_main
from cep.config import TrialConfig
from cep.layout import experiment_dir, trial_dir
from cep.member import Member
from cep.runner import run, run_pack
from cep.safe_files import TEMP_PREFIX, LinkRefused
from cep.sweep.cli import main as sweep_main
from cep.sweep.spec import load_sweep
from cep.sweep.status import status_command
from cep.sweep.store import resolve_trials, sweep_record, write_sweep_record

QUICK = ["--train-samples", "40", "--test-samples", "20", "--device", "cpu", "--sizes", "10,8,784", "--seed", "0",
         "--quiet", "--dataset", "mnist5k", "--batch-size", "20"]
SWEEP = """name: paths
description: {description}
base: {{dataset: mnist5k, epochs: 1, train_samples: 40, test_samples: 20, size_tab: [10, 8, 784],
        lr_tab: [0.05, 0.1], T: 4, Kmax: 2, batch_size: 20, device: cpu}}
experiments:
  EP: {{rule: ep}}
grid:
  seed: [0, 1]
resources: {{cpu: 1, gpu: 0}}
"""


# ------------------------------------------------------------------ helpers
def victim(tmp_path: Path) -> Path:
    """A folder outside the experiment holding marker files (and files named like ours)."""
    v = tmp_path / "victim"
    v.mkdir()
    for name in ("marker.txt", "metrics.csv", "summary.json", "table.md", "checkpoint.pt", "trial.log",
                 "config.yaml", "fig4_angle_curve.png", "trials.csv"):
        (v / name).write_text(f"victim's own {name}\n")
    (v / "summary.json").write_text(json.dumps({"status": "finished", "epochs_done": 3, "epochs": 3,
                                                "final": {"test_error": 42.4242, "train_error": 42.4242}}))
    (v / "metrics.csv").write_text("epoch,train_error,test_error\n1,42.4242,42.4242\n2,42.4242,42.4242\n"
                                   "3,42.4242,42.4242\n")
    return v


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below `folder` (its names and bytes): the victim's state."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_exit_2(call, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        call()
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def aggregate(exp: Path, *args: str) -> None:
    run_main(aggregate_command, {}, [str(exp), *args])


def train(args: list[str]) -> None:
    run_main(cli, TRAIN_FIELD_NAMES, ["train", *args])


def experiment(tmp_path: Path) -> Path:
    """A small finished experiment (two seeds of C-VF-1h, three epochs) built in the driver's layout."""
    b = ExperimentBuilder(tmp_path / "results", "paths")
    for seed in (0, 1):
        b.add("C-VF-1h", {"seed": seed}, small_config(), hist=history(3, 30.0 + seed, 20.0))
    return b.write()


def make_link(path: Path, target: Path) -> None:
    """Replace `path` (file or folder, if any) by a symbolic link to `target`."""
    import shutil

    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)


# ------------------------------------------------------- 1. links: aggregate
@pytest.mark.parametrize("where", ["summary", "summary/table.md", "summary/trials.csv", "summary/index.html",
                                   "summary/fig4_angle_curve.png", "summary/gdu_agreement.csv"])
def test_aggregate_never_writes_or_deletes_through_a_link(where, tmp_path, capsys):
    """summary/ or one of its outputs (a figure, a stale output the cleanup would delete) a link: one line,
    exit 2, the victim byte for byte as it was, nothing written."""
    exp, v = experiment(tmp_path), victim(tmp_path)
    (exp / "summary").mkdir()
    target = v if where == "summary" else v / Path(where).name
    make_link(exp / where, target)
    before = snapshot(v)
    line = one_line_exit_2(lambda: aggregate(exp), capsys)
    assert str(exp / where) in line and "symbolic link" in line and "remove it" in line
    assert snapshot(v) == before
    if where != "summary":
        assert [p.name for p in (exp / "summary").iterdir()] == [Path(where).name]  # nothing else written


@pytest.mark.parametrize("where", ["trials/C-VF-1h/seed=0/metrics.csv", "trials/C-VF-1h/seed=0/summary.json",
                                   "trials/C-VF-1h/seed=0", "trials/C-VF-1h", "trials"])
def test_aggregate_reads_nothing_through_a_link(where, tmp_path, capsys):
    """A linked metrics.csv, summary.json, trial folder or trials/<experiment>/ is not read: the outside
    numbers (42.4242) appear nowhere in the summary, and the trial says why in one line."""
    exp, v = experiment(tmp_path), victim(tmp_path)
    target = v / Path(where).name if where.endswith((".csv", ".json")) else v
    make_link(exp / where, target)
    before = snapshot(v)
    with pytest.raises(SystemExit) as e:
        aggregate(exp, "--no-plots")
    out = capsys.readouterr().out
    assert e.value.code == 0
    md = (exp / "summary" / "table.md").read_text()
    trials = (exp / "summary" / "trials.csv").read_text()
    assert "42.4242" not in md + trials + (exp / "summary" / "index.html").read_text()
    assert "symbolic link; not read" in md and "symbolic link; not read" in out
    with pytest.raises(SystemExit):
        run_main(status_command, {}, [str(exp)])
    status = capsys.readouterr().out
    assert "42.42" not in status
    if not where.endswith((".csv", ".json")):  # the folder itself refused: its row says why
        assert "symbolic link; not read" in status
    assert snapshot(v) == before


def test_sweep_json_that_is_a_link_is_not_read(tmp_path, capsys):
    exp = experiment(tmp_path)
    outside = tmp_path / "elsewhere.json"
    (exp / "sweep.json").rename(outside)
    (exp / "sweep.json").symlink_to(outside)
    line = one_line_exit_2(lambda: aggregate(exp), capsys)
    assert "sweep.json: a symbolic link" in line
    assert not (exp / "summary").exists()


# ------------------------------------------------------ 1. links: reruns
@pytest.mark.parametrize("name", ["checkpoint.pt", "metrics.csv", "summary.json", "config.yaml", "trial.log",
                                  "learning_curve.png"])
def test_cep_train_rerun_never_writes_through_a_link_in_out(name, tmp_path, capsys):
    """`cep train --out DIR --checkpoint` rerun where one of DIR's files is a link: refused in one line
    before anything is read or written; the victim untouched."""
    out, v = tmp_path / "run", victim(tmp_path)
    with pytest.raises(SystemExit) as e:
        train([*QUICK, "--epochs", "1", "--checkpoint", "--out", str(out)])
    assert e.value.code == 0
    capsys.readouterr()
    make_link(out / name, v / (name if (v / name).exists() else "marker.txt"))
    before, mine = snapshot(v), {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and not p.is_symlink()}
    line = one_line_exit_2(lambda: train([*QUICK, "--epochs", "2", "--checkpoint", "--out", str(out)]), capsys)
    assert str(out / name) in line and "symbolic link" in line
    assert snapshot(v) == before
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and not p.is_symlink()} == mine


def test_overwrite_never_deletes_through_a_link(tmp_path, capsys):
    out, v = tmp_path / "run", victim(tmp_path)
    out.mkdir()
    (out / "gdu").symlink_to(v)
    before = snapshot(v)
    line = one_line_exit_2(lambda: train([*QUICK, "--epochs", "1", "--overwrite", "--out", str(out)]), capsys)
    assert str(out / "gdu") in line and "delete" in line
    assert snapshot(v) == before and (out / "gdu").is_symlink()


@pytest.mark.parametrize("where", ["trials/EP/seed=0", "trials/EP", "trials", "trials/EP/seed=0/checkpoint.pt"])
def test_runner_never_writes_a_trial_through_a_link(where, tmp_path):
    """A sweep trial's folder (or a folder above it, inside the experiment) a link: the runner refuses it
    before reading or writing anything; the victim untouched."""
    exp, v = tmp_path / "exp", victim(tmp_path)
    folder = exp / "trials" / "EP" / "seed=0"
    cfg = TrialConfig.from_dict(dict(rule="ep", size_tab=[10, 8, 784], lr_tab=[0.05, 0.1], T=4, Kmax=2, epochs=1,
                                     dataset="mnist5k", train_samples=40, test_samples=20, batch_size=20, seed=0,
                                     device="cpu", checkpoint=True, out_dir=str(folder)))
    run(cfg, folder)  # a first run: real files
    make_link(exp / where, v / "checkpoint.pt" if where.endswith(".pt") else v)
    before = snapshot(v)
    with pytest.raises(LinkRefused) as e:
        run_pack([Member(cfg.replace(epochs=2), folder, root=exp)])
    assert str(exp / where) in str(e.value)
    assert snapshot(v) == before


def finished_sweep(tmp_path: Path, description: str = "x") -> tuple[Path, Path, Path]:
    """A sweep file, its storage and its experiment folder with every trial finished (run by the runner)."""
    sweep = tmp_path / "paths.yaml"
    sweep.write_text(SWEEP.format(description=json.dumps(description)))
    storage = tmp_path / "results"
    spec = load_sweep(str(sweep), ())
    exp = experiment_dir(str(storage), spec.name)
    trials = resolve_trials(spec.trials, exp)
    exp.mkdir(parents=True)
    write_sweep_record(exp, sweep_record(spec, trials))
    for t in trials:
        run(t.config, trial_dir(exp, t.id))
    return sweep, storage, exp


@pytest.mark.parametrize("where", ["trials/EP/seed=0", "trials/EP", "trials/EP/seed=1/metrics.csv"])
def test_sweep_rerun_refuses_a_link_before_anything_starts(where, tmp_path, capsys):
    sweep, storage, exp = finished_sweep(tmp_path)
    v = victim(tmp_path)
    make_link(exp / where, v / "metrics.csv" if where.endswith(".csv") else v)
    before = snapshot(v)
    line = one_line_exit_2(lambda: sweep_main([str(sweep), "--storage", str(storage), "--no-aggregate"]), capsys)
    assert str(exp / where) in line and "symbolic link" in line
    assert snapshot(v) == before
    restart = [str(sweep), "--storage", str(storage), "--restart", "--only", "EP/seed=0"]  # deletes that trial
    line = one_line_exit_2(lambda: sweep_main(restart), capsys)
    assert "symbolic link" in line and snapshot(v) == before


@pytest.mark.parametrize("name", ["sweep.json", "ray.log"])
def test_sweep_refuses_its_own_files_as_links(name, tmp_path, capsys):
    """sweep.json (read) or ray.log (appended to) a link to a file outside: refused in one line, before Ray."""
    sweep, storage, exp = finished_sweep(tmp_path)
    (trial_dir(exp, "EP/seed=1") / "summary.json").unlink()  # something left to run: the driver starts
    v = victim(tmp_path)
    if name == "sweep.json":
        (exp / name).rename(v / name)
    make_link(exp / name, v / (name if name == "sweep.json" else "trial.log"))
    before = snapshot(v)
    line = one_line_exit_2(lambda: sweep_main([str(sweep), "--storage", str(storage), "--no-aggregate"]), capsys)
    assert str(exp / name) in line and "symbolic link" in line
    assert snapshot(v) == before


# --------------------------------------------------- 2. temporaries of a kill
def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_killed_aggregate_leaves_no_temporary_after_the_next(tmp_path):
    """SIGKILL a real aggregation while it writes (it leaves a temporary), then aggregate again: none left."""
    exp = experiment(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    summary = exp / "summary"
    seen: list[str] = []
    for _ in range(5):  # the kill must land while a file is being written; a few tries make that sure
        proc = subprocess.Popen([sys.executable, "-m", "cep.aggregate.cli", str(exp)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None and not seen:
            seen = [p.name for p in summary.glob(f"{TEMP_PREFIX}*")] if summary.is_dir() else []
            time.sleep(0.001)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        seen = [n for n in seen if (summary / n).exists()]  # what the kill left (not renamed just before it)
        if seen:
            break
    if not seen:  # no kill landed mid-write: leave what such a kill leaves
        summary.mkdir(exist_ok=True)
        seen = [f"{TEMP_PREFIX}{dead_pid()}@{os.uname().nodename}~fig4_angle_curve.png"]
        (summary / seen[0]).write_bytes(b"")
    assert any((summary / n).exists() for n in seen)
    with pytest.raises(SystemExit) as e:
        aggregate(exp)
    assert e.value.code == 0
    assert not list(summary.glob(f"{TEMP_PREFIX}*")) and not list(summary.glob(".*tmp*"))


def test_a_rerun_removes_the_temporaries_a_killed_run_left_and_keeps_live_ones(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit):
        train([*QUICK, "--epochs", "1", "--checkpoint", "--out", str(out)])
    host = os.uname().nodename
    dead = [out / f"{TEMP_PREFIX}{dead_pid()}@{host}~{name}" for name in ("checkpoint.pt", "metrics.csv")]
    live = out / f"{TEMP_PREFIX}1@{host}~summary.json"  # pid 1 is alive: a write in progress
    other_host = out / f"{TEMP_PREFIX}5@another-node~summary.json"  # can't be judged here: kept while young
    for p in [*dead, live, other_host]:
        p.write_bytes(b"")
    with pytest.raises(SystemExit) as e:
        train([*QUICK, "--epochs", "2", "--checkpoint", "--out", str(out)])
    assert e.value.code == 0, capsys.readouterr().err
    assert not any(p.exists() for p in dead) and live.exists() and other_host.exists()


def test_a_sweep_rerun_removes_temporaries_in_the_experiment_and_finished_trials(tmp_path, capsys):
    sweep, storage, exp = finished_sweep(tmp_path)
    left = [exp / f"{TEMP_PREFIX}{dead_pid()}@{os.uname().nodename}~sweep.json",
            trial_dir(exp, "EP/seed=0") / f"{TEMP_PREFIX}{dead_pid()}@{os.uname().nodename}~checkpoint.pt"]
    for p in left:
        p.write_bytes(b"")
    with pytest.raises(SystemExit) as e:
        sweep_main([str(sweep), "--storage", str(storage), "--no-aggregate"])
    assert e.value.code == 0, capsys.readouterr().err  # every trial finished: nothing runs, no Ray
    assert not any(p.exists() for p in left)


# -------------------------------------------------------------- 3. escaping
HOSTILE = "<script>alert(1)</script> <img src=x onerror=alert(2)> \x1b[2J\x1b[31mRED\u202e *b* [l](http://e.x)\n# H"


def test_table_md_and_the_terminal_show_hostile_text_as_text(tmp_path, capsys):
    exp = experiment(tmp_path)
    record = json.loads((exp / "sweep.json").read_text())
    record["description"] = HOSTILE
    record["name"] = "paths\x1b]0;owned\x07<b>"
    record["trials"][0]["id"] = "C-VF-1h/seed=0<i>\x1b[1m"  # a crafted sweep.json: ids as a folder name allows
    (exp / "trials" / "C-VF-1h" / "seed=0").rename(exp / "trials" / "C-VF-1h" / "seed=0<i>\x1b[1m")
    (exp / "sweep.json").write_text(json.dumps(record))
    with pytest.raises(SystemExit) as e:
        aggregate(exp, "--no-plots")
    assert e.value.code == 0
    out = capsys.readouterr().out
    md = (exp / "summary" / "table.md").read_text()
    page = (exp / "summary" / "index.html").read_text()
    for text in (md, out, page):
        assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    for text in (md, page):
        assert "<script" not in text and "<img" not in text and "<b>" not in text and "<i>" not in text
    assert "&lt;script&gt;" in page and "&lt;script>" in md and "\\[l\\](http" not in md and "[l\\](http" in md
    assert "\\# H" in md and "\\x1b[31mRED" in md and "paths\\x1b]0;owned\\x07" in out
    with pytest.raises(SystemExit):
        run_main(status_command, {}, [str(exp)])
    assert "\x1b" not in capsys.readouterr().out


# ------------------------------------------------------------ 4. full disk
@pytest.fixture
def tiny_disk(tmp_path):
    """A real 2 MiB filesystem (tmpfs); skipped where mounting is not allowed (not root, a container)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}); needs root")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path, leave: int = 0) -> None:
    """Fill the filesystem, leaving about `leave` bytes (0: until a write fails)."""
    st = os.statvfs(disk)
    todo = st.f_bavail * st.f_frsize - leave
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while leave == 0 or todo > 0:
            todo -= os.write(fd, b"\0" * min(65536, max(todo, 4096)))
    except OSError:
        pass
    finally:
        os.close(fd)


@pytest.mark.parametrize("leave", [0, 16384], ids=["full", "room-for-small-files"])
def test_cep_train_on_a_full_disk_is_one_line_and_keeps_the_old_files(leave, tiny_disk, capsys):
    out = tiny_disk / "run"
    with pytest.raises(SystemExit) as e:
        train([*QUICK, "--epochs", "1", "--checkpoint", "--out", str(out)])
    assert e.value.code == 0
    capsys.readouterr()
    before = snapshot(out)
    fill(tiny_disk, leave)
    line = one_line_exit_2(lambda: train([*QUICK, "--epochs", "2", "--checkpoint", "--out", str(out)]), capsys)
    assert "no space left on device" in line and "free space and rerun the same command to resume" in line
    assert str(out) in line
    after = snapshot(out)
    assert not [n for n in after if n.startswith(TEMP_PREFIX)]  # nothing half-written left
    assert after["checkpoint.pt"] == before["checkpoint.pt"]  # the last good state, whole
    (tiny_disk / "filler").unlink()  # space freed: the same command resumes
    with pytest.raises(SystemExit) as e:
        train([*QUICK, "--epochs", "2", "--checkpoint", "--out", str(out)])
    assert e.value.code == 0, capsys.readouterr().err
    assert "resuming from checkpoint.pt" in capsys.readouterr().out


def test_aggregate_on_a_full_disk_is_one_line(tiny_disk, tmp_path, capsys):
    import shutil

    exp = tiny_disk / "paths"
    shutil.copytree(experiment(tmp_path), exp)
    fill(tiny_disk)
    line = one_line_exit_2(lambda: aggregate(exp), capsys)
    assert "no space left on device" in line and str(exp / "summary") in line
    assert not [p for p in (exp / "summary").glob("*") if p.name.startswith(TEMP_PREFIX)]


# ------------------------------------------------------- 5. edited config.yaml
def test_a_hand_edited_trial_config_is_noticed_and_the_record_used(tmp_path, capsys):
    exp = experiment(tmp_path)
    path = exp / "trials" / "C-VF-1h" / "seed=1" / "config.yaml"
    cfg = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**cfg, "lr_tab": [0.5, 0.5], "beta": 0.9}))
    with pytest.raises(SystemExit):
        aggregate(exp, "--no-plots")
    out = capsys.readouterr().out
    needle = "trial C-VF-1h/seed=1: config.yaml differs in beta, lr_tab from the trial's recorded configuration"
    assert needle in out and needle in (exp / "summary" / "table.md").read_text()
    trials = (exp / "summary" / "trials.csv").read_text()
    assert "0.5 0.5" not in trials and "0.01 0.02" in trials  # sweep.json's configuration, not the edit
    with pytest.raises(SystemExit) as e:
        run_main(status_command, {}, [str(exp)])
    assert e.value.code == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "config.yaml" in ln]
    assert len(lines) == 1 and needle in lines[0]


def test_a_rerun_rewrites_an_edited_config_with_a_warning(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit):
        train([*QUICK, "--epochs", "1", "--checkpoint", "--out", str(out)])
    true = (out / "config.yaml").read_text()
    edited = yaml.safe_load(true)
    (out / "config.yaml").write_text(yaml.safe_dump({**edited, "T": 99}))
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        train([*QUICK, "--epochs", "2", "--checkpoint", "--out", str(out)])
    assert e.value.code == 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if "config.yaml" in ln]
    assert len(err) == 1 and "differs in T" in err[0] and "rewrites the file" in err[0]
    assert yaml.safe_load((out / "config.yaml").read_text())["T"] == edited["T"]
    assert yaml.safe_load((out / "config.yaml").read_text())["epochs"] == 2


def test_a_sweep_rerun_rewrites_an_edited_config_from_sweep_json(tmp_path, capsys):
    sweep, storage, exp = finished_sweep(tmp_path)
    path = trial_dir(exp, "EP/seed=1") / "config.yaml"
    true = path.read_bytes()
    path.write_text(yaml.safe_dump({**yaml.safe_load(true), "lr_tab": [0.9, 0.9]}))
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        sweep_main([str(sweep), "--storage", str(storage), "--no-aggregate"])
    assert e.value.code == 0  # every trial finished: nothing runs, no Ray
    err = [ln for ln in capsys.readouterr().err.splitlines() if "config.yaml" in ln]
    assert len(err) == 1 and "trial EP/seed=1" in err[0] and "lr_tab" in err[0]
    assert yaml.safe_load(path.read_text())["lr_tab"] == [0.05, 0.1]


@pytest.mark.ray
def test_a_sweep_on_a_full_disk_is_one_line(tiny_disk, ray_address, tmp_path):
    """A trial's ENOSPC (and Tune's own files failing on the full disk) reach the terminal as short lines:
    the trial's DiskFull on its status line, then one `error:` line, exit 2, no traceback."""
    sweep = tmp_path / "full.yaml"
    sweep.write_text(SWEEP.format(description='"full"').replace("seed: [0, 1]", "seed: [0]")
                     .replace("epochs: 1", "epochs: 5") + "max_failures: 0\n")
    fill(tiny_disk, leave=150_000)  # room for sweep.json and Tune's first files, not for five epochs
    p = subprocess.run([sys.executable, "-c", "from cep.sweep.cli import main; main()", str(sweep), "--storage",
                        str(tiny_disk), "--address", ray_address, "--no-aggregate", "--progress-interval", "0"],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert p.returncode == 2, p.stdout + p.stderr
    assert "Traceback" not in p.stdout + p.stderr and len(p.stdout.splitlines()) < 25  # the live table, no more
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and "no space left on device; free space and rerun the same command" in err[0], p.stderr
