"""The input-hardening tests' shorthands: a tiny sweep, `cep-sweep` as a real process (a hang or a crash ends as
a failed test, a timeout, never takes the test run with it) and its one error line."""

from __future__ import annotations

from pathlib import Path
from subprocess import CompletedProcess

from commands import run_process

SWEEP = "name: s\nbase: {dataset: mnist5k, epochs: 1, train_samples: 40, test_samples: 20, size_tab: [10, 8, 784]}\n"


def run_cli(args: list[str], cwd: Path, *, sweep: bool = True, timeout: float = 60) -> CompletedProcess:
    """`cep-sweep ARGS` (sweep=False: `cep ARGS`) as a real process (commands.run_process), a minute at most."""
    return run_process(args, cwd, sweep=sweep, timeout=timeout)


def one_error_line(proc: CompletedProcess, *needles: str) -> str:
    """The one `error:` line of a run that refused (exit 2, no traceback), checked to contain `needles`."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stdout + proc.stderr
    assert all(n in lines[0] for n in needles), lines[0]
    return lines[0]
