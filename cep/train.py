"""One round of a pack (train_round: an epoch of every member), each minibatch through cep.fused_step's relax
and learn; the caller (cep.runner.rounds) owns the loop over rounds.

No Ray and no files here: a round returns each member's metrics, and its state (cep.checkpoint.TrainState)
holds everything needed to continue bit for bit (weights, epoch, metrics so far, the random generator that
draws data order and nudge signs).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from cep.checkpoint import TrainState
from cep.config import TrialConfig, pack_problems
from cep.data import Data, load_data
from cep.device import resolve_device
from cep.fused_step import learn, relax
from cep.health import SATURATION_MARGIN, find_collapse, weight_health
from cep.model import Params

Report = Callable[[dict[str, Any], "TrainState"], None]
# progress(epoch, samples done, samples in the epoch, train error so far in %)
Progress = Callable[[int, int, int, float], None]


def nudge_signs(cfg: TrialConfig, n_batches: int, g: torch.Generator) -> list[float]:
    """Per-minibatch sign of beta (randbeta, spec section 5): +1 with probability p; p = 0 means always +1."""
    if cfg.randbeta == 0:
        return [1.0] * n_batches
    return [1.0 if u < cfg.randbeta else -1.0 for u in torch.rand(n_batches, generator=g, dtype=torch.float64)]


@dataclass
class _Evaluation:
    """Per trial of a pack: test error (%), loss per sample, and the output layer's saturation (the fraction
    of output units within SATURATION_MARGIN of 0 or 1: a net stuck at the clamps no longer learns)."""

    errors: list[float]
    losses: list[float]
    saturation: list[float]


def evaluate_trials(cfg: TrialConfig, params: Params, x: torch.Tensor, y: torch.Tensor,
                    pack: int | None) -> _Evaluation:
    """The test-set free phase of every trial; `pack`: the number of trials stacked in `params` (None: one,
    unstacked). Saturation comes from the same relaxation: health costs no extra phase."""
    errors, saturated = _zeros(pack, torch.long, x.device), _zeros(pack, torch.long, x.device)
    loss = _zeros(pack, torch.float64, x.device)
    for start in range(0, len(y), cfg.test_batch_size):
        xb, yb = x[start:start + cfg.test_batch_size], y[start:start + cfg.test_batch_size]
        if pack is not None:
            xb = xb.expand(pack, *xb.shape)
        s0 = relax(cfg, params, xb, cfg.T)[0]
        errors += _per_trial_sum(s0.argmax(-1) != yb, pack)
        loss += (0.5 * _per_trial_sum((s0 - F.one_hot(yb, s0.shape[-1]).to(s0.dtype)) ** 2, pack)).double()
        saturated += _per_trial_sum((s0 <= SATURATION_MARGIN) | (s0 >= 1 - SATURATION_MARGIN), pack)
    units = len(y) * cfg.size_tab[0]
    return _Evaluation([100.0 * e / len(y) for e in errors.tolist()], [v / len(y) for v in loss.tolist()],
                       [v / units for v in saturated.tolist()])


def _zeros(pack: int | None, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.zeros(pack or 1, dtype=dtype, device=device)


def _per_trial_sum(t: torch.Tensor, pack: int | None) -> torch.Tensor:
    """Sum over everything but the trial dimension: `[P, ...]` -> `[P]` (unstacked: a sum of one)."""
    return t.sum().reshape(1) if pack is None else t.reshape(pack, -1).sum(-1)


@dataclass
class Stacked:
    """The trials that train in one round, as one program: parameters stacked along a leading trial
    dimension and per-trial numbers as `[P]` tensors. A pack of one is the trial itself (no stacking,
    plain floats), so a trial run alone computes exactly what it always did."""

    members: list[TrainState]
    params: Params
    size: int | None  # P, or None for a trial alone

    @classmethod
    def of(cls, members: list[TrainState], stacked: bool) -> Stacked:
        """`stacked`: with a leading trial dimension even for one member (a pack's program, whichever of
        its members train in a round)."""
        if not stacked:
            return cls(members, members[0].params, None)
        return cls(members, Params.stack([m.params for m in members]), len(members))

    @property
    def cfg(self) -> TrialConfig:
        return self.members[0].config

    def per_trial(self, values: list[float], like: torch.Tensor) -> float | torch.Tensor:
        return values[0] if self.size is None else torch.tensor(values, dtype=like.dtype, device=like.device)

    def unstack(self) -> None:
        """Write the trained parameters back into each member's state."""
        if self.size is not None:
            for i, m in enumerate(self.members):
                m.params.copy_(self.params.member(i))


def train_epoch(pack: Stacked, data: Data, progress: Progress | None,
                shown: int = 0) -> tuple[list[float], list[float]]:
    """One pass of every member over the training set, each in its own order (drawn from its own
    generator, as alone); returns per member (train error %, train loss) from the free phases.
    `progress` shows the member at index `shown`."""
    cfg, P, device = pack.cfg, pack.size, data.x_train.device
    n = len(data.y_train)
    n_batches = math.ceil(n / cfg.batch_size)
    orders, signs = [], []
    for m in pack.members:  # per member: the data order, then the nudge signs (as a trial alone draws them)
        orders.append(torch.randperm(n, generator=m.generator).to(device))
        signs.append(nudge_signs(m.config, n_batches, m.generator))
    order = orders[0] if P is None else torch.stack(orders)
    errors, loss = _zeros(P, torch.long, device), _zeros(P, data.x_train.dtype, device)
    lrs = [pack.per_trial([m.config.lr_tab[i] for m in pack.members], data.x_train)
           for i in range(cfg.n_layers)]
    last_shown = 0.0
    for k in range(n_batches):
        idx = order[..., k * cfg.batch_size:(k + 1) * cfg.batch_size]
        x, labels = data.x_train[idx], data.y_train[idx]
        y = F.one_hot(labels, cfg.size_tab[0]).to(x.dtype)
        if k == 0:
            _measure_angle_grad(pack, x, y)
        s_free = relax(cfg, pack.params, x, cfg.T)
        errors += _per_trial_sum(s_free[0].argmax(-1) != labels, P)
        loss += 0.5 * _per_trial_sum((s_free[0] - y) ** 2, P)
        beta = pack.per_trial([sg[k] * m.config.beta for sg, m in zip(signs, pack.members)], x)
        learn(cfg, pack.params, s_free, x, y, beta, lrs)
        if progress is not None and (time.monotonic() - last_shown > 0.25 or k == n_batches - 1):
            last_shown = time.monotonic()
            done = min(n, (k + 1) * cfg.batch_size)
            progress(pack.members[shown].epoch + 1, done, n, 100.0 * int(errors[shown]) / done)
    return [100.0 * e / n for e in errors.tolist()], [v / n for v in loss.tolist()]


def _measure_angle_grad(pack: Stacked, x: torch.Tensor, y: torch.Tensor) -> None:
    """angle-grad (spec section 6) of the members that ask for it, once, on their first minibatch."""
    for i, m in enumerate(pack.members):
        if m.config.angle_grad and "angle_grad" not in m.info:
            from cep.gdu.analysis import angle_grad  # the analysis module (autograd) is only loaded when asked for

            alone = (m.params, x, y) if pack.size is None else (pack.params.member(i), x[i], y[i])
            m.info["angle_grad"] = angle_grad(m.config, *alone)


def pack_data(states: list[TrainState]) -> Data:
    """The data a pack trains on, on its device and in its dtype; refuses trials that cannot share a pack."""
    problems = pack_problems([s.config for s in states])
    if problems:
        raise ValueError(f"these trials cannot share a pack: {'; '.join(problems)}")
    cfg = states[0].config
    return load_data(cfg).to(resolve_device(cfg.device), getattr(torch, cfg.dtype))


@torch.no_grad()
def train_round(states: list[TrainState], data: Data, stacked: bool, progress: Progress | None = None,
                show: TrainState | None = None) -> list[tuple[dict[str, Any], TrainState]]:
    """One round of a pack: each member that has epochs to go trains its next one (members may stand at
    different epochs, e.g. after a resume); returns (metrics, state) per member that trained, the diverged
    first (status "diverged", the metrics of its last finite epoch; left out of later rounds), then the
    others in pack order. Empty: no member has an epoch to go.

    Each member sees exactly its own data order, nudge signs and hyperparameters, so it computes what it
    would alone (to floating-point summation order). `stacked` keeps the leading trial dimension even for
    one member, so that a pack runs one program whichever members remain (in float32 a member's last bits
    still depend on its companions: exact resume comes from saving a pack's rounds whole, cep.runner.rounds);
    a trial alone runs unstacked, as it always did. `progress` shows the member `show` (default: the first
    that trains; none once `show` has ended)."""
    active = [s for s in states if s.status == "running" and s.epoch < s.config.epochs]
    if not active:
        return []
    start = time.monotonic()
    pack = Stacked.of(active, stacked)
    shown = next((i for i, s in enumerate(active) if s is show), None) if show is not None else 0
    train_errors, train_losses = train_epoch(pack, data, progress if shown is not None else None, shown or 0)
    pack.unstack()
    alive = [i for i, (m, loss) in enumerate(zip(active, train_losses))
             if math.isfinite(loss) and m.params.all_finite()]
    done = [(_diverge(m), m) for i, m in enumerate(active) if i not in alive]
    tests = _evaluate_alive(pack, alive, data)
    seconds = time.monotonic() - start
    for j, i in enumerate(alive):
        health = {**weight_health(active[i].params), "output_saturation": tests.saturation[j]}
        done.append((_epoch_done(active[i], train_errors[i], train_losses[i], tests.errors[j], tests.losses[j],
                                 health, seconds), active[i]))
    return done


def train_pack(states: list[TrainState], report: Report | None = None, progress: Progress | None = None,
               stacked: bool | None = None, show: TrainState | None = None) -> list[TrainState]:
    """Train several trials that share their structure (cep.config.pack_problems) as one program, round by
    round (train_round; `stacked` default: more than one state) to their ends, with no folder; `report(metrics,
    state)` per member after each of its epochs, in train_round's order."""
    data = pack_data(states)
    stacked = len(states) > 1 if stacked is None else stacked
    while done := train_round(states, data, stacked, progress, show):
        for metrics, state in done:
            if report is not None:
                report(metrics, state)
    return states


def _evaluate_alive(pack: Stacked, alive: list[int], data: Data) -> _Evaluation:
    """The evaluation of the members that did not diverge (stacked again only when some did)."""
    if not alive:
        return _Evaluation([], [], [])
    if pack.size is None or len(alive) == pack.size:
        return evaluate_trials(pack.cfg, pack.params, data.x_test, data.y_test, pack.size)
    params = Params.stack([pack.members[i].params for i in alive])
    return evaluate_trials(pack.cfg, params, data.x_test, data.y_test, len(alive))


def _diverge(state: TrainState) -> dict[str, Any]:
    """Mark a member diverged; its report: the metrics of its last finite epoch with the new status."""
    state.status = "diverged"
    state.info["diverged_at_epoch"] = state.epoch + 1
    last = dict(state.history[-1]) if state.history else {"epoch": state.epoch}
    return {**last, "status": "diverged"}


def _epoch_done(state: TrainState, train_error: float, train_loss: float, test_error: float, test_loss: float,
                health: dict[str, float], seconds: float) -> dict[str, Any]:
    """Record an epoch: its metrics (health columns after the original ones), the collapse flag the first
    time the history shows one, and the status (a collapse ends the run only with stop_on_collapse)."""
    state.elapsed += seconds
    state.epoch += 1
    metrics: dict[str, Any] = dict(epoch=state.epoch, train_error=train_error, test_error=test_error,
                                   train_loss=train_loss, test_loss=test_loss, epoch_seconds=seconds,
                                   elapsed_seconds=state.elapsed, **health)
    state.history.append(metrics)
    if "collapsed" not in state.info:
        collapse = find_collapse(state.history)
        if collapse is not None:
            state.info["collapsed"] = collapse
    if state.config.stop_on_collapse and state.info.get("collapsed", {}).get("epoch") == state.epoch:
        state.status = "collapsed"
    elif state.epoch == state.config.epochs:
        state.status = "finished"
    metrics["status"] = state.status
    return metrics
