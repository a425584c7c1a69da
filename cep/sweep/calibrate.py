"""How long a pack will take here: a few timed minibatches of the pack's program on random MNIST-shaped data.

For `cep-sweep --dry-run`: the step's cost does not depend on the pixel values, so a
short calibration on this machine (its CPU threads or GPU) gives seconds per epoch
and per pack, without loading the data set. A measured estimate, not a promise: a
cluster's nodes, and a busy machine, run at other speeds.
"""

from __future__ import annotations

import math
import time

import torch

from cep.checkpoint import TrainState, new_state
from cep.config import pack_key
from cep.cost import DATASET_SIZES, epoch_macs
from cep.data import Data
from cep.device import resolve_device
from cep.sweep.plan import Pack, torch_threads
from cep.sweep.spec import SweepSpec
from cep.text import duration, text_table
from cep.train import Stacked, train_epoch

TIMED_BATCHES = 3
MAX_CALIBRATIONS = 4  # distinct pack programs timed by --dry-run; the others are scaled from them


def random_data(n: int, device: torch.device, dtype: torch.dtype) -> Data:
    """n random MNIST-shaped images and labels (the step's cost does not depend on the pixels)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 784, generator=g).to(device, dtype)
    y = torch.randint(0, 10, (n,), generator=g).to(device)
    return Data(x, y, x[:1000], y[:1000])


def seconds_per_minibatch(states: list[TrainState], batches: int = TIMED_BATCHES) -> float:
    """Seconds one training minibatch of these trials takes as one program (a pack when more than one),
    after one minibatch of warm-up; the states' weights move (give them copies you do not need)."""
    cfg = states[0].config
    device, dtype = states[0].params.W[0].device, states[0].params.W[0].dtype
    warm_up, data = random_data(cfg.batch_size, device, dtype), random_data(cfg.batch_size * batches, device, dtype)
    with torch.no_grad():
        train_epoch(Stacked.of(states, len(states) > 1), warm_up, None)
        _sync(device)
        start = time.perf_counter()
        train_epoch(Stacked.of(states, len(states) > 1), data, None)
        _sync(device)
    return (time.perf_counter() - start) / batches


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def seconds_per_epoch(pack: Pack, threads: int) -> float:
    """Estimated seconds of one epoch of the whole pack (training and evaluation) on this machine."""
    cfg = pack.members[0].config
    device = resolve_device(cfg.device if cfg.device != "auto" else "cpu")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        per_batch = seconds_per_minibatch([new_state(t.config.replace(seed=t.config.seed or 0), device)
                                           for t in pack.members])
    finally:
        torch.set_num_threads(previous)
    n_train, n_test = DATASET_SIZES[cfg.dataset]
    n_train = min(n_train, cfg.train_samples or n_train)
    n_test = min(n_test, cfg.test_samples or n_test)
    # evaluation: T free steps per test image, against T + Kmax steps per training image
    per_image_step = per_batch / (cfg.batch_size * (cfg.T + cfg.Kmax))
    return math.ceil(n_train / cfg.batch_size) * per_batch + n_test * cfg.T * per_image_step


def estimate_table(spec: SweepSpec, packs: list[Pack]) -> str:
    """For --dry-run: each pack's estimated time, from a short calibration of its program on this machine."""
    where = "GPU" if torch.cuda.is_available() else "CPU"
    asks_gpu = spec.resources.get("gpu", 0) > 0
    lines = [f"\nestimated time per pack, calibrated on this machine's {where} "
             f"({torch_threads(spec.resources)} thread(s); a few timed minibatches)"
             + (": the sweep asks for GPUs, this machine has none" if asks_gpu and where == "CPU" else "")]
    measured: dict[tuple[str, int], float] = {}
    costs: dict[tuple[str, int], float] = {}
    rows = []
    for k, p in enumerate(packs, 1):
        cfg = p.members[0].config
        if cfg.action != "train":
            rows.append([str(k), p.id, "1", "-", "(one analysis)"])
            continue
        key = (pack_key(cfg), len(p.members))
        if key not in measured and len(measured) < MAX_CALIBRATIONS:
            measured[key] = seconds_per_epoch(p, torch_threads(spec.resources))
            costs[key] = epoch_macs(t.config for t in p.members)
        per_epoch = measured.get(key) or _scaled(p, measured, costs)
        mark = "" if key in measured else "~"
        rows.append([str(k), p.id, str(len(p.members)), mark + duration(per_epoch),
                     mark + duration(per_epoch * cfg.epochs)])
    lines.append(text_table(["pack", "first trial", "trials", "per epoch", "all epochs"], rows, right=(2, 3, 4)))
    if len(measured) == MAX_CALIBRATIONS and any(r[3].startswith("~") for r in rows):
        lines.append(f"~: scaled by multiply-adds from the {MAX_CALIBRATIONS} pack programs calibrated")
    return "\n".join(lines)


def _scaled(pack: Pack, measured: dict[tuple[str, int], float], costs: dict[tuple[str, int], float]) -> float:
    """A pack's seconds per epoch from the calibrated pack of the closest cost, scaled by cost."""
    cost = epoch_macs(t.config for t in pack.members)
    key = min(measured, key=lambda k: abs(math.log(max(costs[k], 1.0) / max(cost, 1.0))))
    return measured[key] * cost / max(costs[key], 1.0)
