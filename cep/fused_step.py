"""The fused training step that cep.train runs: relax (free phase) and learn (nudged phase + update), spec 2-5, 8.

Same results as the reference `cep.model.step` / `cep.model.nudged_phase` (to floating-point summation order), but
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

from collections.abc import Sequence
from functools import partial

import torch
from torch import Tensor

from cep.config import TrialConfig
from cep.fused_ops import (
    Correction,
    FreeStates,
    Net,
    Nudge,
    Op,
    Slot,
    add_product,
    add_product_op,
    axpy_,
    mm,
    new_input_buffer,
    run_ops,
    step_ops,
)
from cep.model import Params, Scalar, States

DEBUG_CEP_SCALE = 1e-5  # Appendix F.2: the tiny learning rates of the debugging procedure


# ------------------------------------------------------------------ phases
def relax(cfg: TrialConfig, p: Params, x: Tensor, steps: int, s: States | None = None) -> FreeStates:
    """Free phase: `steps` steps from zero (or from `s`) with beta = 0 and frozen weights.

    The same dynamics as iterating `cep.model.step`; the result carries what it prepared
    (input drive, scaled weights) for a nudged phase on the same weights.
    """
    with torch.no_grad():
        net = Net(cfg, p, x)
        B = x.shape[-2]
        if net.discrete and steps > 0:
            states = _two_chains(net, B, steps, s)
        else:
            slots = [Slot.new(net, B, net.D), Slot.new(net, B, net.D)]
            if s is None:
                slots[0].zero(net)
            else:
                slots[0].load(net, s)
            run_ops([step_ops(net, slots[0], slots[1]), step_ops(net, slots[1], slots[0])], steps)
            states = slots[steps % 2].states(net)
        out = FreeStates(states)
        out.net = net
        return out


def _two_chains(net: Net, B: int, steps: int, s: States | None) -> States:
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
    h = [new_input_buffer(net.D, lead, 2 * B, t.shape[-1], j) for j, t in enumerate(u)]
    if s is not None:  # A starts from the even layers of s, B from the odd ones
        for j, t in enumerate(s):
            u[j][..., (j % 2) * B:(j % 2 + 1) * B, :].copy_(net.flat(t, 2))

    def rows(r: slice) -> Slot:
        views = [t[..., r, :] for t in u]
        return Slot(z=[], u=views, delta=[], origin=[], s=views, syn=views, h=[t[..., r, :] for t in h])

    def half(slot: Slot, parity: int, drive: Tensor) -> list[Op]:
        return step_ops(net, slot, slot, layers=range(parity, L, 2), drive=drive)

    chain_a, chain_b, both = rows(slice(0, B)), rows(slice(B, 2 * B)), rows(slice(None))
    drive2 = torch.cat([net.D, net.D], -2)
    run_ops([half(chain_b, 0, net.D)], 1)  # B: t = 0 -> 1 (the even layers)
    run_ops([half(both, 1, drive2), half(both, 0, drive2)], steps - 1)  # A: t -> t+1, B: t+1 -> t+2
    run_ops([half(chain_a, steps % 2, net.D)], 1)  # A: T-1 -> T
    return [net.unflat((t[..., :B, :] if j % 2 == steps % 2 else t[..., B:, :]).clone()) for j, t in enumerate(u)]


def learn(cfg: TrialConfig, p: Params, s_free: States, x: Tensor, y: Tensor, beta: Scalar,
          lrs: Sequence[Scalar]) -> States:
    """Kmax nudged steps from `s_free`, then the weight update, in place on `p`; returns the nudged end state.

    The weights move during the phase under the continual rules (C-EP, C-VF) and, at DEBUG_CEP_SCALE
    times the rates, under debug-cep (spec 5), whose tiny updates are never written. The update that
    stays: for ep the telescoped sum of the per-step increments, ΔW(s(K), s(0)) (EP, C-EP and debug-cep
    alike); for vf the per-step increments, applied as they come (C-VF) or summed (VF).
    """
    if cfg.debug_cep:
        dynamics_lrs = [lr * DEBUG_CEP_SCALE for lr in lrs]
    else:
        dynamics_lrs = list(lrs) if cfg.continual else None
    with torch.no_grad():
        net = getattr(s_free, "net", None)
        if net is None or not net.valid_for(cfg, p, x):
            net = Net(cfg, p, x)
        if net.lead and any(t.shape[:-2] != net.lead for t in p.W):
            raise ValueError("learning needs weights with the trial dimensions of the states, "
                             f"{tuple(net.lead)}; got {[tuple(t.shape) for t in p.W]}")
        return _Nudged(net, s_free, y, beta, lrs, dynamics_lrs).run()


class _Nudged:
    """The nudged phase of one minibatch and its update (see learn)."""

    def __init__(self, net: Net, s_free: States, y: Tensor, beta: Scalar, lrs: Sequence[Scalar],
                 dynamics_lrs: Sequence[Scalar] | None):
        cfg, self.net = net.cfg, net
        self.L = cfg.n_layers
        B = net.D.shape[-2]
        beta_t = net.trial(beta, 2)
        self.nudge = Nudge(-beta_t, net.flat(y, 2) * beta_t)
        self.slots = [Slot.new(net, B, net.D), Slot.new(net, B, net.D)]
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
            base = [ones] * (self.L - 1) + [mm(x, x.mT) + (1.0 if self.bias_in else 0.0)]
            self.K = [b * c for b, c in zip(base, self.coef)]
            if self.ep:  # [K_j, 0] multiplies [Δ_j; u_j(0)]; the Grams of the hidden pairs are added per step
                self.K = [torch.cat([k, torch.zeros_like(k)], -1) for k in self.K]
        elif not self.ep:  # VF: frozen weights, summed per-step increments of the hidden pairs
            self.acc = [(torch.zeros_like(net.W[i]), torch.zeros_like(net.V[i])) for i in range(self.L - 1)]

    def correction_ops(self, cur: Slot) -> tuple[list[Op], Correction]:
        """Ops refreshing, from `cur`'s states, each layer's input change due to the weights' motion since
        u(0), and that change as factors (M_j, operand) for step_ops.

        ep, pair i, into layer i: c u_{i+1}(k) (u_{i+1}(k)^T Δ_i + Δ_{i+1}^T u_i(0))
        = c (u_{i+1}(k) [u_{i+1}(k); Δ_{i+1}]^T) [Δ_i; u_i(0)], and symmetrically into layer i+1.
        """
        ops: list[Op] = [partial(torch.sub, u, o, out=d) for u, d, o in zip(cur.u, cur.delta, cur.origin)]
        B, L = cur.u[0].shape[-2], self.L
        if not self.ep:
            return ops, [(k, d) for k, d in zip(self.K, cur.delta)]
        gram = [torch.empty_like(k) for k in self.K]  # u_j(k) [u_j(k); Δ_j]^T, [.., B, 2B]
        ops += [partial(mm, u, z[..., :2 * B, :].mT, g) for u, z, g in zip(cur.u, cur.z, gram)]
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

    def dense_ops(self, cur: Slot, new: Slot) -> list[Op]:
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
            ops += [add_product_op(targets[0], d[i].mT, cur.syn[i + 1], scale),
                    add_product_op(targets[1], d[i + 1].mT, cur.syn[i], scale)]
        return ops

    def plan(self, cur: Slot, new: Slot) -> list[Op]:
        """One nudged step from `cur` into `new`, with the weights' motion, as bound ops."""
        ops: list[Op] = []
        corr = None
        if self.moving:
            pre, corr = self.correction_ops(cur)
            ops += pre
        ops += step_ops(self.net, cur, new, self.nudge, corr)
        if not self.ep:
            ops += self.dense_ops(cur, new)
        return ops

    def run(self) -> States:
        net = self.net
        a, b = self.slots
        run_ops([self.plan(a, b), self.plan(b, a)], net.cfg.Kmax)
        end = self.slots[net.cfg.Kmax % 2]
        self.write(end)
        return end.states(net)

    def write(self, end: Slot) -> None:
        """The update that stays (see learn); everything telescoped is written here, once."""
        net, L = self.net, self.L
        B = end.u[0].shape[-2]
        end.update_delta()
        for j in range(L):
            if j < L - 1 or self.bias_in:
                axpy_(net.b[j], end.delta[j].sum(-2), self._bias_scale(self.c[j]))
        add_product(net.W[-1], end.delta[-1].mT, net.x_syn, self.c[-1])
        for i in range(L - 1):
            if self.ep:  # c (u_i(K)^T u_{i+1}(K) - u_i(0)^T u_{i+1}(0)) = c [Δ_i; u_i(0)]^T [u_{i+1}(K); Δ_{i+1}]
                add_product(net.W[i], end.z[i][..., B:, :].mT, end.z[i + 1][..., :2 * B, :], self.c[i])
            elif self.moving and net.scale != 1:
                torch.div(net.Ws[i], net.scale, out=net.W[i])
                torch.div(net.Vs[i], net.scale, out=net.V[i])
            elif not self.moving:
                net.W[i].add_(self.acc[i][0])
                net.V[i].add_(self.acc[i][1])

    @staticmethod
    def _bias_scale(c: Scalar) -> Scalar:
        return c.reshape(-1, 1) if isinstance(c, Tensor) and c.dim() > 0 else c
