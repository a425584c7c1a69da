"""A pack survives a member's own failure on a real Ray cluster: that member alone is errored (its error.txt
says so, with the traceback) after 1 + max_failures attempts, the others finish with the numbers of a pack
that never failed, and the retries replay them instead of training them again."""

from __future__ import annotations

import pytest
from commands import run_cli
from trial_files import log_lines, metrics, summary

from cep.sweep.trainable import OWN_FAILURE

pytestmark = pytest.mark.ray

SWEEP = """\
name: survive
description: a pack of three C-VF trials
base: {size_tab: [10, 32, 784], lr_tab: [0.01, 0.02], train_samples: 200, test_samples: 100, epochs: 3,
       T: 10, Kmax: 4, dataset: mnist5k, rule: vf, continual: true, randbeta: 0.5, dtype: float64}
experiments:
  C-VF: {grid: {angle: [0, 45, 90]}}
grid:
  seed: [0]
resources: {cpu: 1, gpu: 0}
max_failures: 1
"""
BAD = "C-VF/angle=45/seed=0"
GOOD = ["C-VF/angle=0/seed=0", "C-VF/angle=90/seed=0"]


def test_a_member_failing_every_time_is_errored_alone_and_its_pack_finishes(sweep_file, ray_address, tmp_path,
                                                                            capsys, monkeypatch):
    code, out, err = run_cli([str(sweep_file), "--storage", str(tmp_path / "never"), "--no-aggregate"], capsys)
    assert code == 0 and "3 trials in 1 Ray Tune trial" in out, out + err
    monkeypatch.setenv("CEP_FAULT_INJECT", f"{BAD}:2:always")
    code, out, err = run_cli([str(sweep_file), "--storage", str(tmp_path), "--no-aggregate",
                              "--progress-interval", "0"], capsys)
    assert code == 1
    assert "3 trial(s): 2 finished, 1 errored" in out
    assert f"{BAD}: errored: cep.sweep.faults.FaultInjected: fault injected" in err
    bad = tmp_path / "survive" / "trials" / BAD
    text = (bad / "error.txt").read_text()
    assert text.startswith(OWN_FAILURE + "Traceback (most recent call last):")
    assert text.rstrip().endswith(f"FaultInjected: fault injected by CEP_FAULT_INJECT in epoch 2 of {BAD}")
    assert (bad / "errors.log").read_text().count("\ncep.sweep.faults.FaultInjected: ") == 2  # 1 + max_failures
    assert summary(bad)["status"] == "running" and summary(bad)["epochs_done"] == 1
    for tid in GOOD:
        folder = tmp_path / "survive" / "trials" / tid
        assert summary(folder)["status"] == "finished" and not (folder / "error.txt").exists()
        assert metrics(folder) == metrics(tmp_path / "never" / "survive" / "trials" / tid)  # float64, as written
        lines = log_lines(folder)
        assert [ln.split(" (")[0] for ln in lines if ln.startswith("start")] == ["start after epoch 0"]
        assert [ln.split(" (")[0] for ln in lines if ln.startswith("replay")] == ["replay: already finished after "
                                                                                  "epoch 3"]
