"""A local run resumes like a sweep's trial: the same `cep train` command after SIGTERM, SIGKILL or a
finished run continues (or keeps) the same run, bit for bit against an uninterrupted run (float64).

Real processes, real signals: the console script in a scratch folder, as a user runs it.
"""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
from pathlib import Path

import torch
from processes import wait

CEP = str(Path(sys.executable).with_name("cep"))
ARGS = ["train", "--preset", "EP-1h", "--epochs", "3", "--seed", "0", "--dtype", "float64", "--dataset", "mnist5k",
        "--device", "cpu", "--train-samples", "4000", "--test-samples", "200", "--quiet"]
TIMING = ("epoch_seconds", "elapsed_seconds")


def start(cwd: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([CEP, *ARGS, *extra], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def epochs_done(folder: Path) -> int:
    try:
        return len((folder / "metrics.csv").read_text().splitlines()) - 1
    except OSError:
        return 0


def run_folders(cwd: Path) -> list[Path]:
    return sorted((cwd / "runs").iterdir()) if (cwd / "runs").exists() else []


def stop_after(cwd: Path, epoch: int, signum: int) -> tuple[int, str]:
    """Start the command, signal it once `epoch` epochs are saved (mid-epoch `epoch + 1`); its code, stderr."""
    proc = start(cwd)
    wait(lambda: run_folders(cwd) and epochs_done(run_folders(cwd)[0]) >= epoch, 120, f"epoch {epoch}", proc)
    assert epochs_done(run_folders(cwd)[0]) < 3, "the run ended before the signal: nothing was interrupted"
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def results(folder: Path) -> tuple[list[dict[str, str]], dict[str, torch.Tensor]]:
    rows = [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader((folder / "metrics.csv").open())]
    state = torch.load(folder / "checkpoint.pt", weights_only=True)
    return rows, state


def assert_same_tensors(a: object, b: object) -> int:
    """Every tensor of two saved states equal bit for bit (the weights, the generators); how many compared."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
        return 1
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        return sum(assert_same_tensors(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b)
        return sum(assert_same_tensors(x, y) for x, y in zip(a, b))
    return 0


def test_rerunning_the_same_command_resumes_after_sigterm_and_sigkill_bit_for_bit(tmp_path):
    reference = subprocess.run([CEP, *ARGS, "--out", "reference"], cwd=tmp_path, capture_output=True, text=True,
                               timeout=300)
    assert reference.returncode == 0, reference.stderr
    ref_rows, ref_state = results(tmp_path / "reference")
    (tmp_path / "reference").rename(tmp_path.parent / f"{tmp_path.name}-reference")  # only runs/ stays here

    code, err = stop_after(tmp_path, 1, signal.SIGTERM)
    assert code == 143 and "stopped by SIGTERM; rerun the same command to resume" in err, err
    assert "Traceback" not in err
    code, _ = stop_after(tmp_path, 2, signal.SIGKILL)
    assert code == -signal.SIGKILL

    [folder] = run_folders(tmp_path)  # the same command found the same folder each time
    assert folder.name.startswith("EP-1h-")
    done = epochs_done(folder)
    resumed = subprocess.run([CEP, *ARGS], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    said = [line for line in resumed.stdout.splitlines() if line.startswith("resuming")]
    assert said == [f"resuming from checkpoint.pt in {Path('runs') / folder.name} after epoch {done}"], resumed.stdout
    rows, state = results(folder)
    assert rows == ref_rows and len(rows) == 3
    assert assert_same_tensors(state, ref_state) > 4

    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != "trial.log"}
    again = subprocess.run([CEP, *ARGS], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "already finished after epoch 3; nothing left to train" in again.stdout
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != "trial.log"} == before
    assert run_folders(tmp_path) == [folder]


def test_starting_afresh_is_explicit_and_another_result_is_another_run(tmp_path):
    quick = ["--epochs", "1", "--train-samples", "200"]
    first = subprocess.run([CEP, *ARGS, *quick], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    [folder] = run_folders(tmp_path)
    fresh = subprocess.run([CEP, *ARGS, *quick, "--overwrite"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=300)
    assert fresh.returncode == 0 and "resuming" not in fresh.stdout and run_folders(tmp_path) == [folder]
    other = subprocess.run([CEP, *ARGS, *quick, "--beta", "0.2"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=300)
    assert other.returncode == 0 and "resuming" not in other.stdout
    assert len(run_folders(tmp_path)) == 2  # beta changes the result: another folder, the first one untouched


def test_an_unseeded_run_resumes_with_the_seed_it_drew(tmp_path):
    args = [a for a in ARGS if a not in ("--seed", "0")] + ["--epochs", "1", "--train-samples", "200"]
    first = subprocess.run([CEP, *args], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    again = subprocess.run([CEP, *args, "--epochs", "2"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "after epoch 1" in again.stdout, again.stdout
    [folder] = run_folders(tmp_path)
    assert epochs_done(folder) == 2
    seeds = [line.rsplit("seed ", 1)[1] for out in (first.stdout, again.stdout) for line in out.splitlines()
             if line.startswith("final test error")]
    assert len(seeds) == 2 and seeds[0] == seeds[1]  # the drawn seed, recorded, is the one the rerun continues


def test_ctrl_c_says_how_to_resume_and_exits_130(tmp_path):
    code, err = stop_after(tmp_path, 1, signal.SIGINT)
    assert code == 130 and "interrupted by Ctrl-C; rerun the same command to resume" in err, err
    assert "Traceback" not in err
    resumed = subprocess.run([CEP, *ARGS, "--epochs", "2"], cwd=tmp_path, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0 and "after epoch 1" in resumed.stdout, resumed.stdout + resumed.stderr


def test_cep_run_finds_its_run_again(tmp_path):
    """The original main.py flags: the same command finds the same runs/NAME-HASH folder and keeps it."""
    legacy = ["run", "--action", "train", "--discrete", "--size_tab", "10", "16", "784", "--lr_tab", "0.04", "0.08",
              "--T", "5", "--Kmax", "2", "--beta", "0.1", "--epochs", "1", "--seed", "0", "--dataset", "mnist5k",
              "--train-samples", "100", "--test-samples", "50", "--device", "cpu"]
    first = subprocess.run([CEP, *legacy], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    [folder] = run_folders(tmp_path)
    again = subprocess.run([CEP, *legacy, "--epochs", "2"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0 and f"in {Path('runs') / folder.name} after epoch 1" in again.stdout, again.stdout
    assert run_folders(tmp_path) == [folder] and epochs_done(folder) == 2
