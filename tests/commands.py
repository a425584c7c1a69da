"""Running `cep` and `cep-sweep` from the tests: in this process (run_cli, one_line_exit_2) or as a real
process (run_process: a hang or a crash must not take the tests with it)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cep.cli import TRAIN_FIELD_NAMES, cli, run_main
from cep.sweep.cli import main as sweep_main


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """`cep-sweep ARGS` in this process: its exit code, stdout and stderr."""
    with pytest.raises(SystemExit) as e:
        sweep_main(args)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def one_line_exit_2(args: list[str], capsys, *, sweep: bool = False, names=TRAIN_FIELD_NAMES,
                    budget_s: float = 20.0, clock: Callable[[], float] = time.process_time) -> str:
    """Run `cep ARGS` (or `cep-sweep ARGS`) in this process; assert one error line, exit 2, within `budget_s`
    of `clock` (CPU time by default: the tests share loaded machines; wall time where a wait is the point)."""
    start = clock()
    with pytest.raises(SystemExit) as e:
        if sweep:
            sweep_main(args)
        else:
            run_main(cli, names, args)
    err = capsys.readouterr().err
    assert clock() - start < budget_s
    assert e.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def run_process(args: list[str], cwd: Path, *, sweep: bool = False, timeout: float = 120,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`cep ARGS` or `cep-sweep ARGS` as a real process."""
    main = "from cep.sweep.cli import main" if sweep else "from cep.cli import main"
    code = f"import sys; sys.argv[0] = 'cep'; {main}; main()"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]),
                                                **(env or {})})
