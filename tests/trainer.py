"""Test-side shortcuts over the trainer: one trial trained or evaluated alone, zero states, dense increments.

Production code trains packs (cep.train.train_pack); these spell out the one-trial cases the tests check.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from cep.checkpoint import TrainState, new_state
from cep.config import TrialConfig
from cep.device import resolve_device
from cep.model import Increment, Params, States
from cep.train import Progress, Report, evaluate_trials, train_pack


def train(cfg: TrialConfig, report: Report | None = None, state: TrainState | None = None,
          progress: Progress | None = None) -> TrainState:
    """Train (or continue training) one trial; returns the final state.

    With `state` from a checkpoint, continues from its epoch and finishes bit for
    bit as the uninterrupted run would (same device and library versions).
    A run whose states or weights stop being finite ends with status "diverged",
    keeps the metrics of its last finite epoch, and reports them once more with
    that status (so that every report but the last says "running"). A run whose train error collapses
    to chance level (cep.health.find_collapse) is flagged in `info["collapsed"]` and trains on, or ends
    there with status "collapsed" when its config says stop_on_collapse.
    """
    if state is None:
        state = new_state(cfg, resolve_device(cfg.device))
    return train_pack([state], report, progress)[0]


def evaluate(cfg: TrialConfig, params: Params, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Test error (%) and loss (½‖s_0 − y‖² per sample) from the free phase only."""
    ev = evaluate_trials(cfg, params, x, y, None)
    return ev.errors[0], ev.losses[0]


def zero_states(cfg: TrialConfig, batch_shape: Sequence[int], like: Tensor) -> States:
    """Zero states for every layer; `batch_shape` is `(..., B)`."""
    return [like.new_zeros(*batch_shape, n) for n in cfg.size_tab[:-1]]


def increment_weights(inc: Increment) -> list[Tensor]:
    """Every dW_i of an increment, output-first, dense."""
    return [*inc.dW, inc.input_matrix()]
