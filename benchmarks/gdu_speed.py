"""Time every plotcurves command of the seed README at full size (spec section 7), through `cep run`.

    python benchmarks/gdu_speed.py [--dataset mnist5k|mnist] [--dtype float32|float64] [--out DIR]

For each command: the whole `cep run --action plotcurves ...` (data, analysis, figures,
files) and the analysis alone (`cep.gdu.analyse`: free phase, one backward pass through
the last Kmax steps, nudged phase), with the per-layer minimum cosine.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shlex
import tempfile
import time
from pathlib import Path

import torch

from cep.checkpoint import new_state, resolve_seed
from cep.cli import execute, legacy_config
from cep.gdu.analysis import analyse
from cep.gdu.report import first_minibatch

COMMANDS = Path(__file__).resolve().parent.parent / "tests" / "seed_readme_commands.txt"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="mnist5k")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--out", default=None, help="keep the results folders here (default: a temporary folder)")
    a = ap.parse_args()
    lines = [ln for ln in COMMANDS.read_text().splitlines() if ln.startswith("cep run") and "plotcurves" in ln]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(a.out or tmp)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, dtype {a.dtype}, dataset {a.dataset}")
        print(f"{'#':>2} {'model':<28} {'cep run (s)':>11} {'analysis (s)':>12} {'min cos':>8} {'angle':>6}")
        for n, line in enumerate(lines):
            argv = shlex.split(line)[2:] + ["--dataset", a.dataset, "--dtype", a.dtype, "--device", "cpu",
                                            "--out", str(root / f"plotcurves{n}")]
            cfg = resolve_seed(legacy_config(argv))  # the same seed for both timings
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                code = execute(cfg)
            whole = time.perf_counter() - start
            assert code == 0, line
            state = new_state(cfg, torch.device("cpu"))
            x, y, _ = first_minibatch(state.config, state.generator, torch.device("cpu"), getattr(torch, cfg.dtype))
            start = time.perf_counter()
            result = analyse(state.config, state.params, x, y)
            alone = time.perf_counter() - start
            worst = min(r["cosine"] for r in result.agreement())
            label = f"{'C-' if cfg.continual else ''}{cfg.rule.upper()} {cfg.setting} T={cfg.T} K={cfg.Kmax}"
            print(f"{n:>2} {label:<28} {whole:>11.1f} {alone:>12.2f} {worst:>8.4f} {result.angle_grad():>5.1f}°",
                  flush=True)


if __name__ == "__main__":
    main()
