"""Fig. 4 on a GPU: one epoch of each packed group of the sweep, and the projected time of the whole sweep.

    python benchmarks/gpu_fig4.py [--device cuda] [--pack 45] [--batches 3000] [--check]

`cep-sweep sweeps/fig4_angles.yaml` is 45 C-VF-1h trials x 100 epochs and 45 C-VF-2h trials x 150 epochs of
full MNIST (3,000 minibatches of 20 per epoch). With `pack: auto` each group of 45 (9 angles x 5 seeds)
trains as one program on one GPU. This times `--batches` minibatches of each group as one pack on random
MNIST-shaped data (the step does not depend on the pixel values), scales to an epoch, and projects the sweep.

`--check` first compares, on the device in float64 over a few minibatches, every member of a small pack with
the same trial trained alone (the correctness check that no CPU machine can make for CUDA).
Never run in CI: it needs a GPU to mean anything (on a CPU it runs, slowly, with the CPU's numbers).
"""

from __future__ import annotations

import argparse
import math

import torch

from cep.checkpoint import new_state
from cep.presets import paper_config
from cep.sweep.calibrate import random_data, seconds_per_minibatch
from cep.train import Stacked, train_epoch

GROUPS = {"C-VF-1h": 100, "C-VF-2h": 150}  # epochs of the published runs
ANGLES = (0, 22.5, 45, 67.5, 90, 112.5, 135, 157.5, 180)


def members(name: str, n: int, device: str, dtype: str = "float32") -> list:
    """n trials of the group: angles x seeds, as the sweep expands them."""
    cfgs = [paper_config(name, angle=ANGLES[k % len(ANGLES)], seed=k // len(ANGLES), device=device, dtype=dtype)
            for k in range(n)]
    return [new_state(c, torch.device(device)) for c in cfgs]


def seconds_per_epoch(name: str, pack: int, batches: int, device: str) -> float:
    """One epoch (3,000 minibatches of 20) of a pack of the group, scaled from `batches` timed ones."""
    return seconds_per_minibatch(members(name, pack, device), batches) * 3000


def check(device: str) -> None:
    """float64 on the device: each member of a pack of 3 equals its trial alone over 5 minibatches."""
    for name in GROUPS:
        data = random_data(100, torch.device(device), torch.float64)
        packed = members(name, 3, device, "float64")
        alone = members(name, 3, device, "float64")
        pack = Stacked.of(packed, True)
        with torch.no_grad():
            train_epoch(pack, data, None)
            pack.unstack()  # the trained parameters back into each member
            for s in alone:
                train_epoch(Stacked.of([s], False), data, None)
        worst = max(float((a - b).abs().max()) for p, s in zip(packed, alone, strict=True)
                    for a, b in zip(p.params.tensors(), s.params.tensors(), strict=True))
        print(f"check {name} on {device}, float64, pack of {len(pack.members)}, 5 minibatches: "
              f"max |packed - alone| = {worst:.2e} -> {'OK' if worst < 1e-10 else 'FAILED'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--pack", type=int, default=45)
    ap.add_argument("--batches", type=int, default=3000, help="minibatches timed per group (3000 = one epoch)")
    ap.add_argument("--check", action="store_true", help="first check packed against alone in float64")
    a = ap.parse_args()
    print(f"device {a.device} ({torch.cuda.get_device_name() if a.device.startswith('cuda') else 'CPU'}), "
          f"torch {torch.__version__}, pack of {a.pack}, {a.batches} minibatches timed per group")
    if a.check:
        check(a.device)
    total = 0.0
    for name, epochs in GROUPS.items():
        per_epoch = seconds_per_epoch(name, a.pack, a.batches, a.device)
        packs = math.ceil(45 / a.pack)
        hours = per_epoch * epochs * packs / 3600
        total += hours
        print(f"{name}: {per_epoch:8.1f} s per epoch of a pack of {a.pack} "
              f"({per_epoch / a.pack:.2f} s per trial-epoch); {packs} pack(s) x {epochs} epochs = {hours:.1f} h")
    print(f"projected Fig. 4 sweep (90 trials) on one device, packs one after another: {total:.1f} h")


if __name__ == "__main__":
    main()
