"""Hostile or careless input: every case ends in seconds with one `error:` line and exit code 2
(or the exit code README gives it), writes nothing it should not, and never runs foreign code."""

from __future__ import annotations

import functools
import resource
import time
from pathlib import Path

import commands
import pytest

from cep.cli import LEGACY_FIELD_NAMES, TRAIN_FIELD_NAMES, cli, run_main
from cep.sweep.cli import main as sweep_main

QUICK = ["--train-samples", "40", "--test-samples", "20", "--device", "cpu", "--sizes", "10,8,784", "--seed", "0",
         "--quiet"]

LAUGHS = "name: lol\na: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcdefgh", "bcdefghi")) + "base: {seed: *i}\n"


one_line_exit_2 = functools.partial(commands.one_line_exit_2, clock=time.monotonic)  # these guard waits: wall time


@pytest.mark.parametrize("text,needle", [
    (LAUGHS, "expand it to more than"),
    ("name: x\nbase: &a {seed: [*a]}\n", "circular"),
    (b"\x00\xff\xfe\x80binary", "not a text file"),
    ("name: [unclosed\n", "invalid YAML"),
    ("name: x\nname: y\n", "repeats the one on line 1"),
], ids=["billion-laughs", "circular", "binary", "invalid", "repeated-key"])
@pytest.mark.parametrize("where", ["sweep file", "--config"])
def test_a_hostile_yaml_file_is_refused_in_seconds(text, needle, where, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "in.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if where == "sweep file":
        line = one_line_exit_2([str(path), "--dry-run"], capsys, sweep=True, budget_s=5)
    else:
        line = one_line_exit_2(["train", "--config", str(path), *QUICK], capsys, budget_s=5)
    assert needle in line and str(path) in line
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KB: no blow-up
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.yaml"]  # nothing written


NAN_CASES = [(["train", "--dt", "nan"], "--dt: got nan"), (["train", "--beta", "inf"], "--beta: got inf"),
             (["train", "--lrs", "0.1,nan"], "--lrs: got [0.1, nan]"),
             (["train", "--randbeta", "-inf"], "--randbeta: got -inf"),
             (["train", "--rule", "vf", "--angle", "nan"], "--angle: got nan")]


@pytest.mark.parametrize("args,needle", NAN_CASES + [
    (["train", "--sizes", "10,,784"], "--sizes: got '10,,784': an empty item"),
    (["train", "--sizes", ",10,784"], "an empty item"),
    (["train", "--seed", str(2**64)], "--seed: got 18446744073709551616; an integer from 0 to 2**32-1"),
    (["train", "--device", "cuda"], "device cuda: CUDA is not available here"),
    (["train", "--device", "cuda:1"], "device cuda:1: CUDA is not available here"),
    (["gdu", "--device", "cuda"], "device cuda: CUDA is not available here"),
    (["run", "--size_tab", "10", "16", "784", "--lr_tab", "0.1", "0.1", "--device", "cuda", "--dataset", "mnist5k"],
     "device cuda: CUDA is not available here"),
    (["run", "--size_tab", "10", "16", "784", "--lr_tab", "0.1", "nan"], "--lr_tab: got [0.1, nan]"),
    (["run", "--size_tab", "10", "16", "784", "--lr_tab", "0.1", "0.1", "--seed", str(2**70)], "--seed: got"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_nonsense_values_and_missing_devices_are_refused_up_front(args, needle, tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on a machine with a GPU
    names = LEGACY_FIELD_NAMES if args[0] == "run" else TRAIN_FIELD_NAMES
    assert needle in one_line_exit_2(args + ["--out", str(tmp_path / "o")], capsys, names=names)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("field", ["dt", "beta", "randbeta", "angle", "lr_tab"])
@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_nan_and_inf_in_a_sweep_file_are_refused(field, value, tmp_path, capsys):
    path = tmp_path / "s.yaml"
    shown = f"[0.1, {value}]" if field == "lr_tab" else value
    path.write_text(f"name: s\nbase: {{rule: vf, {field}: {shown}}}\n")
    assert f"base.{field}: got" in one_line_exit_2([str(path), "--dry-run"], capsys, sweep=True)
    assert one_line_exit_2([str(path), "--dry-run", "--set", f"{field}=nan"], capsys, sweep=True)


def test_an_earlier_result_is_never_overwritten_silently(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        run_main(cli, TRAIN_FIELD_NAMES, ["train", "--out", str(out), "--epochs", "1", *QUICK])
    assert e.value.code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for extra in ([], ["--checkpoint"]):  # without a saved state --checkpoint cannot resume it either
        line = one_line_exit_2(["train", "--out", str(out), "--epochs", "2", *QUICK, *extra], capsys)
        assert "holds an earlier run" in line and "another --out" in line and "--checkpoint" in line \
            and "--overwrite" in line
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # a checkpointed run of another configuration in the folder: replaced only on request, checkpoint included
    with pytest.raises(SystemExit) as e:
        run_main(cli, TRAIN_FIELD_NAMES, ["train", "--out", str(out), "--epochs", "1", "--checkpoint", "--overwrite",
                                          *QUICK])
    assert e.value.code == 0 and (out / "checkpoint.pt").exists()
    with pytest.raises(SystemExit) as e:
        run_main(cli, TRAIN_FIELD_NAMES, ["train", "--out", str(out), "--epochs", "1", "--overwrite", *QUICK,
                                          "--beta", "0.3"])
    assert e.value.code == 0 and not (out / "checkpoint.pt").exists()
    assert "beta: 0.3" in (out / "config.yaml").read_text()


@pytest.mark.parametrize("kind", ["a file", "below a file", "unwritable"])
def test_an_unusable_out_folder_is_refused_before_any_work(kind, tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    out = {"a file": tmp_path / "f", "below a file": tmp_path / "f" / "run", "unwritable": Path("/proc/cep-out")}[kind]
    start = time.monotonic()
    line = one_line_exit_2(["train", "--out", str(out), "--epochs", "1", *QUICK], capsys)
    assert line.startswith(f"error: --out {out}: ") and time.monotonic() - start < 5  # no epoch trained first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


@pytest.mark.parametrize("storage", ["f", "f/results", "/proc/cep-results"])
def test_unusable_storage_is_refused_before_ray_starts(storage, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f").write_text("x")
    (tmp_path / "s.yaml").write_text("name: s\nbase: {epochs: 1}\n")
    line = one_line_exit_2(["s.yaml", "--storage", storage], capsys, sweep=True)
    assert line.startswith(f"error: --storage {storage}: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "s.yaml"]


SWEEP = "name: s\nbase: {epochs: 1, size_tab: [10, 8, 784], lr_tab: [0.1, 0.1], train_samples: 40, test_samples: 20}\n"


@pytest.mark.parametrize("content", ['{"name": "s", "trials": [{"id"', "", "[1, 2]", "\xff\xfe"])
@pytest.mark.parametrize("dry", [True, False])
def test_a_damaged_sweep_json_is_one_line(content, dry, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(SWEEP)
    (tmp_path / "results" / "s").mkdir(parents=True)
    (tmp_path / "results" / "s" / "sweep.json").write_bytes(content.encode("latin-1"))
    if dry:  # the dry run says what running would do, runs nothing, and exits 2 (it could not run it)
        with pytest.raises(SystemExit) as e:
            sweep_main(["s.yaml", "--dry-run"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and "sweep.json: damaged" in err and "--restart" in err
    else:
        line = one_line_exit_2(["s.yaml"], capsys, sweep=True)
        assert "sweep.json: damaged" in line and "--restart" in line


@pytest.mark.parametrize("how", ["file", "--name"])
@pytest.mark.parametrize("name,needle", [("x" * 300, "300 characters; at most 100"),
                                          ("r\u00e9sum\u00e9", "use letters, digits"),
                                          ("a\nb", "use letters, digits"), ("..", "use letters, digits"),
                                          ("-rf", "use letters, digits")], ids=["long", "unicode", "newline",
                                                                               "dotdot", "dash"])
def test_one_rule_for_sweep_names_in_the_file_and_name(how, name, needle, tmp_path, capsys, monkeypatch):
    import json

    monkeypatch.chdir(tmp_path)
    if how == "file":
        (tmp_path / "s.yaml").write_text(SWEEP.replace("name: s", f"name: {json.dumps(name)}"))
        args = ["s.yaml"]
    else:
        (tmp_path / "s.yaml").write_text(SWEEP)
        args = ["s.yaml", "--name", name]
    line = one_line_exit_2(args, capsys, sweep=True)
    assert needle in line and ("name: " if how == "file" else "--name ") in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


def test_a_very_long_grid_value_is_refused_as_a_folder_name(tmp_path, capsys):
    (tmp_path / "t.yaml").write_text(SWEEP + "grid: {data_dir: [a, " + "b/" * 150 + "]}\n")  # short parts, long id
    line = one_line_exit_2([str(tmp_path / "t.yaml"), "--dry-run"], capsys, sweep=True)
    assert "too long for a folder name" in line


def test_aggregate_on_a_read_only_experiment_prints_the_table_and_says_why_no_files(tmp_path, capsys, monkeypatch):
    import json

    import cep.aggregate.summary as summary
    from cep.aggregate.cli import main as aggregate_main

    exp = tmp_path / "exp"
    (exp / "trials" / "t").mkdir(parents=True)
    (exp / "sweep.json").write_text(json.dumps({"name": "exp", "trials": [
        {"id": "t", "experiment": None, "grid": {}, "config": {"epochs": 1, "size_tab": [10, 8, 784]}}]}))

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(summary, "write_atomic", read_only)  # as root, chmod cannot make it read-only
    monkeypatch.setattr("sys.argv", ["x", str(exp), "--no-plots"])
    with pytest.raises(SystemExit) as e:
        aggregate_main()
    out = capsys.readouterr()
    assert e.value.code == 2 and "exp:" in out.out and "Traceback" not in out.err
    assert out.err.strip().splitlines() == [f"error: cannot write the summary into {exp / 'summary'} (Permission "
                                            "denied); the table above is complete (copy the experiment somewhere "
                                            "writable for the files)"]


def test_a_truncated_mnist_download_is_named_not_an_interruption(tmp_path, capsys, monkeypatch):
    import gzip

    monkeypatch.chdir(tmp_path)
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(bytes(range(256)) * 400)[:300])
    line = one_line_exit_2(["train", "--dataset", "mnist", "--data-dir", "data", "--epochs", "1", "--out", "o",
                            *QUICK], capsys)
    assert "train-images-idx3-ubyte.gz is damaged" in line and "delete it to download MNIST again" in line


def test_an_end_of_file_is_not_reported_as_ctrl_c(capsys):
    import click

    @click.command()
    def reads_a_truncated_file() -> None:
        raise EOFError("Ran out of input")

    with pytest.raises(SystemExit) as e:
        run_main(reads_a_truncated_file, {}, [])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "interrupted" not in err and "ended unexpectedly (Ran out of input)" in err


def test_a_trial_that_cannot_resume_gets_one_consistent_hint(tmp_path, capsys):
    from cep.results import FolderState
    from cep.sweep.report import summary as _summary
    from cep.sweep.spec import parse_sweep

    spec = parse_sweep({"name": "s", "grid": {"seed": [0, 1]}})
    stuck = FolderState("errored", 1, 3, error="cep.runner.ResumeError: cannot read any saved state of trial "
                        "x; rerun cep-sweep with --restart --only 'seed=0' to start this trial afresh")
    code = _summary(spec, tmp_path, {"seed=0": stuck}, {}, 1.0, None)
    err = capsys.readouterr().err
    assert code == 1 and "--restart --only 'seed=0'" in err.splitlines()[-1]
    assert "rerun the same command" not in err
    retry = FolderState("errored", 1, 3, error="RuntimeError: CUDA out of memory")
    _summary(spec, tmp_path, {"seed=0": stuck, "seed=1": retry}, {}, 1.0, None)
    err = capsys.readouterr().err
    assert "1 trial(s) incomplete: rerun the same command" in err and "1 trial(s) cannot continue" in err


class _QuietHandler:
    """An HTTP/1 handler that logs nothing (the test reads stderr)."""

    @staticmethod
    def make():
        import http.server

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

        return Handler


@pytest.mark.parametrize("server", ["http", "silent", "closes"])
def test_an_address_that_answers_but_is_not_ray_fails_in_seconds(server, tmp_path, capsys, monkeypatch):
    """ray.init retried for over 5 minutes against a web server or a silent port; the pre-check speaks HTTP/2.

    Servers bind 127.0.0.1 and stop with the test."""
    import http.server
    import socket
    import threading

    import cep.sweep.address as address

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(address, "ANSWER_TIMEOUT_S", 1.0)
    (tmp_path / "s.yaml").write_text(SWEEP)
    if server == "http":
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _QuietHandler.make())
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        port, stop = httpd.server_address[1], httpd.shutdown
    else:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)  # the kernel completes the connection; "silent" never reads or writes
        port, stop = listener.getsockname()[1], listener.close

        def close_each() -> None:
            try:
                while True:
                    listener.accept()[0].close()
            except OSError:  # the listener was closed
                return

        if server == "closes":
            threading.Thread(target=close_each, daemon=True).start()
    try:
        line = one_line_exit_2(["s.yaml", "--address", f"127.0.0.1:{port}", "--storage", str(tmp_path / "r")],
                               capsys, sweep=True, budget_s=4)
    finally:
        stop()
    assert f"--address 127.0.0.1:{port}: " in line and "`ray start --head`" in line
    assert {"http": "a web server", "silent": "does not answer like a Ray head",
            "closes": "closed the connection"}[server] in line
    assert not (tmp_path / "r").exists()
