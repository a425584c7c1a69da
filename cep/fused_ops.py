"""The building blocks of cep.fused_step: the prepared net, state buffers, and one step as a list of bound ops.

A phase is planned once as ops on fixed buffers and replayed (run_ops), so a step costs no Python dispatch logic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor

from cep.config import TrialConfig
from cep.model import Params, Scalar, States, rho, rho_prime, synaptic

# discrete setting: rho(u) = core(scale * u + shift), computed into `out`
_FOLD: dict[str, tuple[float, float, Callable[..., Tensor]]] = {
    "sigm": (4.0, -2.0, torch.sigmoid),
    "tanh": (1.0, 0.0, torch.tanh),
    "hardsigm": (1.0, 0.0, lambda u, out: torch.clamp(u, 0, 1, out=out)),
}


# ------------------------------------------------------------------ helpers
def addmm(bias: Tensor, a: Tensor, b: Tensor, out: Tensor, alpha: float = 1.0) -> Tensor:
    """out = bias + alpha a @ b, for plain [B, n] or trial-batched [P, B, n] operands."""
    if a.dim() == 2:
        return torch.addmm(bias, a, b, alpha=alpha, out=out)
    return torch.baddbmm(bias, a, b, alpha=alpha, out=out)


def add_product(acc: Tensor, a: Tensor, b: Tensor, scale: Scalar = 1.0) -> None:
    """acc += scale * a @ b in place; a per-trial `scale` ([P, 1, 1]) is folded into `a`."""
    if isinstance(scale, Tensor):
        a, scale = a * scale, 1.0
    if a.dim() == 2:
        acc.addmm_(a, b, alpha=scale)
    else:
        acc.baddbmm_(a, b, alpha=scale)


def mm(a: Tensor, b: Tensor, out: Tensor | None = None) -> Tensor:
    return torch.mm(a, b, out=out) if a.dim() == 2 else torch.bmm(a, b, out=out)


Op = Callable[[], object]


def _column_major(t: Tensor) -> bool:
    return t.stride(-2) == 1 and t.stride(-1) != 1


def new_input_buffer(like: Tensor, lead: list[int], rows: int, n: int, j: int) -> Tensor:
    """[*lead, rows, n] for layer j's input. The output layer's (n = 10) is stored transposed: products
    into it then run as W @ u^T ([10, 512] @ [512, rows]), which MKL does 1.5-3x faster than u @ W^T."""
    if j > 0:
        return like.new_empty(*lead, rows, n)
    return like.new_empty(*lead, n, rows).mT


def addmm_op(bias: Tensor, a: Tensor, b: Tensor, out: Tensor) -> Op:
    """out = bias + a @ b, bound once: a step is a list of such ops, replayed without Python dispatch logic."""
    if _column_major(out):  # out^T = bias^T + b^T a^T
        bias, a, b, out = bias.mT, b.mT, a.mT, out.mT
    return partial(torch.addmm if a.dim() == 2 else torch.baddbmm, bias, a, b, out=out)


def add_product_op(acc: Tensor, a: Tensor, b: Tensor, scale: Scalar = 1.0) -> Op:
    """acc += scale * a @ b, bound once."""
    if _column_major(acc):  # acc^T += scale * b^T a^T
        acc, a, b = acc.mT, b.mT, a.mT
    if isinstance(scale, Tensor):
        return partial(add_product, acc, a, b, scale)
    return partial(acc.addmm_ if a.dim() == 2 else acc.baddbmm_, a, b, alpha=scale)


def axpy_op(y: Tensor, x: Tensor, alpha: Scalar) -> Op:
    """y += alpha x, bound once."""
    return partial(y.addcmul_, x, alpha) if isinstance(alpha, Tensor) else partial(y.add_, x, alpha=alpha)


def axpy_(y: Tensor, x: Tensor, alpha: Scalar) -> None:
    """y += alpha x, alpha a float or a per-trial tensor."""
    if isinstance(alpha, Tensor):
        y.addcmul_(x, alpha)
    else:
        y.add_(x, alpha=alpha)


# ---------------------------------------------------------------- the net
class Net:
    """The tensors one phase multiplies with, flattened to [P, ...] when there are trial dimensions."""

    def __init__(self, cfg: TrialConfig, p: Params, x: Tensor):
        self.cfg = cfg
        self.discrete = cfg.setting == "discrete"
        self.scale, shift, self.core = _FOLD[cfg.activation] if self.discrete else (1.0, 0.0, None)
        self.lead = torch.broadcast_shapes(x.shape[:-2], *(t.shape[:-2] for t in p.W))
        self.P = math.prod(self.lead) if self.lead else 0
        flat = self.flat
        self.W = [flat(w, 2) for w in p.W]
        self.b = [flat(b, 1) for b in p.b]
        self.V = [flat(v, 2) for v in p.V]
        self.x_syn = flat(synaptic(cfg, x), 2)
        a = self.scale
        self.Ws = [w if a == 1 else w * a for w in self.W[:-1]]
        self.Vs = [v if a == 1 else v * a for v in self.V]
        # feedback into layer i+1 is syn_i @ F_i: W_i (ep) or V_i^T (vf)
        self.F = self.Ws if cfg.rule == "ep" else [v.mT for v in self.Vs]
        self.bs = [(b * a + shift).unsqueeze(-2) for b in self.b]
        drive = torch.empty(*self.x_syn.shape[:-1], self.W[-1].shape[-2], dtype=x.dtype, device=x.device)
        self.D = addmm(self.bs[-1], self.x_syn, self.W[-1].mT, drive, alpha=a)  # scale * (x W^T + b) + shift
        self.key = self._key(p, x)

    @staticmethod
    def _key(p: Params, x: Tensor) -> list[tuple[Tensor, int]]:
        return [(t, t._version) for t in (x, *p.tensors())]

    def valid_for(self, cfg: TrialConfig, p: Params, x: Tensor) -> bool:
        """Still describes (cfg, p, x): the same tensor objects, none modified in place since."""
        now = self._key(p, x)
        return cfg == self.cfg and len(now) == len(self.key) and all(
            a is b and va == vb for (a, va), (b, vb) in zip(now, self.key))

    def flat(self, t: Tensor, trailing: int) -> Tensor:
        """t [..., *trailing dims] as [P, *trailing dims] (a view when t already has the trial dims)."""
        if not self.lead:
            return t
        return t.expand(*self.lead, *t.shape[-trailing:]).reshape(self.P, *t.shape[-trailing:])

    def trial(self, v: Scalar, trailing: int) -> Scalar:
        """A per-trial scalar as [P, 1, ...] (`trailing` ones); floats and 0-dim tensors as they are."""
        if isinstance(v, Tensor) and v.dim() > 0:
            return v.expand(self.lead).reshape(self.P, *(1,) * trailing)
        return v

    def unflat(self, t: Tensor) -> Tensor:
        return t.reshape(*self.lead, *t.shape[1:]) if self.lead else t


class FreeStates(list):
    """The free phase's end states; carries the prepared net for a nudged phase on the same weights and x."""

    net: Net | None = None


# ------------------------------------------------------------ state buffers
@dataclass
class Slot:
    """State buffers of one step. Per layer z = [u(now); Δ; u(0)] ([.., 3B, n]) with Δ = u(now) - u(0), where
    u is what the update of the layer's outgoing weights and bias is made of: rho(s) for ep, s for vf (equal
    in the discrete setting); s and syn (what the layer sends: s or rho(s)) are u or separate buffers."""

    z: list[Tensor]
    u: list[Tensor]
    delta: list[Tensor]
    origin: list[Tensor]
    s: list[Tensor]
    syn: list[Tensor]
    h: list[Tensor]

    @classmethod
    def new(cls, net: Net, B: int, like: Tensor) -> Slot:
        cfg, P = net.cfg, ([net.P] if net.lead else [])
        z, u, delta, origin, s, syn, h = [], [], [], [], [], [], []
        for n in cfg.size_tab[:-1]:
            zj = like.new_empty(*P, 3 * B, n)
            uj = zj[..., :B, :]
            z.append(zj)
            u.append(uj)
            delta.append(zj[..., B:2 * B, :])
            origin.append(zj[..., 2 * B:, :])
            h.append(new_input_buffer(like, P, B, n, len(h)))
            s.append(uj if net.discrete or cfg.rule == "vf" else like.new_empty(*P, B, n))
            syn.append(uj if net.discrete or cfg.rule == "ep" else like.new_empty(*P, B, n))
        return cls(z, u, delta, origin, s, syn, h)

    def load(self, net: Net, states: States) -> None:
        """Set the states (and what derives from them) to `states`."""
        for j, t in enumerate(states):
            self.s[j].copy_(net.flat(t, 2))
            self._derive(net, j)

    def _derive(self, net: Net, j: int) -> None:
        """In the continuous setting, rho(s) into whichever of u / syn is not s itself."""
        if net.discrete:
            return
        if self.syn[j] is not self.s[j]:
            self.syn[j].copy_(rho(net.cfg, self.s[j]))

    def zero(self, net: Net) -> None:
        for j, t in enumerate(self.s):
            t.zero_()
            self._derive(net, j)

    def keep_as_origin(self, origin: Slot) -> None:
        """Store origin's u(now) as u(0)."""
        for mine, u in zip(self.origin, origin.u):
            mine.copy_(u)

    def update_delta(self) -> None:
        for u, d, o in zip(self.u, self.delta, self.origin):
            torch.sub(u, o, out=d)

    def states(self, net: Net) -> States:
        return [net.unflat(t.clone()) for t in self.s]


# -------------------------------------------------------------------- step
@dataclass
class Nudge:
    neg_beta: Scalar  # -beta, float or [P, 1, 1]
    beta_y: Tensor  # beta * y


Correction = list["tuple[Tensor, Tensor] | None"]


def step_ops(net: Net, cur: Slot, new: Slot, nudge: Nudge | None = None,
              corr: Correction | None = None, layers: Sequence[int] | None = None,
              drive: Tensor | None = None) -> list[Op]:
    """One synchronous step from `cur` into `new` (spec 2-3), as a list of bound ops on fixed buffers.

    `corr[j]`, a pair of factors whose product is added to layer j's input, is the low-rank
    effect of the weights' changes since u(0) (its buffers are refreshed by earlier ops).
    `layers`: update only these (default all); `drive`: the last layer's input drive, if not net.D.
    """
    L, ops = len(cur.s), []
    drive = net.D if drive is None else drive
    for j in range(L) if layers is None else layers:
        h = new.h[j]
        if j < L - 1:
            ops.append(addmm_op(net.bs[j], cur.syn[j + 1], net.Ws[j].mT, h))
            if j > 0:
                ops.append(add_product_op(h, cur.syn[j - 1], net.F[j - 1]))
        else:
            ops.append(addmm_op(drive, cur.syn[j - 1], net.F[j - 1], h) if j > 0 else partial(h.copy_, drive))
        if corr is not None and corr[j] is not None:
            ops.append(add_product_op(h, *corr[j]))
        if net.discrete:
            ops.append(partial(net.core, h, out=new.u[j]))
            if j == 0 and nudge is not None:
                ops += [axpy_op(new.u[0], cur.s[0], nudge.neg_beta), partial(new.u[0].add_, nudge.beta_y)]
        else:
            ops.append(partial(_continuous_update, net, cur, new, j, nudge))
    return ops


def _continuous_update(net: Net, cur: Slot, new: Slot, j: int, nudge: Nudge | None) -> None:
    """ds = -s + (rho'(s) for ep hidden layers) * h (+ nudge), Euler step, clamp (spec 2.3-2.4)."""
    cfg, h = net.cfg, new.h[j]
    if cfg.rule == "ep" and j > 0:
        h.mul_(rho_prime(cfg, cur.s[j]))
    ds = h.sub_(cur.s[j])
    if j == 0 and nudge is not None:
        axpy_(ds, cur.s[0], nudge.neg_beta)
        ds.add_(nudge.beta_y)
    torch.add(cur.s[j], ds, alpha=cfg.dt, out=new.s[j])
    if not cfg.no_clamp:
        new.s[j].clamp_(0, 1)
    new._derive(net, j)


def run_ops(plans: list[list[Op]], steps: int) -> None:
    for k in range(steps):
        for op in plans[k % 2]:
            op()
