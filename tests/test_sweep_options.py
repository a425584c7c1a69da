"""Options that do nothing in a combination, and a scheduler that could stop nothing, are refused in one line
before anything runs."""

from __future__ import annotations

import pytest
from cli_runs import SWEEP, one_error_line, run_cli


@pytest.mark.parametrize("extra,needle", [
    (["--trial", "trial", "--local", "--dry-run"], "--dry-run: --trial ID --local"),
    (["--trial", "trial", "--local", "--restart"], "--restart: --trial ID --local"),
    (["--progress-interval", "-1"], "--progress-interval: got -1.0"),
    (["--progress-interval", "nan"], "--progress-interval: got nan"),
    (["--progress-interval", "inf", "--dry-run"], "--progress-interval: got inf"),
])
def test_an_option_that_would_do_nothing_is_one_line(extra, needle, tmp_path):
    (tmp_path / "s.yaml").write_text(SWEEP)
    proc = run_cli(["s.yaml", "--storage", str(tmp_path / "st"), *extra], tmp_path)
    one_error_line(proc, needle)
    assert not (tmp_path / "st").exists() and not (tmp_path / "runs").exists()


BIG = ("name: big\nbase: {dataset: mnist5k, epochs: 1, train_samples: 40, test_samples: 20, "
       "size_tab: [10, 512, 512, 784], lr_tab: [0.1, 0.1, 0.1]}\ngrid: {seed: [0, 1]}\nresources: {cpu: 1}\n"
       "search: {num_samples: 2, scheduler: asha, searcher: SEARCHER, space: {beta: {uniform: [0.1, 0.5]}}}\n")


@pytest.mark.parametrize("searcher", ["random", "optuna"])
def test_a_scheduler_whose_auto_packs_hold_one_trial_is_refused_like_pack_1(searcher, tmp_path):
    (tmp_path / "s.yaml").write_text(BIG.replace("SEARCHER", searcher))
    proc = run_cli(["s.yaml", "--storage", str(tmp_path / "st"), "--dry-run"], tmp_path)
    one_error_line(proc, "search.scheduler: asha", "pack: auto trains every trial alone here", "pack: 2 or more")
    (tmp_path / "s.yaml").write_text(BIG.replace("SEARCHER", searcher) + "pack: 2\n")
    proc = run_cli(["s.yaml", "--storage", str(tmp_path / "st"), "--dry-run"], tmp_path)
    assert proc.returncode == 0, proc.stderr
