"""Input bounds and one-line errors: what cep refuses up front, and the words that name the real cause.

Seeds within what torch's generator keeps, a trial-count limit and a fast dry run, only regular files read
(within a size budget), absurd sizes and step counts refused up front, one line instead of a traceback
(MNIST files, deep YAML, long paths, float32's range, thread counts), and words that name the real cause.
Cases that would hang or crash the test process without their fix run in a subprocess with a timeout.
"""

from __future__ import annotations

import gzip
import os
import resource
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from commands import one_line_exit_2, run_process
from processes import free_port

from cep.cli import LEGACY_FIELD_NAMES, TRAIN_FIELD_NAMES, cli, run_main
from cep.config import MAX_SEED, ConfigError, TrialConfig
from cep.sweep.cli import main as sweep_main

QUICK = ["--train-samples", "40", "--test-samples", "20", "--device", "cpu", "--sizes", "10,8,784", "--seed", "0",
         "--quiet"]
SWEEP = "name: s\nbase: {dataset: mnist5k, epochs: 1, train_samples: 40, test_samples: 20, size_tab: [10, 8, 784]}\n"
LONG = "x" * 300  # one path component longer than any common file system allows (255 bytes)


def assert_one_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert all(n in lines[0] for n in needles), lines[0]
    return lines[0]


# --------------------------------------------------------------------------- 1. seeds
@pytest.mark.parametrize("args,names", [
    (["train", "--seed", str(2**32), *QUICK[:-3]], TRAIN_FIELD_NAMES),
    (["train", "--seed", str(2**32 + 7), *QUICK[:-3]], TRAIN_FIELD_NAMES),
    (["run", "--seed", str(2**63), "--size_tab", "10", "8", "784", "--dataset", "mnist5k"], LEGACY_FIELD_NAMES),
    (["gdu", "--seed", str(2**40)], TRAIN_FIELD_NAMES),
])
def test_seeds_that_torch_would_fold_onto_smaller_ones_are_refused(args, names, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = one_line_exit_2(args + ["--out", str(tmp_path / "o")], capsys, names=names)
    assert "--seed" in line and "2**32-1" in line and "4294967295" in line
    assert not (tmp_path / "o").exists()


def test_a_grid_of_seeds_that_differ_by_2_to_the_32_is_refused(tmp_path, capsys):
    (tmp_path / "s.yaml").write_text(SWEEP + "grid: {seed: [0, 4294967296]}\n")
    line = one_line_exit_2([str(tmp_path / "s.yaml"), "--dry-run"], capsys, sweep=True)
    assert line.startswith("error: grid.seed") and "2**32-1" in line


def test_every_accepted_seed_is_a_distinct_generator_and_old_seeds_are_unchanged():
    """The accepted range is exactly what the CPU generator keeps: its ends differ, and the mapping of a seed
    to its weights is the one the published runs used (manual_seed of the seed itself)."""
    from cep.model import init_params

    assert torch.rand(4, generator=torch.Generator().manual_seed(2**32)).equal(
        torch.rand(4, generator=torch.Generator().manual_seed(0)))  # why the range ends at 2**32-1
    draws = {s: torch.rand(4, generator=torch.Generator().manual_seed(s)) for s in (0, 1, 2**31, MAX_SEED)}
    assert len({tuple(v.tolist()) for v in draws.values()}) == len(draws)
    cfg = TrialConfig(seed=MAX_SEED, size_tab=(10, 8, 784))
    with pytest.raises(ConfigError, match="2\\*\\*32-1"):
        TrialConfig(seed=MAX_SEED + 1)
    from cep.checkpoint import new_state

    state = new_state(cfg.replace(seed=3), torch.device("cpu"))
    again = init_params(cfg.replace(seed=3), torch.Generator().manual_seed(3), "cpu", torch.float32)
    assert all(torch.equal(a, b) for a, b in zip(state.params.W, again.W, strict=True))


# --------------------------------------------------------------------------- 2. bounded sweeps
def _grid(values_per_key: int, keys: int) -> str:
    fields = ["seed", "angle", "beta", "T", "Kmax", "randbeta"][:keys]
    scale = {"seed": 1, "angle": 1, "beta": 0.01, "T": 1, "Kmax": 1, "randbeta": 0.01}
    offset = {"seed": 0, "angle": 0, "beta": 0.01, "T": 5, "Kmax": 1, "randbeta": 0.0}
    lines = [f"  {f}: [{', '.join(repr(round(offset[f] + scale[f] * i, 2)) for i in range(values_per_key))}]"
             for f in fields]
    return SWEEP.replace("{dataset", "{rule: vf, dataset") + "grid:\n" + "\n".join(lines) + "\n"


def test_a_sweep_of_too_many_trials_is_refused_before_expanding(tmp_path, capsys):
    (tmp_path / "big.yaml").write_text(_grid(10, 5))  # 100,000 trials
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    line = one_line_exit_2([str(tmp_path / "big.yaml"), "--dry-run"], capsys, sweep=True, budget_s=5)
    assert "100,000 trials" in line and "10,000" in line and "fewer grid values" in line
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KB


def test_the_plan_of_ten_thousand_trials_takes_seconds(tmp_path):
    """Parse, resolve, pack and tabulate 10**4 trials (what --dry-run does before its calibration)."""
    from cep.sweep.plan import dry_run_table, make_packs, pack_size
    from cep.sweep.spec import load_sweep
    from cep.sweep.store import resolve_trials

    (tmp_path / "s.yaml").write_text(_grid(10, 4))
    start = time.process_time()  # CPU time: the tests share loaded machines
    spec = load_sweep(tmp_path / "s.yaml")
    trials = resolve_trials(spec.trials, tmp_path / "exp")
    table = dry_run_table(spec, trials, make_packs(trials, pack_size(spec)))
    assert time.process_time() - start < 5  # was ~10 s (quadratic pack order, a second coercion, revalidation)
    assert "10000 trial(s) of sweep s" in table
    assert trials[5].config.out_dir == str(tmp_path / "exp" / "trials" / trials[5].id) and trials[5].config.checkpoint


def test_the_dry_run_calibrates_a_few_programs_and_scales_the_rest(tmp_path, capsys):
    (tmp_path / "s.yaml").write_text(SWEEP + "pack: 1\ngrid: {T: [2, 3, 4, 5, 6, 7]}\n")
    with pytest.raises(SystemExit) as e:
        sweep_main([str(tmp_path / "s.yaml"), "--dry-run", "--storage", str(tmp_path / "st")])
    out = capsys.readouterr().out
    assert e.value.code == 0
    assert "~: scaled by multiply-adds from the 4 pack programs calibrated" in out
    assert sum(line.split()[3].startswith("~") for line in out.splitlines() if line.startswith(("5 ", "6 "))) == 2


# --------------------------------------------------------------------------- 3. regular files, bounded
def _special(tmp_path: Path, kind: str, name: str) -> Path:
    path = tmp_path / name
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    return path


@pytest.mark.parametrize("kind,word", [("fifo", "a FIFO"), ("device", "a device")])
@pytest.mark.parametrize("where", ["--config", "sweep file"])
def test_a_fifo_or_device_as_a_yaml_file_is_refused_at_once(kind, word, where, tmp_path):
    path = _special(tmp_path, kind, "in.yaml")
    if where == "--config":
        proc = run_process(["train", "--config", str(path), *QUICK], tmp_path, timeout=60)
    else:
        proc = run_process([str(path), "--dry-run"], tmp_path, sweep=True, timeout=60)
    assert_one_line(proc, str(path), word, "not a regular file")


def test_a_fifo_as_checkpoint_is_refused_without_blocking(tmp_path):
    (tmp_path / "o").mkdir()
    os.mkfifo(tmp_path / "o" / "checkpoint.pt")
    proc = run_process(["train", *QUICK, "--out", "o", "--checkpoint"], tmp_path, timeout=60)
    assert_one_line(proc, "checkpoint.pt", "a FIFO")


def test_a_huge_checkpoint_is_refused_unread(tmp_path):
    from cep.checkpoint import CHECKPOINT_BYTES, CheckpointError, load_state

    path = tmp_path / "checkpoint.pt"
    with open(path, "wb") as f:
        f.truncate(CHECKPOINT_BYTES + 1)  # sparse: no disk used
    start = time.process_time()
    with pytest.raises(CheckpointError, match="too large for a checkpoint"):
        load_state(path)
    assert time.process_time() - start < 2


def test_a_fifo_as_sweep_json_is_one_line(tmp_path):
    (tmp_path / "s.yaml").write_text(SWEEP + "grid: {seed: [0]}\n")
    (tmp_path / "st" / "s").mkdir(parents=True)
    os.mkfifo(tmp_path / "st" / "s" / "sweep.json")
    proc = run_process(["s.yaml", "--storage", str(tmp_path / "st")], tmp_path, sweep=True, timeout=60)
    assert_one_line(proc, "sweep.json", "a FIFO")


@pytest.mark.parametrize("name", ["metrics.csv", "summary.json", "error.txt", "node.txt", "trial.log"])
def test_a_fifo_in_a_trial_folder_is_noted_without_blocking(name, tmp_path):
    folder = tmp_path / "trial"
    folder.mkdir()
    os.mkfifo(folder / name)
    code = ("from cep.results import read_folder; from cep.sweep.status import _last_log_line, _node; "
            "from pathlib import Path; p = Path('trial'); s = read_folder(p); "
            "print(s.notes, s.error, _node(p), _last_log_line(p))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert proc.returncode == 0, proc.stderr
    if name in ("metrics.csv", "summary.json", "error.txt"):
        assert "a FIFO" in proc.stdout


def test_a_metrics_file_beyond_its_budget_is_refused(tmp_path):
    from cep.results import METRICS_BYTES, read_folder

    with open(tmp_path / "metrics.csv", "wb") as f:
        f.truncate(METRICS_BYTES + 1)
    state = read_folder(tmp_path)
    assert any("too large for a metrics.csv" in n for n in state.notes)


# --------------------------------------------------------------------------- 4. absurd sizes and steps
@pytest.mark.parametrize("args,needle", [
    (["train", "--free-steps", str(10**9)], "--free-steps: got 1,000,000,000; at most 10,000"),
    (["train", "--nudged-steps", str(10**7)], "--nudged-steps: got 10,000,000; at most 10,000"),
    (["train", "--epochs", str(10**12)], "--epochs: got 1,000,000,000,000; at most 10,000"),
    (["train", "--batch-size", str(10**9)], "--batch-size: got 1,000,000,000; at most 100,000"),
    (["train", "--test-batch-size", str(10**9)], "--test-batch-size: got 1,000,000,000; at most 100,000"),
    (["train", "--train-samples", str(10**15)], "--train-samples: got 1,000,000,000,000,000; at most"),
    (["train", "--sizes", "10,100000,784", "--lrs", "0.1,0.1", "--batch-size", "50000", "--free-steps", "1000"],
     "--batch-size: one minibatch costs"),
    (["gdu", "--units", str(10**8)], "--units: got 100,000,000; at most 1,000"),
    (["gdu", "--free-steps", str(10**9)], "--free-steps: got 1,000,000,000; at most 10,000"),
])
def test_absurd_sizes_and_step_counts_are_refused_up_front(args, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    quick = [] if args[0] == "gdu" else QUICK[:-3]
    line = one_line_exit_2(args[:1] + quick + args[1:] + ["--out", str(tmp_path / "o")], capsys, budget_s=10)
    assert needle in line, line
    assert not (tmp_path / "o").exists()


def test_an_absurd_step_count_in_a_sweep_is_refused(tmp_path, capsys):
    (tmp_path / "s.yaml").write_text(SWEEP + "grid: {T: [10, 1000000000]}\n")
    line = one_line_exit_2([str(tmp_path / "s.yaml"), "--dry-run"], capsys, sweep=True)
    assert line.startswith("error: grid.T: got 1,000,000,000; at most 10,000")


# --------------------------------------------------------------------------- 5. one line, not a traceback
def _idx(data: torch.Tensor) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, data.dim()) + b"".join(struct.pack(">I", n) for n in data.shape)
    return header + data.to(torch.uint8).numpy().tobytes()


def _mnist(raw: Path) -> dict[str, bytes]:
    """Small but well-formed MNIST IDX files (30 training, 12 test images)."""
    g = torch.Generator().manual_seed(0)
    files = {}
    for prefix, n in (("train", 30), ("t10k", 12)):
        files[f"{prefix}-images-idx3-ubyte"] = _idx(torch.randint(0, 256, (n, 28, 28), generator=g))
        files[f"{prefix}-labels-idx1-ubyte"] = _idx(torch.randint(0, 10, (n,), generator=g))
    raw.mkdir(parents=True, exist_ok=True)
    return files


MNIST_ARGS = ["train", "--dataset", "mnist", "--data-dir", "data", "--out", "o", "--train-samples", "20",
              "--test-samples", "10", "--sizes", "10,8,784", "--batch-size", "10", "--test-batch-size", "5",
              "--seed", "0", "--quiet", "--device", "cpu"]


def test_an_empty_mnist_gz_is_named_and_a_repaired_one_is_used(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = tmp_path / "data" / "MNIST" / "raw"
    files = _mnist(raw)
    for name, data in files.items():
        (raw / f"{name}.gz").write_bytes(gzip.compress(data))
    (raw / "train-images-idx3-ubyte.gz").write_bytes(b"")
    line = one_line_exit_2(MNIST_ARGS, capsys)
    assert "train-images-idx3-ubyte.gz is damaged" in line and "0 bytes" in line and "delete it" in line
    (raw / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(files["train-images-idx3-ubyte"]))
    with pytest.raises(SystemExit) as e:
        run_main(cli, TRAIN_FIELD_NAMES, MNIST_ARGS)
    assert e.value.code == 0, capsys.readouterr().err


def test_a_stale_unpacked_mnist_file_is_unpacked_again_from_its_gz(tmp_path):
    from cep.data import load_mnist

    raw = tmp_path / "MNIST" / "raw"
    files = _mnist(raw)
    for name, data in files.items():
        (raw / name).write_bytes(data)
    (raw / "train-images-idx3-ubyte").write_bytes(b"")  # what an earlier, failed unpacking left
    (raw / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(files["train-images-idx3-ubyte"]))
    d = load_mnist(tmp_path)
    assert d.x_train.shape == (30, 784)
    assert (raw / "train-images-idx3-ubyte").read_bytes() == files["train-images-idx3-ubyte"]


@pytest.mark.parametrize("name,cut", [("train-images-idx3-ubyte", 1000), ("t10k-labels-idx1-ubyte", 3),
                                      ("t10k-images-idx3-ubyte", 0)])
def test_a_truncated_unpacked_idx_file_says_which_and_how(name, cut, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = tmp_path / "data" / "MNIST" / "raw"
    files = _mnist(raw)
    for n, data in files.items():
        (raw / n).write_bytes(data[:cut] if n == name else data)
    line = one_line_exit_2(MNIST_ARGS, capsys)
    assert f"{raw / name} is damaged" in line and "could not be downloaded" not in line
    if cut > 16:
        assert f"expected {len(files[name]):,} bytes" in line and f"found {cut:,}" in line


def test_a_fifo_as_an_mnist_file_is_refused(tmp_path):
    raw = tmp_path / "data" / "MNIST" / "raw"
    for n, data in _mnist(raw).items():
        (raw / n).write_bytes(data)
    (raw / "train-labels-idx1-ubyte").unlink()
    os.mkfifo(raw / "train-labels-idx1-ubyte")
    assert_one_line(run_process(MNIST_ARGS, tmp_path, timeout=60), "train-labels-idx1-ubyte", "a FIFO")


@pytest.mark.parametrize("depth", [100, 1000, 100_000])
@pytest.mark.parametrize("where", ["--config", "sweep file"])
def test_deeply_nested_yaml_is_one_line(depth, where, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.yaml").write_text("name: x\nbase: " + "[" * depth + "]" * depth + "\n")
    if where == "--config":
        line = one_line_exit_2(["train", "--config", "d.yaml", *QUICK], capsys)
    else:
        line = one_line_exit_2(["d.yaml", "--dry-run"], capsys, sweep=True)
    assert "d.yaml: nested too deeply" in line


@pytest.mark.parametrize("args,sweep,needle", [
    (["train", *QUICK, "--out", LONG], False, "--out: the path component"),
    (["train", *QUICK, "--out", f"ok/{LONG}/x"], False, "--out: the path component"),
    (["train", *QUICK, "--data-dir", LONG, "--dataset", "mnist"], False, "--data-dir: the path component"),
    (["s.yaml", "--storage", LONG], True, "--storage"),
    (["s.yaml", "--storage", LONG, "--dry-run"], True, "--storage"),
    (["s.yaml", "--name", LONG], True, "--name"),
    (["s.yaml", "--trial", "seed=0", "--local", "--out", LONG], True, "out_dir: the path component"),
])
def test_a_path_component_too_long_for_the_file_system_is_one_line(args, sweep, needle, tmp_path, capsys,
                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(SWEEP + "grid: {seed: [0]}\n")
    line = one_line_exit_2(args, capsys, sweep=sweep)
    assert needle in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


@pytest.mark.parametrize("args,needle", [
    (["--dt", "1e39", "--setting", "continuous"], "--dt: got 1e+39, beyond float32's range"),
    (["--beta", "-3e38", "--beta", "1e300"], "--beta: got 1e+300, beyond float32's range"),
    (["--beta", "1e-45"], "--beta: got 1e-45, beyond float32's range"),
    (["--lrs", "0.1,5e38"], "--lrs: got 5e+38, beyond float32's range"),
    (["--randbeta", "1e-40"], "--randbeta: got 1e-40, beyond float32's range"),
])
def test_numbers_beyond_float32_are_refused_in_float32_trials(args, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = one_line_exit_2(["train", *QUICK, "--out", "o", *args], capsys)
    assert needle in line and "dtype float64" in line
    TrialConfig.from_dict({"dtype": "float64", "beta": 1e300, "dt": 1e39})  # float64 holds them


def test_a_grid_value_beyond_float32_is_refused(tmp_path, capsys):
    (tmp_path / "s.yaml").write_text(SWEEP + "grid: {beta: [0.1, 1.0e+300]}\n")
    line = one_line_exit_2([str(tmp_path / "s.yaml"), "--dry-run"], capsys, sweep=True)
    assert line.startswith("error: grid.beta: got 1e+300, beyond float32's range")


def test_a_thread_count_beyond_the_machine_is_one_line_not_a_crash(tmp_path):
    proc = run_process(["train", *QUICK, "--out", "o", "--threads", "100000"], tmp_path, timeout=60)
    assert_one_line(proc, "--threads 100000", f"{os.cpu_count()} CPUs")
    assert not (tmp_path / "o").exists()


def test_a_sweep_asking_more_cpus_than_this_machine_runs_locally_capped(tmp_path):
    from cep.sweep.plan import torch_threads

    assert torch_threads({"cpu": 1e6}) == os.cpu_count() and torch_threads({"cpu": 1}) == 1
    (tmp_path / "s.yaml").write_text(SWEEP + "resources: {cpu: 1000000}\ngrid: {seed: [0]}\n")
    proc = run_process(["s.yaml", "--trial", "seed=0", "--local", "--out", "o"], tmp_path, sweep=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"({os.cpu_count()} thread(s))" in proc.stdout


# --------------------------------------------------------------------------- 6. words
def test_every_problem_of_a_sweep_file_is_reported_in_one_pass(tmp_path, capsys):
    (tmp_path / "s.yaml").write_text(
        "name: s\nbogus: 1\nbase: {dataset: mnist5k, size_tab: [10, 8, 8, 784], lr_tab: [0.1, 0.1]}\n"
        "grid: {seed: [0, 1], angle: [0, 45]}\n")
    with pytest.raises(SystemExit) as e:
        sweep_main([str(tmp_path / "s.yaml"), "--dry-run", "--out", "x", "--name", ".."])
    lines = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2
    assert [ln.split(":")[1].strip() for ln in lines] == ["bogus", "base.lr_tab", "grid.angle", "--name '..'",
                                                        "--out"], lines


@pytest.mark.parametrize("how", ["--name", "file"])
@pytest.mark.parametrize("name", ["..", ".", "...", ".hidden"])
def test_a_name_of_dots_is_refused_with_a_true_rule(how, name, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(f"name: {'ok' if how == '--name' else repr(name)}\nbase: {{dataset: mnist5k}}\n")
    args = ["s.yaml", "--dry-run"] + (["--name", name] if how == "--name" else [])
    line = one_line_exit_2(args, capsys, sweep=True)
    assert "starting with a letter or digit" in line


@pytest.mark.parametrize("address", ["127.0.0.1:PORT", "not-an-address"])
def test_errors_from_ray_address_name_the_variable(address, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(SWEEP + "grid: {seed: [0]}\n")
    address = address.replace("PORT", str(free_port()))
    monkeypatch.setenv("RAY_ADDRESS", address)
    line = one_line_exit_2(["s.yaml", "--storage", str(tmp_path / "st")], capsys, sweep=True)
    assert line.startswith(f"error: RAY_ADDRESS={address} (from the environment") and "unset RAY_ADDRESS" in line
    monkeypatch.delenv("RAY_ADDRESS")
    line = one_line_exit_2(["s.yaml", "--storage", str(tmp_path / "st"), "--address", address], capsys, sweep=True)
    assert line.startswith(f"error: --address {address}:") and "RAY_ADDRESS" not in line


def test_out_without_local_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(SWEEP + "grid: {seed: [0]}\n")
    line = one_line_exit_2(["s.yaml", "--out", "somewhere", "--storage", "st"], capsys, sweep=True)
    assert line.startswith("error: --out: only for --trial ID --local")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


def test_deeply_nested_json_in_an_experiment_is_damage_not_a_traceback(tmp_path, capsys, monkeypatch):
    from cep.results import read_folder

    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(SWEEP + "grid: {seed: [0]}\n")
    (tmp_path / "st" / "s").mkdir(parents=True)
    (tmp_path / "st" / "s" / "sweep.json").write_text("[" * 100_000 + "]" * 100_000)
    line = one_line_exit_2(["s.yaml", "--storage", "st"], capsys, sweep=True)
    assert "sweep.json: damaged" in line and "nested too deeply" in line
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "summary.json").write_text("[" * 100_000 + "]" * 100_000)
    assert any("nested too deeply" in n for n in read_folder(tmp_path / "t").notes)
