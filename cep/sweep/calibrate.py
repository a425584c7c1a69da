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
from cep.cost import DATASET_SIZES
from cep.data import Data
from cep.device import resolve_device
from cep.sweep.plan import Pack
from cep.train import Stacked, train_epoch

TIMED_BATCHES = 3


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

