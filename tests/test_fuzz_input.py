"""A seeded fuzz of the parsers: mutated sweep files (cep-sweep --dry-run) and option lists (cep train,
cep-sweep): every case ends with exit 0 or 2, one `error:` line per problem, no traceback, in time and memory.

No dependency: a seeded generator (reproducible, a few hundred cases in seconds); raise CASES to search longer.
"""

from __future__ import annotations

import random
import resource
import time

import pytest

import cep.cli
from cep.cli import TRAIN_FIELD_NAMES, cli, run_main
from cep.sweep.cli import main as sweep_main

CASES = 400
CASE_BUDGET_S = 3.0
MEMORY_BUDGET_KB = 300_000

SEED_SWEEP = """\
name: fuzz
description: seed of the fuzz
base: {size_tab: [10, 32, 784], lr_tab: [0.05, 0.1], epochs: 2, T: 10, Kmax: 4, dataset: mnist5k}
experiments:
  EP: {rule: ep}
  C-VF: {rule: vf, continual: true, randbeta: 0.5, grid: {angle: [0, 90]}}
grid:
  seed: [0, 1]
resources: {cpu: 1, gpu: 0}
max_failures: 1
"""
TOKENS = [": ", "[", "]", "{", "}", ",", "&a ", "*a", "<<: *a", "nan", ".nan", ".inf", "-.inf", "-1", "0", "1e400",
          "0x10", "~", "null", "true", "!!python/object/apply:os.system ['true']", "!!binary aGk=", "\x00", "\t",
          "\u00e9", "\u202e", "\n", "  ", "'", '"', "seed", "epochs", "grid", "base", "name", "experiments", "x" * 300,
          str(2**64), str(-2**70), "?", "- ", "|", ">", "%YAML 1.1", "---", "...", "#", "@", "`", "\\", "/", "..",
          "10,,784", "cuda", "resources", "gpu", "max_failures"]
OPTIONS = {
    "--rule": ["ep", "vf", "xx", ""], "--setting": ["discrete", "continuous", "?"], "--sizes": [
        "10,512,784", "10,,784", ",", "10 512 784", "10,-1,784", "a", "10,99999999999999999999,784"],
    "--lrs": ["0.1,0.2", "nan,1", "1e400,1", "-1,1", "0.1", ""], "--beta": ["0.1", "0", "nan", "inf", "-0.0", "x"],
    "--dt": ["0.2", "0", "-1", "nan", "1e-400"], "--epochs": ["1", "0", "-1", str(2**64), "1.5"],
    "--seed": ["0", "-1", str(2**64), str(2**64 - 1), "1e3"], "--angle": ["0", "45", "181", "nan"],
    "--randbeta": ["0.5", "2", "-inf"], "--device": ["cpu", "cuda", "cuda:7", "tpu", "auto", "cuda:-1", "cuda:"],
    "--dtype": ["float32", "float16"], "--batch-size": ["0", "20", "x"], "--train-samples": ["0", "10", "none"],
    "--free-steps": ["0", "30", "1e9"], "--preset": ["EP-1h", "C-VF-1h", "nope"],
    "--config": ["/dev/null", "/nonexistent"],
    "--out": ["", "/proc/x", "."], "--bogus": ["1"], "--checkpoint": [], "--no-clamp": [], "--continual": [],
}


def _mutate(text: str, rng: random.Random) -> str:
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        pos = rng.randrange(len(text) + 1)
        if op < 0.4:
            text = text[:pos] + rng.choice(TOKENS) + text[pos:]
        elif op < 0.6:
            text = text[:pos] + text[pos + rng.randint(1, 20):]
        elif op < 0.8:
            lines = text.splitlines(keepends=True)
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
            text = "".join(lines)
        else:
            lines = text.splitlines(keepends=True)
            line = rng.choice(lines)
            text = text + line * rng.randint(1, 3)
    return text


def _check(main, args: list[str], capsys) -> None:
    start = time.monotonic()
    with pytest.raises(SystemExit) as e:
        main(args)
    captured = capsys.readouterr()
    assert time.monotonic() - start < CASE_BUDGET_S
    assert e.value.code in (0, 2), captured.err
    assert "Traceback" not in captured.err
    if e.value.code == 2:
        lines = [ln for ln in captured.err.splitlines() if ln.strip()]
        assert lines and all(ln.startswith("error: ") for ln in lines), captured.err


def test_mutated_sweep_files_never_crash(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = random.Random(20200611)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    path = tmp_path / "sweep.yaml"
    for i in range(CASES):
        text = _mutate(SEED_SWEEP, rng)
        path.write_bytes(text.encode("utf-8", errors="surrogatepass"))
        sets = [f"{rng.choice(['epochs', 'seed', 'beta', 'resources.gpu', 'nope', 'lr_tab'])}="
                f"{rng.choice(['1', 'nan', '-1', '[1, 2]', '', str(2**64)])}" for _ in range(rng.randint(0, 2))]
        args = [str(path), "--dry-run", *(a for s in sets for a in ("--set", s))]
        if rng.random() < 0.2:
            args += ["--name", rng.choice(["ok", "x" * 150, "a/b", "\u00e9", "a\nb", ""])]
        try:
            _check(sweep_main, args, capsys)
        except AssertionError as e:
            raise AssertionError(f"case {i}: {args}\n{text}") from e
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < MEMORY_BUDGET_KB


def test_random_option_lists_never_crash(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cep.cli, "execute", lambda cfg, *args, **kwargs: 0)  # validate only: train nothing
    rng = random.Random(2020)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for i in range(CASES):
        args = ["train"]
        for opt in rng.sample(sorted(OPTIONS), rng.randint(1, 6)):
            args += [opt] + ([rng.choice(OPTIONS[opt])] if OPTIONS[opt] else [])
        try:
            _check(lambda a: run_main(cli, TRAIN_FIELD_NAMES, a), args, capsys)
        except AssertionError as e:
            raise AssertionError(f"case {i}: {args}") from e
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < MEMORY_BUDGET_KB
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # validation writes nothing
