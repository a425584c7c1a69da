"""The orchestration overhead of `cep-sweep`: how long before the first epoch, and what each trial costs on top.

    python benchmarks/sweep_overhead.py [--address HOST:PORT] [--storage DIR] [--trials 6] [--cpus-per-trial 2]

Runs a sweep of tiny trials (a few hundredths of a second of training each) one
at a time (each trial asks for --cpus-per-trial CPUs; give as many as a node
has) and watches the experiment folder from outside, printing:

* startup: seconds from starting `cep-sweep` to its "Ray: ..." line (imports,
  validation, joining or starting Ray, the shared-storage check), to the first
  trial's process entering the trainable, and to the first epoch's results;
* per trial: seconds between one trial finishing and the next one's first
  epoch, less that epoch's own training time (scheduling, process reuse, data
  loading, writing results);
* the whole run's wall time against the trials' training time.

Without --address, cep-sweep starts a local Ray on this machine (that start is
part of the startup). Environment variables (RAY_AUTH_MODE, RAY_AUTH_TOKEN)
pass through to cep-sweep.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SWEEP = """\
name: overhead
description: tiny trials, one at a time, to time what cep-sweep and Ray Tune add
base: {{size_tab: [10, 32, 784], lr_tab: [0.05, 0.1], train_samples: 100, test_samples: 100, epochs: 2,
       T: 5, Kmax: 2, dataset: mnist5k, rule: ep}}
grid:
  seed: {seeds}
resources: {{cpu: {cpus}, gpu: 0}}
max_failures: 0
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--address", default=None, help="join this Ray cluster (default: cep-sweep starts a local Ray)")
    ap.add_argument("--storage", default=None, help="results folder (default: a temporary folder, removed after)")
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--cpus-per-trial", type=float, default=float(os.cpu_count() or 1))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="cep-overhead-") as tmp:
        storage = Path(args.storage or tmp).absolute()
        sweep = Path(tmp) / "overhead.yaml"
        sweep.write_text(SWEEP.format(seeds=list(range(args.trials)), cpus=args.cpus_per_trial))
        exp = storage / "overhead"
        cmd = [sys.executable, "-c", "from cep.sweep.cli import main; main()", str(sweep), "--storage", str(storage),
               "--name", "overhead", "--restart", "--no-aggregate", "--progress-interval", "3600"]
        if args.address:
            cmd += ["--address", args.address]
        times = watch(cmd, exp, args.trials)
    report(times, args.trials)


def watch(cmd: list[str], exp: Path, n: int) -> dict:
    """Start cep-sweep and note when each milestone shows (in its output or in the experiment folder)."""
    seen: dict = {"launch": {}, "first_epoch": {}, "end": {}}
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Ray: ") and "ray" not in seen:
                seen["ray"] = time.monotonic() - t0

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while proc.poll() is None:
        now = time.monotonic() - t0
        for i in range(n):
            folder = exp / "trials" / f"seed={i}"
            if i not in seen["launch"] and (folder / "node.txt").exists():
                seen["launch"][i] = now
            if i not in seen["first_epoch"] and (folder / "metrics.csv").exists():
                seen["first_epoch"][i] = now
            if i not in seen["end"] and (folder / "summary.json").exists():
                try:
                    if json.loads((folder / "summary.json").read_text()).get("status") == "finished":
                        seen["end"][i] = now
                except ValueError:
                    pass
        time.sleep(0.02)
    reader.join(10)
    seen["wall"] = time.monotonic() - t0
    if proc.returncode != 0:
        sys.exit("cep-sweep failed:\n" + "".join(lines[-40:]))
    seen["epoch_seconds"] = {}
    seen["train_seconds"] = {}
    for i in range(n):
        rows = (exp / "trials" / f"seed={i}" / "metrics.csv").read_text().splitlines()
        head = rows[0].split(",")
        values = [dict(zip(head, r.split(","))) for r in rows[1:]]
        seen["epoch_seconds"][i] = float(values[0]["epoch_seconds"])
        seen["train_seconds"][i] = float(values[-1]["elapsed_seconds"])
    return seen


def report(t: dict, n: int) -> None:
    order = sorted(t["first_epoch"], key=t["first_epoch"].get)
    first = order[0]
    print(f"startup: 'Ray:' line after {t.get('ray', float('nan')):.1f} s, first trial in its process after "
          f"{t['launch'][first]:.1f} s, first epoch done after {t['first_epoch'][first]:.1f} s "
          f"(of which {t['epoch_seconds'][first]:.2f} s training)")
    gaps = [t["first_epoch"][b] - t["end"][a] - t["epoch_seconds"][b] for a, b in zip(order, order[1:])]
    if gaps:
        print(f"per trial: {statistics.median(gaps):.2f} s median between one trial's end and the next one's first "
              f"epoch, less its training (min {min(gaps):.2f}, max {max(gaps):.2f}; {len(gaps)} gaps)")
    train = sum(t["train_seconds"].values())
    print(f"whole run: {n} trial(s) in {t['wall']:.1f} s wall, {train:.2f} s of it training")


if __name__ == "__main__":
    main()
