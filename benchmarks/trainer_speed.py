"""Trained samples per second of the paper's configurations (random inputs; spec section 7 hyperparameters).

    python benchmarks/trainer_speed.py [--device cpu|cuda] [--batches 50] [--threads N]

Each figure covers the whole training step of a minibatch: free phase (T steps),
nudged phase (Kmax steps) and the weight update, as in `cep.train`.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from cep.config import paper_config
from cep.model import init_params, relax
from cep.rules import learn

NAMES = ("EP-1h", "C-EP-1h", "C-VF-1h", "EP-2h", "C-EP-2h", "C-VF-2h")


def samples_per_second(name: str, device: str, batches: int) -> float:
    cfg = paper_config(name, device=device, seed=0)
    g = torch.Generator().manual_seed(0)
    params = init_params(cfg, g, device)
    x = torch.rand(batches, cfg.batch_size, 784, generator=g).to(device)
    y = F.one_hot(torch.randint(0, 10, (batches, cfg.batch_size), generator=g), 10).float().to(device)

    def run(n: int) -> None:
        for k in range(n):
            s = relax(cfg, params, x[k], cfg.T)
            learn(cfg, params, s, x[k], y[k], cfg.beta, cfg.lr_tab)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    with torch.no_grad():
        run(min(5, batches))  # warm-up
        start = time.perf_counter()
        run(batches)
        return batches * cfg.batch_size / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", type=int, default=50)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--only", nargs="*", default=None, help="configuration names (default: all)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"device {a.device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"{a.batches} minibatches of 20")
    print(f"{'config':<9} {'T':>4} {'Kmax':>5} {'samples/s':>10} {'epoch of 60k (s)':>17}")
    for name in a.only or NAMES:
        cfg = paper_config(name)
        rate = samples_per_second(name, a.device, a.batches)
        print(f"{name:<9} {cfg.T:>4} {cfg.Kmax:>5} {rate:>10,.0f} {60000 / rate:>17,.1f}")


if __name__ == "__main__":
    main()
