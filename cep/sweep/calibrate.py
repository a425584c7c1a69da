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

from cep.data import Data
from cep.sweep.plan import DATASET_SIZES, Pack
from cep.train import _Pack, _train_epoch, new_state, resolve_device

TIMED_BATCHES = 3


def seconds_per_epoch(pack: Pack, threads: int) -> float:
    """Estimated seconds of one epoch of the whole pack (training and evaluation) on this machine."""
    cfg = pack.members[0].config
    device = resolve_device(cfg.device if cfg.device != "auto" else "cpu")
    dtype = getattr(torch, cfg.dtype)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        states = [new_state(t.config.replace(seed=t.config.seed or 0), device) for t in pack.members]
        g = torch.Generator().manual_seed(0)
        n = cfg.batch_size * TIMED_BATCHES
        x = torch.rand(n, 784, generator=g).to(device, dtype)
        y = torch.randint(0, 10, (n,), generator=g).to(device)
        data = Data(x, y, x, y)
        with torch.no_grad():
            _train_epoch(_Pack.of(states, len(states) > 1), Data(x[:cfg.batch_size], y[:cfg.batch_size], x, y), None)
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            _train_epoch(_Pack.of(states, len(states) > 1), data, None)
            if device.type == "cuda":
                torch.cuda.synchronize()
            per_batch = (time.perf_counter() - start) / TIMED_BATCHES
    finally:
        torch.set_num_threads(previous)
    n_train, n_test = DATASET_SIZES[cfg.dataset]
    n_train = min(n_train, cfg.train_samples or n_train)
    n_test = min(n_test, cfg.test_samples or n_test)
    # evaluation: T free steps per test image, against T + Kmax steps per training image
    per_image_step = per_batch / (cfg.batch_size * (cfg.T + cfg.Kmax))
    return math.ceil(n_train / cfg.batch_size) * per_batch + n_test * cfg.T * per_image_step

