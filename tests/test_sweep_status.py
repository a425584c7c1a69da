"""`cep-sweep status`: each trial's state from its folder, honest after kills, without Ray."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from cep.layout import trial_dir
from cep.sweep.cli import main
from cep.sweep.status import trial_status
from cep.sweep.store import sweep_record, write_sweep_record

SWEEP = "name: st\nbase: {epochs: 3}\ngrid: {seed: [0, 1, 2, 3]}\n"


def _node(folder, host, pid):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "node.txt").write_text(f"host {host}\nnode_ip -\nray_node_id -\npid {pid}\nstarted now\n")


def _running(folder, epochs_done):
    (folder / "summary.json").write_text(json.dumps({"status": "running", "epochs_done": epochs_done, "epochs": 3,
                                                     "final": {"test_error": 12.5}}))
    (folder / "trial.log").write_text(f"2026-01-01T00:00:00 h pid=1 epoch {epochs_done} done: test error 12.50%\n")


def test_status_is_read_from_the_folders_and_honest_after_kills(tmp_path, capsys):
    from cep.sweep.spec import parse_sweep
    from cep.sweep.store import resolve_trials

    spec = parse_sweep(__import__("yaml").safe_load(SWEEP))
    exp = tmp_path / "st"
    trials = resolve_trials(spec.trials, exp)
    write_sweep_record(exp, sweep_record(spec, trials))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that is gone: the trial's process was killed
    here = socket.gethostname()
    folders = [trial_dir(exp, t.id) for t in trials]
    _node(folders[0], here, os.getpid())  # alive: this process
    _running(folders[0], 1)
    _node(folders[1], here, dead.pid)
    _running(folders[1], 2)
    _node(folders[2], "elsewhere", 4242)
    _running(folders[2], 2)
    with pytest.raises(SystemExit) as e:
        main(["status", str(exp)])
    out = capsys.readouterr().out
    assert e.value.code == 0, out
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith("seed=")}
    assert lines["seed=0"].split()[1:4] == ["running", "1/3", "12.50%"]
    assert lines["seed=1"].split()[1:3] == ["interrupted", "2/3"] and f"pid {dead.pid} is gone" in lines["seed=1"]
    assert "elsewhere" in lines["seed=2"] and "ago" in lines["seed=2"]
    assert lines["seed=3"].split()[1:3] == ["pending", "0/3"]
    assert "4 trial(s): 1 running, 2 interrupted, 1 pending" in out
    assert trial_status("x", folders[1], "train", 3).status == "interrupted"


def test_status_of_a_folder_that_is_not_an_experiment_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["status", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.strip() == f"error: {tmp_path}: not a cep-sweep experiment (no sweep.json); " \
        "give <storage>/<sweep name>"


def test_status_does_not_import_ray(tmp_path):
    code = ("import sys; from cep.sweep.cli import main\n"
            "try: main(['status', sys.argv[1]])\n"
            "except SystemExit: pass\n"
            "assert 'ray' not in sys.modules and 'torch' not in sys.modules, 'imported'")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 0, proc.stderr
