"""What a trial costs, counted in one place: its synapses, sample-steps and multiply-adds, and a pack's per epoch.

`pack: auto`, the config's limits, the dry run, its calibration and the sweep's ETA all price from here.
A config is read by its fields only (size_tab, rule, T, Kmax, ...), so cep.config can use these too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

# Images per split (spec: mnist5k is the embedded 4,000/1,000 split; mnist is torchvision's).
DATASET_SIZES = {"mnist5k": (4000, 1000), "mnist": (60000, 10000)}


def _products(sizes: Sequence[int]) -> int:
    return sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))


def forward_synapses(size_tab: Sequence[int]) -> int:
    """Forward weights W_0..W_{L-1} (vf's feedback matrices not included): what MAX_SYNAPSES bounds."""
    return _products(size_tab)


def step_synapses(cfg: Any) -> int:
    """Synapses the dynamics use at every step: all but the input layer's (the feedback matrices of vf too);
    the input layer's drive is computed once per phase."""
    return _products(cfg.size_tab[:-1]) * (2 if cfg.rule == "vf" else 1)


def n_weights(cfg: Any) -> int:
    """Synapses of the network (feedback matrices of vf included)."""
    return _products(cfg.size_tab) + (_products(cfg.size_tab[:-1]) if cfg.rule == "vf" else 0)


def minibatch_macs(cfg: Any) -> int:
    """Multiply-adds of one minibatch: every image through every forward synapse at each of the T + Kmax steps."""
    return cfg.batch_size * (cfg.T + cfg.Kmax) * forward_synapses(cfg.size_tab)


def _analysis_steps(cfg: Any) -> int:
    """The gradient analysis of one minibatch: T free steps, one backward pass through the last Kmax of
    them, and Kmax nudged steps (cep.gdu)."""
    return cfg.batch_size * (cfg.T + 2 * cfg.Kmax)


def sample_steps(cfg: Any) -> int:
    """Estimated cost of a trial in sample-steps: one sample through one step of the dynamics.

    Training: every training sample runs T free and Kmax nudged steps per epoch,
    every test sample T steps, plus one gradient analysis when angle_grad is on.
    """
    if cfg.action == "gdu":
        return _analysis_steps(cfg)
    n_train, n_test = DATASET_SIZES[cfg.dataset]
    n_train = min(n_train, cfg.train_samples or n_train)
    n_test = min(n_test, cfg.test_samples or n_test)
    steps = cfg.epochs * (n_train * (cfg.T + cfg.Kmax) + n_test * cfg.T)
    return steps + (_analysis_steps(cfg) if cfg.angle_grad else 0)


def trial_macs(cfg: Any) -> int:
    """Multiply-adds of a whole trial (two per synapse and sample-step: the state update and the learning)."""
    return sample_steps(cfg) * 2 * n_weights(cfg)


def epoch_macs(configs: Iterable[Any]) -> float:
    """Multiply-adds of one epoch of a pack, given its members' configs (the price the dry run's calibration
    scales by and the sweep's ETA weighs packs by)."""
    return sum(sample_steps(c) / max(1, c.epochs) * 2 * n_weights(c) for c in configs)
