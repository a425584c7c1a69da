"""What the trackers cost a trial: per-epoch time with each tracker on versus tracking off.

    python benchmarks/tracking_overhead.py [--epochs 6] [--train-samples 1000] [--repeats 2]

Trains the same small trial (EP-1h's net, 784-512-10, on mnist5k) through `cep train`'s code
path (cep.cli.execute) with tracking off, TensorBoard, MLflow (a sqlite file) and W&B (offline),
each in a fresh folder, and prints per configuration: the mean epoch_seconds of metrics.csv
(training with the tracker's background thread running beside it), the wall time of the whole
run (the trackers' start and the wait for their last epochs and artifacts included), and both
as a ratio against tracking off. The best of --repeats runs is kept (a shared machine is noisy).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from pathlib import Path

from cep.cli import execute
from cep.config import TrialConfig
from cep.tracking.settings import Tracking

CONFIGS = {
    "off": Tracking(tensorboard=False),
    "tensorboard": Tracking(),
    "mlflow (sqlite)": Tracking(tensorboard=False, mlflow_uri="sqlite:///{dir}/mlflow.db", mlflow_experiment="bench"),
    "wandb (offline)": Tracking(tensorboard=False, wandb_project="bench"),
}


def one_run(name: str, tracking: Tracking, args: argparse.Namespace, root: Path) -> tuple[float, float]:
    """(mean epoch seconds, wall seconds) of one run with `tracking`."""
    out = root / f"{name.split()[0]}-{time.monotonic_ns()}"
    if tracking.mlflow_uri:
        tracking = Tracking(**{**tracking.to_dict(), "mlflow_uri": tracking.mlflow_uri.format(dir=root)})
    cfg = TrialConfig.from_dict(dict(rule="ep", size_tab=[10, 512, 784], lr_tab=[0.04, 0.08], T=30, Kmax=10,
                                     beta=0.1, dataset="mnist5k", train_samples=args.train_samples,
                                     test_samples=500, epochs=args.epochs, seed=0, out_dir=str(out)))
    t0 = time.perf_counter()
    execute(cfg, quiet=True, threads=1, tracking=tracking.to_dict())
    wall = time.perf_counter() - t0
    with open(out / "metrics.csv", newline="") as f:
        epochs = [float(r["epoch_seconds"]) for r in csv.DictReader(f)]
    return statistics.mean(epochs[1:] or epochs), wall  # the first epoch also loads the data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--train-samples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="cep-tracking-bench-") as d:
        for _ in range(args.repeats):  # interleaved: a load change hits every configuration alike
            for name, tracking in CONFIGS.items():
                epoch, wall = one_run(name, tracking, args, Path(d))
                best = results.get(name, (float("inf"), float("inf")))
                results[name] = (min(best[0], epoch), min(best[1], wall))
    base_epoch, base_wall = results["off"]
    print(f"{args.epochs} epochs of {args.train_samples} samples, EP-1h's net, 1 thread; best of {args.repeats}")
    print(f"{'tracking':<18}{'epoch (s)':>10}{'ratio':>8}{'overhead/epoch (ms)':>21}{'run (s)':>9}{'ratio':>8}")
    for name, (epoch, wall) in results.items():
        print(f"{name:<18}{epoch:>10.3f}{epoch / base_epoch:>8.3f}{(epoch - base_epoch) * 1000:>21.1f}"
              f"{wall:>9.2f}{wall / base_wall:>8.3f}")


if __name__ == "__main__":
    main()
