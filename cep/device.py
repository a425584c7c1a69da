"""Where a trial runs: the torch device a config names, and the CPU threads a trial gets by default."""

from __future__ import annotations

import os

import torch

from cep.config import TrialConfig
from cep.errors import UsageProblem


def resolve_device(name: str) -> torch.device:
    """The torch device of a config's `device`; one that this machine lacks is a UsageProblem (one line)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageProblem(f"device {name}: CUDA is not available here (no GPU, or a CPU-only torch); "
                           "use device cpu or auto")
    device = torch.device(name)
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageProblem(f"device {name}: this machine has {torch.cuda.device_count()} GPU(s) "
                           f"(cuda:0 to cuda:{torch.cuda.device_count() - 1}); use one of them, or auto")
    return device


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's or a batch job's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_threads(cfg: TrialConfig, cpus: int | None = None) -> int:
    """torch's CPU threads for one trial when none are asked for (`cep train` without --threads).

    The paper's nets are small (minibatch 20, layers of 512): splitting each matrix product over threads
    costs more than it gains, and on a busy machine extra threads wait on each other (EP-1h at 146 samples/s
    instead of ~4,000 with torch's default). Measured with benchmarks/trainer_speed.py --threads 1,2
    (README, "Threads"): 1 thread is fastest for every paper configuration, so 1 unless the net has more
    than 2 million forward weights (then 2, never more than the CPUs there are).
    """
    return max(1, min(cpus or available_cpus(), 2 if cfg.n_synapses > LARGE_NET_WEIGHTS else 1))


LARGE_NET_WEIGHTS = 2_000_000  # forward weights above which a second thread pays (see default_threads)
