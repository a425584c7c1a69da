"""Milliseconds per training minibatch of the paper's configurations, old step versus new (spec sections 7, 8).

    python benchmarks/trainer_speed.py [--threads 1 2] [--batches 10] [--rounds 5] [--only C-EP-1h ...]
                                       [--no-spec] [--device cpu|cuda]

Each figure covers the whole training step of one minibatch of 20 random MNIST-shaped
inputs: free phase (T steps), nudged phase (Kmax steps) and the weight update, as in
`cep.train`. Variants, timed interleaved (A B C A B C ...) within one process so that a
noisy shared machine moves them together; each cell is the median over the rounds:

* spec:  cep.model, the reference written as the spec says (`step` iterated, `nudged_phase`, the increments);
* today: benchmarks/baseline.py, the step as it was before the fast step (commit 44fb562);
* new:   cep.fused_step.relax + learn, the package's step.

Packed variants `P=9`, `P=45` (`--packs`): that many trials as one program (a sweep's pack); their ms are
per trial-minibatch (the pack's time divided by P). `x new`, `x P=n` are today's time over theirs
(median of the per-round ratios), per trial. GFLOP/s counts the FLOPs of
the direct algorithm with a cached input drive (`minibatch_mms`: dense products in every
step, dense weight increments), whatever a variant actually computes; `mm` is what
torch.mm alone reaches on exactly those shapes and counts, measured in the same run; `floor ms` is
those FLOPs at the rate of a large square torch.mm, this device's practical peak (a hard floor where
the count is the least work possible: the products of every step, as for EP-2h).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import baseline  # benchmarks/, beside this script (on sys.path when it runs)
import torch
import torch.nn.functional as F

from cep.config import TrialConfig
from cep.fused_step import learn, relax
from cep.model import Params, apply_increment, init_params, input_drive, nudged_phase, step
from cep.presets import paper_config

NAMES = ("EP-1h", "C-EP-1h", "C-VF-1h", "EP-2h", "C-EP-2h", "C-VF-2h")
Minibatch = Callable[[Params, torch.Tensor, torch.Tensor, float], None]


def minibatch_mms(cfg: TrialConfig, B: int) -> list[tuple[int, int, int, int]]:
    """(m, k, n, count) of every matrix product of one minibatch in the direct algorithm (cached drive)."""
    n, L, n_in = cfg.size_tab, cfg.n_layers, cfg.size_tab[-1]
    steps = cfg.T + cfg.Kmax
    mms = [(B, n_in, n[L - 1], 2)]  # the input drive, once per phase
    for i in range(L - 1):  # forward and feedback product of every hidden pair, every step
        mms += [(B, n[i + 1], n[i], steps), (B, n[i], n[i + 1], steps)]
    inc_per_pair = [(n[i], 2 * B, n[i + 1], 1) for i in range(L - 1)]  # a^T a' - c^T c' (ep) or dW + dV (vf)
    if cfg.continual:
        mms += [(m, k, q, cfg.Kmax) for m, k, q, _ in inc_per_pair]
        mms += [(B, n_in, B, 1), (B, B, n[L - 1], cfg.Kmax)]  # Gram matrix and drive updates
    elif cfg.rule == "vf":
        mms += [(m, k, q, cfg.Kmax) for m, k, q, _ in inc_per_pair]
    else:
        mms += inc_per_pair
    mms.append((n[L - 1], B, n_in, 1))  # the input matrix's update
    return mms


def flops(mms: list[tuple[int, int, int, int]]) -> float:
    return float(sum(2 * m * k * q * c for m, k, q, c in mms))


def mm_seconds(mms: list[tuple[int, int, int, int]], device: str, dtype: torch.dtype) -> float:
    """Seconds torch.mm alone needs for the products `mms` (each shape timed separately, best of 3)."""
    total = 0.0
    for m, k, q, count in mms:
        a, b = torch.rand(m, k, device=device, dtype=dtype), torch.rand(k, q, device=device, dtype=dtype)
        out = torch.empty(m, q, device=device, dtype=dtype)
        reps = max(20, min(2000, int(2e8 / (2 * m * k * q))))
        best = float("inf")
        for _ in range(3):
            _sync(device)
            start = time.perf_counter()
            for _ in range(reps):
                torch.mm(a, b, out=out)
            _sync(device)
            best = min(best, (time.perf_counter() - start) / reps)
        total += best * count
    return total


def peak_gflops(device: str, dtype: torch.dtype, n: int = 1024) -> float:
    """What torch.mm reaches on a large square product: the practical peak of this device and thread count."""
    return 2 * n ** 3 / mm_seconds([(n, n, n, 1)], device, dtype) / 1e9


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def variants(cfg: TrialConfig, spec: bool, packs: list[int], device: str, x: torch.Tensor,
             y: torch.Tensor) -> dict[str, tuple[int, Callable[[int, float], None]]]:
    """name -> (trials it trains, one training minibatch k with a given signed beta), on its own parameters.

    P=n: a pack of n trials (different seeds, as a sweep's pack) as one program (cep.train's leading
    trial dimension); every member sees the same random minibatch here, which costs the same.
    """
    lrs = list(cfg.lr_tab)

    def own_params(seed: int = 0) -> Params:
        return init_params(cfg, torch.Generator().manual_seed(seed), device)

    def today(p: Params) -> Callable[[int, float], None]:
        return lambda k, beta: baseline.learn(cfg, p, baseline.relax(cfg, p, x[k], cfg.T), x[k], y[k], beta, lrs)

    def new(p: Params) -> Callable[[int, float], None]:
        return lambda k, beta: learn(cfg, p, relax(cfg, p, x[k], cfg.T), x[k], y[k], beta, lrs)

    def literal(p: Params) -> Callable[[int, float], None]:
        def run(k: int, beta: float) -> None:
            s = [x[k].new_zeros(x[k].shape[0], n) for n in cfg.size_tab[:-1]]
            drive = input_drive(cfg, p, x[k])
            for _ in range(cfg.T):
                s, _ = step(cfg, p, s, drive)
            _, total = nudged_phase(cfg, p, s, x[k], y[k], beta, lrs=lrs if cfg.continual else None,
                                    accumulate=not cfg.continual)
            if total is not None:
                apply_increment(p, total, lrs)
        return run

    def packed(n: int) -> Callable[[int, float], None]:
        p = Params.stack([own_params(seed) for seed in range(n)])
        xs, ys = x.unsqueeze(1).expand(-1, n, -1, -1).contiguous(), y.unsqueeze(1).expand(-1, n, -1, -1).contiguous()
        per_trial = [torch.full((n,), lr, device=device) for lr in lrs]

        def run(k: int, beta: float) -> None:
            betas = torch.full((n,), beta, device=device)
            learn(cfg, p, relax(cfg, p, xs[k], cfg.T), xs[k], ys[k], betas, per_trial)
        return run

    out: dict[str, tuple[int, Callable[[int, float], None]]] = {"spec": (1, literal(own_params()))} if spec else {}
    out.update(today=(1, today(own_params())), new=(1, new(own_params())))
    out.update({f"P={n}": (n, packed(n)) for n in packs})
    return out


def time_config(name: str, device: str, batches: int, rounds: int, spec: bool,
                packs: list[int]) -> dict[str, list[float]]:
    """ms per trial-minibatch of every variant, one entry per round, rounds interleaved across variants."""
    cfg = paper_config(name, device=device, seed=0)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batches, cfg.batch_size, 784, generator=g).to(device)
    y = F.one_hot(torch.randint(0, 10, (batches, cfg.batch_size), generator=g), 10).float().to(device)
    signs = [1.0 if u < (cfg.randbeta or 1.0) else -1.0 for u in torch.rand(batches, generator=g).tolist()]
    runs = variants(cfg, spec, packs, device, x, y)
    ms: dict[str, list[float]] = {v: [] for v in runs}
    with torch.no_grad():
        for _, run in runs.values():  # warm-up
            run(0, signs[0] * cfg.beta)
        for _ in range(rounds):
            for v, (trials, run) in runs.items():
                _sync(device)
                start = time.perf_counter()
                for k in range(batches):
                    run(k, signs[k] * cfg.beta)
                _sync(device)
                ms[v].append(1e3 * (time.perf_counter() - start) / batches / trials)
    return ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", type=int, default=10, help="minibatches per timed round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--no-spec", action="store_true", help="skip the (slow) spec-literal reference")
    ap.add_argument("--only", nargs="*", default=None, help="configuration names (default: all)")
    ap.add_argument("--packs", type=int, nargs="*", default=[9, 45],
                    help="pack sizes to time as one program (ms per trial-minibatch)")
    a = ap.parse_args()
    print(f"device {a.device}, torch {torch.__version__}, load average {os.getloadavg()}, "
          f"{a.rounds} interleaved rounds of {a.batches} minibatches of 20 (medians)")
    for threads in a.threads:
        torch.set_num_threads(threads)
        peak = peak_gflops(a.device, torch.float32)
        print(f"\n{threads} thread(s); peak (torch.mm, 1024^3) {peak:.0f} GFLOP/s; "
              "floor ms = the counted FLOPs at that peak")
        header = None
        for name in a.only or NAMES:
            cfg = paper_config(name)
            mms = minibatch_mms(cfg, cfg.batch_size)
            gflop = flops(mms) / 1e9
            ms = time_config(name, a.device, a.batches, a.rounds, not a.no_spec, a.packs)
            mm_ms = 1e3 * mm_seconds(mms, a.device, torch.float32)
            med = {v: statistics.median(t) for v, t in ms.items()}
            ratios = {v: statistics.median(t / n for t, n in zip(ms["today"], ms[v]))
                      for v in ms if v == "new" or v.startswith("P=")}
            if header is None:
                header = (f"{'config':<8} {'T':>4} {'Kmax':>4} {'GFLOP':>6} "
                          + " ".join(f"{v + ' ms':>9}" for v in med) + " "
                          + " ".join(f"{'x ' + v:>8}" for v in ratios) + " "
                          + " ".join(f"{v + ' GF/s':>10}" for v in med)
                          + f" {'mm GF/s':>8} {'mm ms':>7} {'floor ms':>8}")
                print(header)
            print(f"{name:<8} {cfg.T:>4} {cfg.Kmax:>4} {gflop:>6.3f} "
                  + " ".join(f"{m:>9.2f}" for m in med.values()) + " "
                  + " ".join(f"{r:>8.2f}" for r in ratios.values()) + " "
                  + " ".join(f"{gflop / m * 1e3:>10.1f}" for m in med.values())
                  + f" {gflop / mm_ms * 1e3:>8.1f} {mm_ms:>7.2f} {gflop / peak * 1e3:>8.2f}", flush=True)
    print(f"\nload average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
