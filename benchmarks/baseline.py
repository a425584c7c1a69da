"""The training step before the fused step (commit 44fb562: model.step/relax, rules.learn), frozen for benchmarks only.

A copy of the pre-change functions, so that trainer_speed.py can time the old and the
new step in one run on the same machine. Not package code; nothing imports it but benchmarks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from cep.config import TrialConfig
from cep.model import Params, Scalar, States, rho, rho_prime

DEBUG_CEP_SCALE = 1e-5


def synaptic(cfg: TrialConfig, s: Tensor) -> Tensor:
    return s if cfg.setting == "discrete" else rho(cfg, s)


def _per_trial(value: Scalar, trailing: int) -> Scalar:
    if isinstance(value, Tensor) and value.dim() > 0:
        return value.reshape(value.shape + (1,) * trailing)
    return value


def input_drive(cfg: TrialConfig, p: Params, x: Tensor) -> Tensor:
    return synaptic(cfg, x) @ p.W[-1].mT


def step(cfg: TrialConfig, p: Params, s: States, drive: Tensor, beta: Scalar = 0.0,
         y: Tensor | None = None) -> tuple[States, States | None]:
    L = len(s)
    continuous = cfg.setting == "continuous"
    pre = [synaptic(cfg, si) for si in s]
    new, ds = [], []
    for i in range(L):
        h = (pre[i + 1] @ p.W[i].mT if i < L - 1 else drive) + p.b[i].unsqueeze(-2)
        if i > 0:
            h = h + pre[i - 1] @ (p.W[i - 1] if cfg.rule == "ep" else p.V[i - 1].mT)
        if not continuous:
            new.append(rho(cfg, h))
            continue
        if cfg.rule == "ep" and i > 0:
            h = rho_prime(cfg, s[i]) * h
        ds.append(h - s[i])
    if y is not None:
        nudge = _per_trial(beta, 2) * (y - s[0])
        if continuous:
            ds[0] = ds[0] + nudge
        else:
            new[0] = new[0] + nudge
    if not continuous:
        return new, None
    new = [si + cfg.dt * d for si, d in zip(s, ds)]
    if not cfg.no_clamp:
        new = [si.clamp(0, 1) for si in new]
        ds = [torch.where((si == 0) | (si == 1), torch.zeros_like(d), d) for si, d in zip(new, ds)]
    return new, ds


def relax(cfg: TrialConfig, p: Params, x: Tensor, steps: int) -> States:
    drive = input_drive(cfg, p, x)
    s = [x.new_zeros(*x.shape[:-1], n) for n in cfg.size_tab[:-1]]
    for _ in range(steps):
        s, _ = step(cfg, p, s, drive)
    return s


class Increment:
    def __init__(self, dW: list[Tensor], db: list[Tensor], dV: list[Tensor], d_in: Tensor, x_syn: Tensor):
        self.dW, self.db, self.dV, self.d_in, self.x_syn = dW, db, dV, d_in, x_syn

    def add_(self, other: Increment) -> None:
        for mine, theirs in zip([*self.dW, *self.db, *self.dV, self.d_in],
                                [*other.dW, *other.db, *other.dV, other.d_in], strict=True):
            mine.add_(theirs)


def increment(cfg: TrialConfig, a: States, c: States, x_syn: Tensor, beta: Scalar) -> Increment:
    L = len(a)
    scale = 1 / (_per_trial(beta, 2) * a[0].shape[-2])
    sa = [synaptic(cfg, t) for t in a]
    sc = [synaptic(cfg, t) for t in c]
    d = [(pa - pc) if cfg.rule == "ep" else (ta - tc) for pa, pc, ta, tc in zip(sa, sc, a, c)]
    d = [di * scale for di in d]
    dW, dV = [], []
    for i in range(L - 1):
        if cfg.rule == "ep":
            dW.append((sa[i].mT @ sa[i + 1] - sc[i].mT @ sc[i + 1]) * scale)
        else:
            dW.append(d[i].mT @ sc[i + 1])
            dV.append(d[i + 1].mT @ sc[i])
    db = [di.sum(-2) for di in d]
    if cfg.rule == "vf" and cfg.setting == "discrete":
        db[-1] = torch.zeros_like(db[-1])
    return Increment(dW, db, dV, d[-1], x_syn)


def apply_input_update(p: Params, d_in: Tensor, x_syn: Tensor, lr: Scalar) -> None:
    p.W[-1].add_(_per_trial(lr, 2) * (d_in.mT @ x_syn))


def apply_increment(p: Params, inc: Increment, lrs: Sequence[Scalar], input_weight: bool = True) -> None:
    for i, lr in enumerate(lrs):
        if i < len(inc.dW):
            p.W[i].add_(_per_trial(lr, 2) * inc.dW[i])
        p.b[i].add_(_per_trial(lr, 1) * inc.db[i])
        if i < len(p.V):
            p.V[i].add_(_per_trial(lr, 2) * inc.dV[i])
    if input_weight:
        apply_input_update(p, inc.d_in, inc.x_syn, lrs[-1])


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
                drive = drive + _per_trial(lrs[-1], 2) * (gram @ inc.d_in)
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
