"""Searches on a local Ray cluster: random search packed like a grid, grown, replayed locally."""

from __future__ import annotations

import json

import pytest
from trial_files import metrics, summary

from cep.sweep.cli import main

pytestmark = pytest.mark.ray

SWEEP = """\
name: search
base: {size_tab: [10, 16, 784], train_samples: 100, test_samples: 50, epochs: 2, T: 5, Kmax: 2, batch_size: 20,
       rule: vf, continual: true, randbeta: 0.5, dtype: float64, dataset: mnist5k}
experiments:
  C-VF-1h: {}
grid: {seed: [0, 1]}
search:
  num_samples: 2
  seed: 3
  space:
    lr_tab: [{loguniform: [0.005, 0.05]}, {loguniform: [1, 4], ratio_to: 0}]
resources: {cpu: 1, gpu: 0}
pack: 4
"""


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(args)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_random_search_runs_packed_grows_and_replays_locally(ray_address, tmp_path, capsys):
    import torch

    first = tmp_path / "first.yaml"
    first.write_text(SWEEP)
    code, out, err = run_cli([str(first), "--storage", str(tmp_path), "--no-aggregate", "--progress-interval", "0"],
                             capsys)
    assert code == 0, err
    assert "4 trials in 1 Ray Tune trial" in out
    exp = tmp_path / "search"
    ids = [f"C-VF-1h/search={k:04d}/seed={s}" for k in range(2) for s in (0, 1)]
    record = json.loads((exp / "sweep.json").read_text())
    assert [t["id"] for t in record["trials"]] == ids and record["search"]["seed"] == 3
    done = {i: (exp / "trials" / i / "summary.json").read_text() for i in ids}
    assert all(summary(exp / "trials" / i)["status"] == "finished" for i in ids)
    # growing num_samples: the first points are kept (not rerun), the new ones run
    grown = tmp_path / "grown.yaml"
    grown.write_text(SWEEP.replace("num_samples: 2", "num_samples: 3"))
    code, out, err = run_cli([str(grown), "--storage", str(tmp_path), "--progress-interval", "0"], capsys)
    assert code == 0, err
    assert "growing the experiment" in out and "2 trial(s) added (e.g. C-VF-1h/search=0002/seed=0)" in out
    assert "6 trial(s): 6 finished, 0 errored (4 complete before this run, not rerun)" in out
    assert done == {i: (exp / "trials" / i / "summary.json").read_text() for i in ids}
    # --trial ID --local replays the trial's pack: the sweep's numbers, bit for bit
    threads = torch.get_num_threads()
    try:
        code, out, err = run_cli([str(grown), "--trial", ids[1], "--local", "--out", str(tmp_path / "local")], capsys)
    finally:
        torch.set_num_threads(threads)
    assert code == 0, err
    assert metrics(tmp_path / "local") == metrics(exp / "trials" / ids[1])
