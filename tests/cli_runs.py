"""Running `cep-sweep` / `cep` as a real process for the input-hardening tests: a hang or a crash must end as a
failed test (a timeout), never take the test run with it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SWEEP = "name: s\nbase: {dataset: mnist5k, epochs: 1, train_samples: 40, test_samples: 20, size_tab: [10, 8, 784]}\n"


def run_cli(args: list[str], cwd: Path, *, sweep: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    main = "from cep.sweep.cli import main" if sweep else "from cep.cli import main"
    code = f"import sys; sys.argv[0] = 'cep'; {main}; main()"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})


def one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """The one `error:` line of a run that refused (exit 2, no traceback), checked to contain `needles`."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stdout + proc.stderr
    assert all(n in lines[0] for n in needles), lines[0]
    return lines[0]
