"""`cep-sweep --trial ID --local` replays a packed trial exactly (its whole pack, same program), `--alone` does
not; a local run never writes into a sweep's experiment folder, and a finished folder run again stays as it was."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest

from cep.sweep.cli import main

SWEEP = """\
name: replay
description: a small float32 sweep whose C-VF trials train as one pack
base: {size_tab: [10, 32, 784], train_samples: 200, test_samples: 100, epochs: 2, T: 10, Kmax: 4,
       dataset: mnist5k, dtype: float32}
experiments:
  EP: {rule: ep, lr_tab: [0.05, 0.1]}
  C-VF: {rule: vf, continual: true, lr_tab: [0.01, 0.02], randbeta: 0.5, grid: {angle: [0, 90, 180]}}
grid:
  seed: [0]
resources: {cpu: 1, gpu: 0}
"""
CVF = ["C-VF/angle=0/seed=0", "C-VF/angle=90/seed=0", "C-VF/angle=180/seed=0"]
TIMING = ("epoch_seconds", "elapsed_seconds")


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(args)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def numbers(folder: Path) -> list[dict[str, str]]:
    """metrics.csv as written (strings: bit-for-bit comparison), every column but the wall-clock ones."""
    with open(folder / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def sweep_exp(sweep_file, ray_address, tmp_path_factory):
    storage = tmp_path_factory.mktemp("storage")
    with pytest.raises(SystemExit) as e:
        main([str(sweep_file), "--storage", str(storage), "--no-aggregate", "--progress-interval", "0"])
    assert e.value.code == 0
    return storage / "replay"


@pytest.mark.ray
def test_local_replays_a_packed_member_bit_for_bit_and_alone_differs(sweep_exp, sweep_file, tmp_path, capsys):
    tid = CVF[1]
    local = tmp_path / "local"
    code, out, err = run_cli([str(sweep_file), "--trial", tid, "--local", "--out", str(local)], capsys)
    assert code == 0, err
    assert (f"the sweep trains this trial in a pack of 3 ({CVF[0]}+2): training that whole pack here (same members, "
            f"order and threads) to replay it exactly, showing this trial; the other 2 member(s)' results go to "
            f"{local / 'pack'}/<trial id>/") in out
    assert [ln.split()[1] for ln in out.splitlines() if ln.startswith("epoch ")] == ["1", "2"]  # this trial's only
    assert numbers(local) == numbers(sweep_exp / "trials" / tid)
    for other in (CVF[0], CVF[2]):  # the other members, beside it
        assert numbers(local / "pack" / other) == numbers(sweep_exp / "trials" / other)
    alone = tmp_path / "alone"
    code, out, err = run_cli([str(sweep_file), "--trial", tid, "--local", "--alone", "--out", str(alone)], capsys)
    assert code == 0, err
    assert "--alone: the sweep trains this trial in a pack of 3" in out and "within an epoch" in out
    assert not (alone / "pack").exists()
    mine, theirs = numbers(alone), numbers(sweep_exp / "trials" / tid)
    assert [r["epoch"] for r in mine] == ["1", "2"] and mine != theirs  # float32, another summation order
    # a finished local folder run again: nothing trained, every file (trial.log too) byte for byte as it was
    before = hashes(local)
    code, out, err = run_cli([str(sweep_file), "--trial", tid, "--local", "--out", str(local)], capsys)
    assert code == 0, err
    assert "already finished after epoch 2; nothing left to train" in out
    assert hashes(local) == before


@pytest.mark.ray
def test_local_never_writes_into_a_sweeps_experiment_folder(sweep_exp, sweep_file, capsys):
    before = hashes(sweep_exp)
    for target in (sweep_exp / "trials" / CVF[1], sweep_exp / "trials" / "EP" / "seed=0", sweep_exp / "elsewhere"):
        for extra in ([], ["--alone"]):
            code, out, err = run_cli([str(sweep_file), "--trial", CVF[1], "--local", *extra, "--out", str(target)],
                                     capsys)
            assert code == 2 and out == ""
            assert err == (f"error: --out {target}: inside the sweep experiment folder {sweep_exp} (it holds "
                           "sweep.json); a local run never writes into a sweep's results: choose a folder outside "
                           f"it (default runs/replay/{CVF[1]})\n")
    assert hashes(sweep_exp) == before and not (sweep_exp / "elsewhere").exists()


def test_out_inside_an_experiment_is_refused_before_anything_runs(sweep_file, tmp_path, capsys):
    """Without Ray: any folder below one holding sweep.json (a copied experiment too) is refused."""
    exp = tmp_path / "copied"
    (exp / "trials" / "EP" / "seed=0").mkdir(parents=True)
    (exp / "sweep.json").write_text("{}")
    (exp / "trials" / "EP" / "seed=0" / "summary.json").write_text('{"status": "finished"}')
    before = hashes(exp)
    link = tmp_path / "link"
    link.symlink_to(exp / "trials")
    for target in (exp / "trials" / "EP" / "seed=0", link / "EP" / "seed=0"):
        code, out, err = run_cli([str(sweep_file), "--trial", "EP/seed=0", "--local", "--out", str(target)], capsys)
        assert code == 2 and err.startswith(f"error: --out {target}: inside the sweep experiment folder ")
        assert len(err.splitlines()) == 1
    assert hashes(exp) == before


def test_alone_needs_local(sweep_file, capsys):
    code, out, err = run_cli([str(sweep_file), "--alone"], capsys)
    assert code == 2 and err.startswith("error: --trial ID and --local go together")


def test_a_finished_folder_run_again_keeps_its_result_files(tmp_path):
    """The runner's replay of a trial that has ended leaves files that already record that end untouched."""
    from cep.config import TrialConfig
    from cep.runner import run

    cfg = TrialConfig(size_tab=(10, 8, 784), lr_tab=(0.05, 0.1), T=4, Kmax=2, train_samples=40, test_samples=20,
                      epochs=1, seed=0, dataset="mnist5k", checkpoint=True, out_dir=str(tmp_path))
    assert run(cfg, tmp_path).status == "finished"
    summary = json.loads((tmp_path / "summary.json").read_text())  # as written on another node (a sweep's)
    (tmp_path / "summary.json").write_text(json.dumps({**summary, "host": "node-7"}, indent=2) + "\n")
    before = {k: v for k, v in hashes(tmp_path).items() if k != "trial.log"}
    outcome = run(cfg, tmp_path)
    assert outcome.replayed
    assert {k: v for k, v in hashes(tmp_path).items() if k != "trial.log"} == before
    (tmp_path / "learning_curve.png").unlink()  # a file that is missing is written again
    run(cfg, tmp_path)
    assert (tmp_path / "learning_curve.png").exists()
