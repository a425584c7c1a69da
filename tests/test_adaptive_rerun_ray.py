"""An adaptive search's trials are rerun and replayed like grid trials (on a local Ray cluster): a deleted trial
folder is trained again, `--restart --only ID` reruns a recorded trial, and `--trial ID --local` trains the pack
of the trial's own round (a round cut short by num_samples, then grown), the sweep's numbers bit for bit."""

from __future__ import annotations

import json
import shutil

import pytest
from trial_files import metrics

from cep.sweep.cli import main

pytestmark = pytest.mark.ray

SWEEP = """\
name: search
base: {size_tab: [10, 8, 784], lr_tab: [0.05, 0.1], train_samples: 40, test_samples: 20, epochs: 1, T: 4, Kmax: 2,
       batch_size: 20, rule: vf, continual: true, dtype: float64, dataset: mnist5k, seed: 0}
search:
  num_samples: 3
  searcher: optuna
  space:
    beta: {uniform: [0.1, 0.5]}
resources: {cpu: 1, gpu: 0}
pack: 2
"""
IDS = [f"search={k:04d}" for k in range(4)]


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(args)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_adaptive_trials_rerun_restart_and_replay_in_their_rounds_packs(ray_address, tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(SWEEP)
    common = ["--storage", str(tmp_path), "--address", ray_address, "--no-aggregate", "--progress-interval", "1"]
    code, out, err = run_cli([str(path), *common], capsys)
    assert code == 0, err
    path.write_text(SWEEP.replace("num_samples: 3", "num_samples: 4"))  # rounds: [0, 1], [2], [3]
    code, out, err = run_cli([str(path), *common], capsys)
    assert code == 0, err
    exp = tmp_path / "search"
    assert [len(r) for r in json.loads((exp / "search.json").read_text())["rounds"]] == [2, 1, 1]
    assert json.loads((exp / "sweep.json").read_text())["packs"] == [IDS[:2], IDS[2:3], IDS[3:]]
    trained = {i: metrics(exp / "trials" / i) for i in IDS}

    shutil.rmtree(exp / "trials" / IDS[0])  # a deleted folder of a told round: trained again, the same
    code, out, err = run_cli([str(path), *common], capsys)
    assert code == 0, out + err
    assert metrics(exp / "trials" / IDS[0]) == trained[IDS[0]]

    code, out, err = run_cli([str(path), *common, "--restart", "--only", IDS[1]], capsys)
    assert code == 0, out + err
    assert "--restart: discarded the results of 1 trial(s)" in out
    assert metrics(exp / "trials" / IDS[1]) == trained[IDS[1]]

    code, out, err = run_cli([str(path), "--storage", str(tmp_path), "--trial", IDS[2], "--local", "--out",
                              str(tmp_path / "local")], capsys)
    assert code == 0, err
    assert "pack of" not in out  # it trained alone, in its own round
    assert metrics(tmp_path / "local") == trained[IDS[2]]
