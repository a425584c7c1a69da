"""Hostile or careless input (issue #11): every case ends in seconds with one `error:` line and exit code 2
(or the exit code README gives it), writes nothing it should not, and never runs foreign code."""

from __future__ import annotations

import resource
import time

import pytest

from cep.cli import TRAIN_FIELD_NAMES, cli, run_main
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
