"""The training step before the fused step (commit 44fb562: model.step/relax, rules.learn), frozen for benchmarks only.

The pre-change relax, nudged phase and learn (the rest of that step is cep.model's, unchanged since), so that
trainer_speed.py can time the old and the new step in one run on the same machine. Not package code; nothing
imports it but benchmarks.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from cep.config import TrialConfig
from cep.model import (
    Increment,
    Params,
    Scalar,
    States,
    apply_increment,
    apply_input_update,
    increment,
    input_drive,
    step,
    synaptic,
    update_drive,
)

DEBUG_CEP_SCALE = 1e-5


def relax(cfg: TrialConfig, p: Params, x: Tensor, steps: int) -> States:
    drive = input_drive(cfg, p, x)
    s = [x.new_zeros(*x.shape[:-1], n) for n in cfg.size_tab[:-1]]
    for _ in range(steps):
        s, _ = step(cfg, p, s, drive)
    return s


def nudged_phase(cfg: TrialConfig, p: Params, s_free: States, x: Tensor, y: Tensor, beta: Scalar,
                 lrs: Sequence[Scalar] | None = None, accumulate: bool = False) -> tuple[States, Increment | None]:
    x_syn = synaptic(cfg, x)
    drive = input_drive(cfg, p, x)
    gram = x_syn @ x_syn.mT if lrs is not None else None
    s, total, d_in_sum = s_free, None, None
    for _ in range(cfg.Kmax):
        new, _ = step(cfg, p, s, drive, beta, y)
        if lrs is not None or accumulate:
            inc = increment(cfg, new, s, x_syn, beta)
            if lrs is not None:
                apply_increment(p, inc, lrs, input_weight=False)
                drive = update_drive(drive, gram, inc, lrs[-1])
                d_in_sum = inc.d_in.clone() if d_in_sum is None else d_in_sum.add_(inc.d_in)
            if accumulate:
                total = inc if total is None else (total.add_(inc) or total)
        s = new
    if d_in_sum is not None:
        apply_input_update(p, d_in_sum, x_syn, lrs[-1])
    return s, total


def learn(cfg: TrialConfig, p: Params, s_free: States, x: Tensor, y: Tensor, beta: Scalar,
          lrs: Sequence[Scalar]) -> States:
    x_syn = synaptic(cfg, x)
    if cfg.debug_cep:
        saved = p.clone()
        s, total = nudged_phase(cfg, p, s_free, x, y, beta, [lr * DEBUG_CEP_SCALE for lr in lrs], accumulate=True)
        p.copy_(saved)
        apply_increment(p, total, lrs)
    elif cfg.continual:
        s, _ = nudged_phase(cfg, p, s_free, x, y, beta, lrs)
    elif cfg.rule == "ep":
        s, _ = nudged_phase(cfg, p, s_free, x, y, beta)
        apply_increment(p, increment(cfg, s, s_free, x_syn, beta), lrs)
    else:
        s, total = nudged_phase(cfg, p, s_free, x, y, beta, accumulate=True)
        apply_increment(p, total, lrs)
    return s
