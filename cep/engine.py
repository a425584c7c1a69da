"""The fused training step: free phase and nudged phase + update with few, large operations (spec sections 2-4, 8).

Same results as `cep.model.step` iterated (to floating-point summation order), but
* discrete setting: the activation's affine part is folded into scaled copies of the
  weights (sigm: rho(u) = sigmoid(4u - 2)), so a layer costs one addmm (two for middle
  layers) and one activation written into a preallocated buffer;
* the discrete free phase runs as two independent chains side by side (_two_chains): one product
  per layer pair and step on twice the rows, half the operations (and kernel launches);
* the output layer's input is computed transposed, W @ u^T, MKL's faster orientation for a thin output;
* the input drive, the scaled weights and the biases prepared by the free phase are
  reused by the nudged phase when the weights did not change in between;
* every increment that telescopes is applied in low rank: the biases and the input
  matrix always (their increments are differences of states), the hidden-pair
  weights under (C-)EP, W(k) = W(0) + c (u_i(k)^T u_{i+1}(k) - u_i(0)^T u_{i+1}(0))
  = W(0) + c [Δ_i; u_i(0)]^T [u_{i+1}(k); Δ_{i+1}] with Δ = u(k) - u(0). Their effect on
  the dynamics is one [B, 2B] @ [2B, n] product per layer and step, made of differences
  (no cancellation between large terms); the weights are written once, at the end;
* VF's hidden pairs do not telescope: they are updated densely, one addmm per matrix.

Leading trial dimensions are flattened into one batch dimension P (bmm / baddbmm);
per-trial scalars (beta, learning rates) are tensors of shape [...].
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
def _addmm(bias: Tensor, a: Tensor, b: Tensor, out: Tensor, alpha: float = 1.0) -> Tensor:
    """out = bias + alpha a @ b, for plain [B, n] or trial-batched [P, B, n] operands."""
    if a.dim() == 2:
        return torch.addmm(bias, a, b, alpha=alpha, out=out)
    return torch.baddbmm(bias, a, b, alpha=alpha, out=out)


def _acc(acc: Tensor, a: Tensor, b: Tensor, scale: Scalar = 1.0) -> None:
    """acc += scale * a @ b in place; a per-trial `scale` ([P, 1, 1]) is folded into `a`."""
    if isinstance(scale, Tensor):
        a, scale = a * scale, 1.0
    if a.dim() == 2:
        acc.addmm_(a, b, alpha=scale)
    else:
        acc.baddbmm_(a, b, alpha=scale)


def _mm(a: Tensor, b: Tensor, out: Tensor | None = None) -> Tensor:
    return torch.mm(a, b, out=out) if a.dim() == 2 else torch.bmm(a, b, out=out)


Op = Callable[[], object]


def _column_major(t: Tensor) -> bool:
    return t.stride(-2) == 1 and t.stride(-1) != 1


def _new_input_buffer(like: Tensor, lead: list[int], rows: int, n: int, j: int) -> Tensor:
    """[*lead, rows, n] for layer j's input. The output layer's (n = 10) is stored transposed: products
    into it then run as W @ u^T ([10, 512] @ [512, rows]), which MKL does 1.5-3x faster than u @ W^T."""
    if j > 0:
        return like.new_empty(*lead, rows, n)
    return like.new_empty(*lead, n, rows).mT


def _addmm_op(bias: Tensor, a: Tensor, b: Tensor, out: Tensor) -> Op:
    """out = bias + a @ b, bound once: a step is a list of such ops, replayed without Python dispatch logic."""
    if _column_major(out):  # out^T = bias^T + b^T a^T
        bias, a, b, out = bias.mT, b.mT, a.mT, out.mT
    return partial(torch.addmm if a.dim() == 2 else torch.baddbmm, bias, a, b, out=out)


def _acc_op(acc: Tensor, a: Tensor, b: Tensor, scale: Scalar = 1.0) -> Op:
    """acc += scale * a @ b, bound once."""
    if _column_major(acc):  # acc^T += scale * b^T a^T
        acc, a, b = acc.mT, b.mT, a.mT
    if isinstance(scale, Tensor):
        return partial(_acc, acc, a, b, scale)
    return partial(acc.addmm_ if a.dim() == 2 else acc.baddbmm_, a, b, alpha=scale)


def _axpy_op(y: Tensor, x: Tensor, alpha: Scalar) -> Op:
    """y += alpha x, bound once."""
    return partial(y.addcmul_, x, alpha) if isinstance(alpha, Tensor) else partial(y.add_, x, alpha=alpha)


def _axpy_(y: Tensor, x: Tensor, alpha: Scalar) -> None:
    """y += alpha x, alpha a float or a per-trial tensor."""
    if isinstance(alpha, Tensor):
        y.addcmul_(x, alpha)
    else:
        y.add_(x, alpha=alpha)


# ---------------------------------------------------------------- the net
class _Net:
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
        self.D = _addmm(self.bs[-1], self.x_syn, self.W[-1].mT, drive, alpha=a)  # scale * (x W^T + b) + shift
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

    net: _Net | None = None


# ------------------------------------------------------------ state buffers
@dataclass
class _Slot:
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
    def new(cls, net: _Net, B: int, like: Tensor) -> _Slot:
        cfg, P = net.cfg, ([net.P] if net.lead else [])
        z, u, delta, origin, s, syn, h = [], [], [], [], [], [], []
        for n in cfg.size_tab[:-1]:
            zj = like.new_empty(*P, 3 * B, n)
            uj = zj[..., :B, :]
            z.append(zj)
            u.append(uj)
            delta.append(zj[..., B:2 * B, :])
            origin.append(zj[..., 2 * B:, :])
            h.append(_new_input_buffer(like, P, B, n, len(h)))
            s.append(uj if net.discrete or cfg.rule == "vf" else like.new_empty(*P, B, n))
            syn.append(uj if net.discrete or cfg.rule == "ep" else like.new_empty(*P, B, n))
        return cls(z, u, delta, origin, s, syn, h)

    def load(self, net: _Net, states: States) -> None:
        """Set the states (and what derives from them) to `states`."""
        for j, t in enumerate(states):
            self.s[j].copy_(net.flat(t, 2))
            self._derive(net, j)

    def _derive(self, net: _Net, j: int) -> None:
        """In the continuous setting, rho(s) into whichever of u / syn is not s itself."""
        if net.discrete:
            return
        if self.syn[j] is not self.s[j]:
            self.syn[j].copy_(rho(net.cfg, self.s[j]))

    def zero(self, net: _Net) -> None:
        for j, t in enumerate(self.s):
            t.zero_()
            self._derive(net, j)

    def keep_as_origin(self, origin: _Slot) -> None:
        """Store origin's u(now) as u(0)."""
        for mine, u in zip(self.origin, origin.u):
            mine.copy_(u)

    def update_delta(self) -> None:
        for u, d, o in zip(self.u, self.delta, self.origin):
            torch.sub(u, o, out=d)

    def states(self, net: _Net) -> States:
        return [net.unflat(t.clone()) for t in self.s]


# -------------------------------------------------------------------- step
@dataclass
class _Nudge:
    neg_beta: Scalar  # -beta, float or [P, 1, 1]
    beta_y: Tensor  # beta * y


Correction = list["tuple[Tensor, Tensor] | None"]


def _step_ops(net: _Net, cur: _Slot, new: _Slot, nudge: _Nudge | None = None,
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
            ops.append(_addmm_op(net.bs[j], cur.syn[j + 1], net.Ws[j].mT, h))
            if j > 0:
                ops.append(_acc_op(h, cur.syn[j - 1], net.F[j - 1]))
        else:
            ops.append(_addmm_op(drive, cur.syn[j - 1], net.F[j - 1], h) if j > 0 else partial(h.copy_, drive))
        if corr is not None and corr[j] is not None:
            ops.append(_acc_op(h, *corr[j]))
        if net.discrete:
            ops.append(partial(net.core, h, out=new.u[j]))
            if j == 0 and nudge is not None:
                ops += [_axpy_op(new.u[0], cur.s[0], nudge.neg_beta), partial(new.u[0].add_, nudge.beta_y)]
        else:
            ops.append(partial(_continuous_update, net, cur, new, j, nudge))
    return ops


def _continuous_update(net: _Net, cur: _Slot, new: _Slot, j: int, nudge: _Nudge | None) -> None:
    """ds = -s + (rho'(s) for ep hidden layers) * h (+ nudge), Euler step, clamp (spec 2.3-2.4)."""
    cfg, h = net.cfg, new.h[j]
    if cfg.rule == "ep" and j > 0:
        h.mul_(rho_prime(cfg, cur.s[j]))
    ds = h.sub_(cur.s[j])
    if j == 0 and nudge is not None:
        _axpy_(ds, cur.s[0], nudge.neg_beta)
        ds.add_(nudge.beta_y)
    torch.add(cur.s[j], ds, alpha=cfg.dt, out=new.s[j])
    if not cfg.no_clamp:
        new.s[j].clamp_(0, 1)
    new._derive(net, j)


def _replay(plans: list[list[Op]], steps: int) -> None:
    for k in range(steps):
        for op in plans[k % 2]:
            op()


# ------------------------------------------------------------------ phases
def free_phase(cfg: TrialConfig, p: Params, x: Tensor, steps: int, s: States | None = None) -> FreeStates:
    """`steps` free steps (beta = 0, frozen weights) from zero or from `s`; see cep.model.relax."""
    with torch.no_grad():
        net = _Net(cfg, p, x)
        B = x.shape[-2]
        if net.discrete and steps > 0:
            states = _two_chains(net, B, steps, s)
        else:
            slots = [_Slot.new(net, B, net.D), _Slot.new(net, B, net.D)]
            if s is None:
                slots[0].zero(net)
            else:
                slots[0].load(net, s)
            _replay([_step_ops(net, slots[0], slots[1]), _step_ops(net, slots[1], slots[0])], steps)
            states = slots[steps % 2].states(net)
        out = FreeStates(states)
        out.net = net
        return out


def _two_chains(net: _Net, B: int, steps: int, s: States | None) -> States:
    """The discrete free phase as two independent chains run side by side: half the operations, twice the rows.

    Without a nudge, layer j at t+1 depends only on layers j-1 and j+1 at t, i.e. on the other parity,
    so the synchronous dynamics splits into chain A (even layers at even t, odd layers at odd t) and
    chain B (the rest). Each step of a chain updates one parity only. With chain B one step ahead,
    both update the same parity at once: one product per layer pair and one activation on [2B] rows
    (rows :B chain A, B: chain B), written in place, as the parity read is not the parity written.
    """
    L = net.cfg.n_layers
    lead = [net.P] if net.lead else []
    u = [net.D.new_zeros(*lead, 2 * B, n) for n in net.cfg.size_tab[:-1]]
    h = [_new_input_buffer(net.D, lead, 2 * B, t.shape[-1], j) for j, t in enumerate(u)]
    if s is not None:  # A starts from the even layers of s, B from the odd ones
        for j, t in enumerate(s):
            u[j][..., (j % 2) * B:(j % 2 + 1) * B, :].copy_(net.flat(t, 2))

    def rows(r: slice) -> _Slot:
        views = [t[..., r, :] for t in u]
        return _Slot(z=[], u=views, delta=[], origin=[], s=views, syn=views, h=[t[..., r, :] for t in h])

    def half(slot: _Slot, parity: int, drive: Tensor) -> list[Op]:
        return _step_ops(net, slot, slot, layers=range(parity, L, 2), drive=drive)

    chain_a, chain_b, both = rows(slice(0, B)), rows(slice(B, 2 * B)), rows(slice(None))
    drive2 = torch.cat([net.D, net.D], -2)
    _replay([half(chain_b, 0, net.D)], 1)  # B: t = 0 -> 1 (the even layers)
    _replay([half(both, 1, drive2), half(both, 0, drive2)], steps - 1)  # A: t -> t+1, B: t+1 -> t+2
    _replay([half(chain_a, steps % 2, net.D)], 1)  # A: T-1 -> T
    return [net.unflat((t[..., :B, :] if j % 2 == steps % 2 else t[..., B:, :]).clone()) for j, t in enumerate(u)]


def nudged_learn(cfg: TrialConfig, p: Params, s_free: States, x: Tensor, y: Tensor, beta: Scalar,
                 lrs: Sequence[Scalar], dynamics_lrs: Sequence[Scalar] | None) -> States:
    """Kmax nudged steps from `s_free`, then the update, in place on `p`; returns the nudged end state.

    `dynamics_lrs`: the rates at which the weights move during the phase (continual rules;
    debug-cep: tiny ones), None for frozen weights. `lrs`: the rates of the update that stays:
    for ep the telescoped sum of the per-step increments, ΔW(s(K), s(0)) (EP, C-EP and debug-cep
    alike); for vf the per-step increments, applied as they come (C-VF) or summed (VF).
    """
    with torch.no_grad():
        net = getattr(s_free, "net", None)
        if net is None or not net.valid_for(cfg, p, x):
            net = _Net(cfg, p, x)
        if net.lead and any(t.shape[:-2] != net.lead for t in p.W):
            raise ValueError("learning needs weights with the trial dimensions of the states, "
                             f"{tuple(net.lead)}; got {[tuple(t.shape) for t in p.W]}")
        return _Nudged(net, s_free, y, beta, lrs, dynamics_lrs).run()


class _Nudged:
    """The nudged phase of one minibatch and its update (see nudged_learn)."""

    def __init__(self, net: _Net, s_free: States, y: Tensor, beta: Scalar, lrs: Sequence[Scalar],
                 dynamics_lrs: Sequence[Scalar] | None):
        cfg, self.net = net.cfg, net
        self.L = cfg.n_layers
        B = net.D.shape[-2]
        beta_t = net.trial(beta, 2)
        self.nudge = _Nudge(-beta_t, net.flat(y, 2) * beta_t)
        self.slots = [_Slot.new(net, B, net.D), _Slot.new(net, B, net.D)]
        self.slots[0].load(net, s_free)
        for slot in self.slots:
            slot.keep_as_origin(self.slots[0])
        # c_j = lr_j / (beta B): of the update that stays (c) and of the weights' motion during the phase (cd)
        self.c = [net.trial(lr / (beta * B), 2) for lr in lrs]
        self.ep = cfg.rule == "ep"
        self.bias_in = not (cfg.rule == "vf" and net.discrete)  # discrete vf never updates b_{L-1} (spec 4.3)
        self.moving = dynamics_lrs is not None
        self.acc: list[tuple[Tensor, Tensor]] = []
        if self.moving:
            self.cd = [net.trial(lr / (beta * B), 2) for lr in dynamics_lrs]
            self.coef = [net.scale * c for c in self.cd]
            # what Δ_j moves layer j's input by, through its bias (J: every row gets the batch sum) and,
            # for the last layer, through the input matrix (the Gram matrix x x^T; spec 8)
            ones = net.D.new_ones(B, B)
            x = net.x_syn
            base = [ones] * (self.L - 1) + [_mm(x, x.mT) + (1.0 if self.bias_in else 0.0)]
            self.K = [b * c for b, c in zip(base, self.coef)]
            if self.ep:  # [K_j, 0] multiplies [Δ_j; u_j(0)]; the Grams of the hidden pairs are added per step
                self.K = [torch.cat([k, torch.zeros_like(k)], -1) for k in self.K]
        elif not self.ep:  # VF: frozen weights, summed per-step increments of the hidden pairs
            self.acc = [(torch.zeros_like(net.W[i]), torch.zeros_like(net.V[i])) for i in range(self.L - 1)]

    def correction_ops(self, cur: _Slot) -> tuple[list[Op], Correction]:
        """Ops refreshing, from `cur`'s states, each layer's input change due to the weights' motion since
        u(0), and that change as factors (M_j, operand) for _step_ops.

        ep, pair i, into layer i: c u_{i+1}(k) (u_{i+1}(k)^T Δ_i + Δ_{i+1}^T u_i(0))
        = c (u_{i+1}(k) [u_{i+1}(k); Δ_{i+1}]^T) [Δ_i; u_i(0)], and symmetrically into layer i+1.
        """
        ops: list[Op] = [partial(torch.sub, u, o, out=d) for u, d, o in zip(cur.u, cur.delta, cur.origin)]
        B, L = cur.u[0].shape[-2], self.L
        if not self.ep:
            return ops, [(k, d) for k, d in zip(self.K, cur.delta)]
        gram = [torch.empty_like(k) for k in self.K]  # u_j(k) [u_j(k); Δ_j]^T, [.., B, 2B]
        ops += [partial(_mm, u, z[..., :2 * B, :].mT, g) for u, z, g in zip(cur.u, cur.z, gram)]
        corr: Correction = []
        for j in range(L):
            terms = ([(gram[j + 1], self.coef[j])] if j < L - 1 else []) + \
                    ([(gram[j - 1], self.coef[j - 1])] if j > 0 else [])
            m = self.K[j] if not terms else torch.empty_like(self.K[j])
            for t, (g, c) in enumerate(terms):
                first = self.K[j] if t == 0 else m
                ops.append(partial(torch.addcmul, first, g, c, out=m) if isinstance(c, Tensor)
                           else partial(torch.add, first, g, alpha=c, out=m))
            corr.append((m, cur.z[j][..., B:, :]))
        return ops, corr

    def dense_ops(self, cur: _Slot, new: _Slot) -> list[Op]:
        """VF's hidden pairs (spec 4.3-4.4): W_i += c (s_i' - s_i)^T syn_{i+1},
        V_i += c (s_{i+1}' - s_{i+1})^T syn_i, into the live scaled weights (C-VF) or a sum (VF)."""
        net = self.net
        d = [torch.empty_like(t) for t in new.s]
        ops: list[Op] = [partial(torch.sub, a, b, out=o) for a, b, o in zip(new.s, cur.s, d)]
        for i in range(self.L - 1):
            if self.moving:
                targets, scale = (net.Ws[i], net.Vs[i]), self.cd[i] * net.scale
            else:
                targets, scale = self.acc[i], self.c[i]
            ops += [_acc_op(targets[0], d[i].mT, cur.syn[i + 1], scale),
                    _acc_op(targets[1], d[i + 1].mT, cur.syn[i], scale)]
        return ops

    def plan(self, cur: _Slot, new: _Slot) -> list[Op]:
        """One nudged step from `cur` into `new`, with the weights' motion, as bound ops."""
        ops: list[Op] = []
        corr = None
        if self.moving:
            pre, corr = self.correction_ops(cur)
            ops += pre
        ops += _step_ops(self.net, cur, new, self.nudge, corr)
        if not self.ep:
            ops += self.dense_ops(cur, new)
        return ops

    def run(self) -> States:
        net = self.net
        a, b = self.slots
        _replay([self.plan(a, b), self.plan(b, a)], net.cfg.Kmax)
        end = self.slots[net.cfg.Kmax % 2]
        self.write(end)
        return end.states(net)

    def write(self, end: _Slot) -> None:
        """The update that stays (see nudged_learn); everything telescoped is written here, once."""
        net, L = self.net, self.L
        B = end.u[0].shape[-2]
        end.update_delta()
        for j in range(L):
            if j < L - 1 or self.bias_in:
                _axpy_(net.b[j], end.delta[j].sum(-2), self._bias_scale(self.c[j]))
        _acc(net.W[-1], end.delta[-1].mT, net.x_syn, self.c[-1])
        for i in range(L - 1):
            if self.ep:  # c (u_i(K)^T u_{i+1}(K) - u_i(0)^T u_{i+1}(0)) = c [Δ_i; u_i(0)]^T [u_{i+1}(K); Δ_{i+1}]
                _acc(net.W[i], end.z[i][..., B:, :].mT, end.z[i + 1][..., :2 * B, :], self.c[i])
            elif self.moving and net.scale != 1:
                torch.div(net.Ws[i], net.scale, out=net.W[i])
                torch.div(net.Vs[i], net.scale, out=net.V[i])
            elif not self.moving:
                net.W[i].add_(self.acc[i][0])
                net.V[i].add_(self.acc[i][1])

    @staticmethod
    def _bias_scale(c: Scalar) -> Scalar:
        return c.reshape(-1, 1) if isinstance(c, Tensor) and c.dim() > 0 else c
