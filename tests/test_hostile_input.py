"""Hostile or careless input (issue #11): every case ends in seconds with one `error:` line and exit code 2
(or the exit code README gives it), writes nothing it should not, and never runs foreign code."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import pytest

from cep.cli import LEGACY_FIELD_NAMES, TRAIN_FIELD_NAMES, cli, run_main
from cep.sweep.cli import main as sweep_main

QUICK = ["--train-samples", "40", "--test-samples", "20", "--device", "cpu", "--sizes", "10,8,784", "--seed", "0",
         "--quiet"]

LAUGHS = "name: lol\na: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcdefgh", "bcdefghi")) + "base: {seed: *i}\n"


def one_line_exit_2(args: list[str], capsys, *, sweep: bool = False, names=TRAIN_FIELD_NAMES,
                    budget_s: float = 20.0) -> str:
    """Run `cep ARGS` (or `cep-sweep ARGS`) in this process; assert one error line, exit 2, in time; the line."""
    start = time.monotonic()
    with pytest.raises(SystemExit) as e:
        if sweep:
            sweep_main(args)
        else:
            run_main(cli, names, args)
    err = capsys.readouterr().err
    assert time.monotonic() - start < budget_s
    assert e.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


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
    (["train", "--seed", str(2**64)], "--seed: got 18446744073709551616; an integer from 0 to 2**64-1"),
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
