"""Where a pack pays: ms per trial-minibatch of a net trained alone and in a pack (what `pack: auto` rests on).

    python benchmarks/pack_speed.py [--threads 1] [--pack 9] [--rounds 3] [--only C-VF-2h ...]

Each cell is cep.sweep.calibrate.seconds_per_minibatch (a warm-up minibatch, then 3 timed ones on random
MNIST-shaped data), per trial, the median over rounds that alternate alone and packed so that a noisy
shared machine moves both alike. The nets span the per-step synapses of cep.cost.step_synapses,
the quantity the rule decides by: the paper's 1h and 2h nets and two in between.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cep.checkpoint import new_state  # noqa: E402
from cep.config import TrialConfig  # noqa: E402
from cep.cost import step_synapses  # noqa: E402
from cep.presets import paper_config  # noqa: E402
from cep.sweep.calibrate import seconds_per_minibatch  # noqa: E402
from cep.sweep.plan import auto_pack  # noqa: E402


def nets() -> dict[str, TrialConfig]:
    c1, c2 = paper_config("C-VF-1h"), paper_config("C-VF-2h")
    return {"C-VF-1h": c1, "C-VF-1h-2048": c1.replace(size_tab=(10, 2048, 784)),
            "C-VF-2h-256": c2.replace(size_tab=(10, 256, 256, 784)), "EP-2h": paper_config("EP-2h"), "C-VF-2h": c2}


def ms_per_trial(cfg: TrialConfig, members: int) -> float:
    states = [new_state(cfg.replace(seed=k, device="cpu"), torch.device("cpu")) for k in range(members)]
    return 1000 * seconds_per_minibatch(states) / members


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pack", type=int, default=9)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    resources = {"cpu": args.threads, "gpu": 0}
    print(f"{'net':14} {'synapses/step':>13} {'alone':>8} {f'P={args.pack}':>8} {'ratio':>6}  "
          f"auto (threads {args.threads})")
    for name, cfg in nets().items():
        if args.only and name not in args.only:
            continue
        alone, packed = [], []
        for _ in range(args.rounds):
            alone.append(ms_per_trial(cfg, 1))
            packed.append(ms_per_trial(cfg, args.pack))
        a, p = statistics.median(alone), statistics.median(packed)
        print(f"{name:14} {step_synapses(cfg):13,} {a:8.1f} {p:8.1f} {p / a:6.2f}  {auto_pack(cfg, resources)[0]}",
              flush=True)


if __name__ == "__main__":
    main()
