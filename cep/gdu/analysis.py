"""The GDU analysis of spec section 6: EP updates versus BPTT gradients, step by step through the second phase.

Autograd lives only here (the trainer never builds a graph). For one minibatch:

* the BPTT side runs the free phase with autograd over its last Kmax steps only
  (the earlier steps cannot matter to a gradient truncated to Kmax steps) and
  takes ONE backward pass. Every step gets its own copy of the parameters, so
  the gradient of each copy is the contribution of that step's use of the
  weights. The gradient truncated to the last K+1 steps, G_W(K), is the sum of
  the contributions of those K+1 steps (the adjoint of a state after the
  truncation point does not depend on where the truncation is), hence the
  per-step gradient of the spec, G_W(t) - G_W(t-1), is the contribution of
  step T-t. The input matrix W_{L-1} only enters through the constant input
  drive x W_{L-1}^T, so its per-step gradient is dL/d(drive)^T x: it is kept as
  these rank-B factors (`Factored`) rather than as Kmax dense 784-wide matrices.
* the EP side runs the nudged phase of `cep.model.nudged_phase` (continual
  weight updates when the rule is continual) on a copy of the weights and
  records, through its per-step hook, the neuron and weight updates.

Sign convention (spec section 6): both sides are gradients, D(t) ≈ ∇BPTT(t).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from cep.config import ConfigError, TrialConfig
from cep.fused_step import relax
from cep.model import Increment, Params, Scalar, States, input_drive, nudged_phase, step, synaptic

NEURON, WEIGHT = "neuron", "weight"


# ------------------------------------------------------------- trajectories
@dataclass
class Factored:
    """A trajectory of matrices M[t] = post[t]^T pre, kept as its factors (the 784-wide input matrix).

    post: `[K, B, n]`; pre: `[B, m]` (the synaptic input, shared by BPTT and EP).
    """

    post: Tensor
    pre: Tensor

    def dense(self) -> Tensor:
        """All Kmax matrices, `[K, n, m]` (large: only for small nets and tests)."""
        return self.post.mT @ self.pre

    def step(self, t: int) -> Tensor:
        return self.post[t].mT @ self.pre

    def total(self) -> Tensor:
        """Σ_t M[t], `[n, m]`."""
        return self.post.sum(0).mT @ self.pre

    def entries(self, rows: Tensor, cols: Tensor) -> Tensor:
        """M[t][rows[u], cols[u]] for every t, `[K, U]`."""
        return (self.post[:, :, rows] * self.pre[:, cols]).sum(1)


Trajectory = Tensor | Factored  # neurons `[K, n]`, weights `[K, n, m]`, biases `[K, n]`


def _inner(a: Trajectory, b: Trajectory) -> float:
    """Euclidean inner product of two whole trajectories (float64)."""
    if isinstance(a, Factored) and isinstance(b, Factored):
        if a.pre is not b.pre and not torch.equal(a.pre, b.pre):
            return _inner(a.dense(), b.dense())
        gram = (a.pre.double() @ a.pre.double().mT)  # [B, B]
        return float(((a.post.double() @ b.post.double().mT) * gram).sum())
    a_d = a.dense() if isinstance(a, Factored) else a
    b_d = b.dense() if isinstance(b, Factored) else b
    return float((a_d.double() * b_d.double()).sum())


def _sub(a: Trajectory, b: Trajectory) -> Trajectory:
    if isinstance(a, Factored) and isinstance(b, Factored) and (a.pre is b.pre or torch.equal(a.pre, b.pre)):
        return Factored(a.post - b.post, a.pre)
    a_d = a.dense() if isinstance(a, Factored) else a
    b_d = b.dense() if isinstance(b, Factored) else b
    return a_d - b_d


def _total(a: Trajectory) -> Tensor:
    return a.total() if isinstance(a, Factored) else a.sum(0)


def agreement(bptt: Trajectory, ep: Trajectory) -> tuple[float, float]:
    """(cosine, relative RMSE ‖EP − BPTT‖ / ‖BPTT‖) between two Kmax-long trajectories, flattened.

    NaN where a norm is zero (nothing to compare).
    """
    nb, ne = _inner(bptt, bptt), _inner(ep, ep)
    cos = _inner(bptt, ep) / math.sqrt(nb * ne) if nb > 0 and ne > 0 else math.nan
    diff = _sub(ep, bptt)
    rel = math.sqrt(_inner(diff, diff) / nb) if nb > 0 else math.nan
    return cos, rel


# ---------------------------------------------------------------- the result
@dataclass
class GDUResult:
    """Both sides of the comparison, by name: neurons `s_i`, weights `W_i`, biases `b_i`, feedback `V_i` (vf).

    `bptt[name][t]` is ∇BPTT(t) and `ep[name][t]` is D(t), t = 0..Kmax-1, summed over the batch
    for neurons. `bptt_last_step[name]` is G_W(0) (the gradient truncated to the last step), which
    the spec's convention ∇W(0) = 0 leaves out of `bptt`: G_W(K) = G_W(0) + Σ_{t=1..K} ∇W(t).
    """

    bptt: dict[str, Trajectory]
    ep: dict[str, Trajectory]
    kinds: dict[str, str]
    bptt_last_step: dict[str, Tensor] = field(default_factory=dict)
    loss: float = math.nan  # L = ½‖s_0(T) − y‖² / B at the free equilibrium
    # max |s(T) − s(T−1)| (divided by dt in the continuous setting: the size of ds). EP reads the
    # nudged phase's changes divided by beta, so a free phase that has not settled (residual/|beta|
    # not small against the error signal) spoils the agreement whatever the theory says.
    free_residual: float = math.nan

    def unsettled(self, beta: float) -> bool:
        """Whether residual/|beta| exceeds 5% of the output error signal max|∇s_0(0)|."""
        signal = float(self.bptt["s_0"][0].abs().max())  # type: ignore[union-attr]
        return self.free_residual / abs(beta) > 0.05 * signal

    def agreement(self) -> list[dict[str, object]]:
        """One row per neuron layer and per parameter tensor: name, kind, cosine, rel_rmse."""
        rows = []
        for name, kind in self.kinds.items():
            cos, rel = agreement(self.bptt[name], self.ep[name])
            rows.append({"name": name, "kind": kind, "cosine": cos, "rel_rmse": rel})
        return rows

    def truncated(self, name: str) -> Tensor:
        """G_W(K) for K = 0..Kmax-1 (dense), the gradient of L truncated to the last K+1 steps."""
        traj = self.bptt[name]
        dense = traj.dense() if isinstance(traj, Factored) else traj
        return self.bptt_last_step[name] + dense.cumsum(0)

    def angle_grad(self) -> float:
        """Angle (degrees) between Σ_t ∇W(t) and Σ_t D(t) over the forward weight matrices W_0..W_{L-1}.

        Only the W_i are included (flattened and concatenated, output-first): not the biases,
        and not vf's feedback matrices V_i (whose EP update does not aim at the loss gradient).
        """
        names = [n for n in self.kinds if n.startswith("W_")]
        g = torch.cat([_total(self.bptt[n]).double().flatten() for n in names])
        d = torch.cat([_total(self.ep[n]).double().flatten() for n in names])
        cos = float(g @ d / (g.norm() * d.norm()))
        return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def param_names(cfg: TrialConfig) -> list[str]:
    """The parameters compared: every W_i and b_i, and V_i for vf; not b_{L-1} in discrete vf,
    which that rule never updates (spec 4.3)."""
    L = cfg.n_layers
    names = [f"W_{i}" for i in range(L)] + [f"b_{i}" for i in range(L)]
    if cfg.rule == "vf":
        names += [f"V_{i}" for i in range(L - 1)]
        if cfg.setting == "discrete":
            names.remove(f"b_{L - 1}")
    return names


def _check(cfg: TrialConfig, x: Tensor) -> None:
    if cfg.T < cfg.Kmax:
        raise ConfigError([("T", f"got {cfg.T} < Kmax {cfg.Kmax}; the gradient analysis backpropagates "
                                 "through the last Kmax free steps, so T must be >= Kmax")])
    if x.dim() != 2:
        raise ValueError(f"x must be [B, n_in], got shape {tuple(x.shape)}")


# ---------------------------------------------------------------- BPTT side
def bptt_steps(cfg: TrialConfig, p: Params, x: Tensor,
               y: Tensor) -> tuple[dict[str, Trajectory], States, float, float]:
    """Per-step BPTT quantities for t = 0..Kmax-1, from one backward pass through the last Kmax free steps.

    Returns ({s_i: ∂L/∂s_i(T−t) summed over the batch, W_i/b_i/V_i: the contribution c_t of the
    step producing s(T−t)}, the free states s(T) (detached), L, GDUResult's free residual).
    Unlike the spec's ∇W, c_0 is kept here; ∇W(t) = c_t for t >= 1.
    """
    _check(cfg, x)
    K, L, B = cfg.Kmax, cfg.n_layers, x.shape[-2]
    with torch.no_grad():
        s = relax(cfg, p, x, cfg.T - K)
        x_syn = synaptic(cfg, x)
        drive = input_drive(cfg, p, x)
    with torch.enable_grad():
        s = s_start = [t.detach() for t in s]
        produced: list[States] = []
        copies: list[tuple[Params, Tensor]] = []
        for _ in range(K):
            q = Params([w.detach().clone().requires_grad_() for w in p.W[:-1]] + [p.W[-1].detach()],
                       [b.detach().clone().requires_grad_() for b in p.b],
                       [v.detach().clone().requires_grad_() for v in p.V])
            d = drive.detach().clone().requires_grad_()  # W_{L-1} enters only through the drive
            s, _ = step(cfg, q, s, d)
            produced.append(s)
            copies.append((q, d))
        loss = 0.5 * ((s[0] - y) ** 2).sum() / B
        state_inputs = [t for st in produced for t in st]
        param_inputs = [t for q, d in copies for t in (*q.W[:-1], *q.b, *q.V, d)]
        grads = torch.autograd.grad(loss, state_inputs + param_inputs, allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g.detach()
             for t, g in zip(state_inputs + param_inputs, grads, strict=True)]
    # step j (0-based within the last K) produces s(T-K+1+j) = s(T-t): t = K-1-j, so reverse
    gs, gp = grads[:len(state_inputs)], grads[len(state_inputs):]
    out: dict[str, Trajectory] = {}
    for i in range(L):
        out[f"s_{i}"] = torch.stack([gs[j * L + i].sum(-2) for j in reversed(range(K))])
    per = len(param_inputs) // K
    by_step = [gp[j * per:(j + 1) * per] for j in reversed(range(K))]
    nV = len(p.V)
    for i in range(L - 1):
        out[f"W_{i}"] = torch.stack([g[i] for g in by_step])
    for i in range(L):
        out[f"b_{i}"] = torch.stack([g[L - 1 + i] for g in by_step])
    for i in range(nV):
        out[f"V_{i}"] = torch.stack([g[2 * L - 1 + i] for g in by_step])
    out[f"W_{L - 1}"] = Factored(torch.stack([g[-1] for g in by_step]), x_syn)
    before = produced[-2] if K > 1 else s_start
    residual = max(float((a.detach() - b.detach()).abs().max()) for a, b in zip(s, before, strict=True))
    if cfg.setting == "continuous":
        residual /= cfg.dt
    return out, [t.detach() for t in s], float(loss.detach()), residual


# ------------------------------------------------------------------ EP side
def ep_steps(cfg: TrialConfig, p: Params, s_free: States, x: Tensor, y: Tensor,
             beta: Scalar | None = None) -> dict[str, Trajectory]:
    """EP neuron and weight updates D(t), t = 0..Kmax-1, over the nudged phase from `s_free` (spec section 6).

    Runs on a copy of `p`: with cfg.continual the copy moves after every step with cfg.lr_tab,
    as in training. Neurons: −Σ_batch(s^(t+1) − s^(t))/(βB) (discrete) or −Σ_batch ds/(βB)
    (continuous), zero for t < i. Weights: −ΔW(s^(t+1), s^(t)), and D_W(0) = 0.
    """
    beta = cfg.beta if beta is None else beta
    L, B = cfg.n_layers, x.shape[-2]
    names = param_names(cfg)
    neurons: list[list[Tensor]] = [[] for _ in range(L)]
    params: dict[str, list[Tensor]] = {n: [] for n in names}
    x_syn = synaptic(cfg, x)

    def record(k: int, prev: States, new: States, ds: States | None, inc: Increment) -> None:
        t = k - 1
        for i in range(L):
            diff = ds[i] if ds is not None else new[i] - prev[i]
            value = -diff.sum(-2) / (beta * B)
            neurons[i].append(value if t >= i else torch.zeros_like(value))
        tensors = {**{f"W_{i}": inc.dW[i] for i in range(L - 1)}, f"W_{L - 1}": inc.d_in,
                   **{f"b_{i}": inc.db[i] for i in range(L)}, **{f"V_{i}": v for i, v in enumerate(inc.dV)}}
        for n in names:
            params[n].append(torch.zeros_like(tensors[n]) if t == 0 else -tensors[n])

    with torch.no_grad():
        q = Params(*([t.detach().clone() for t in group] for group in (p.W, p.b, p.V)))
        nudged_phase(cfg, q, [t.detach() for t in s_free], x, y, beta,
                     lrs=list(cfg.lr_tab) if cfg.continual else None, on_step=record)
    out: dict[str, Trajectory] = {f"s_{i}": torch.stack(neurons[i]) for i in range(L)}
    for n in names:
        stacked = torch.stack(params[n])
        out[n] = Factored(stacked, x_syn) if n == f"W_{L - 1}" else stacked
    return out


# ------------------------------------------------------------------ the whole
def analyse(cfg: TrialConfig, p: Params, x: Tensor, y: Tensor) -> GDUResult:
    """Both sides for one minibatch `x` `[B, 784]`, one-hot `y` `[B, 10]`; `p` is left untouched."""
    raw, s_free, loss, residual = bptt_steps(cfg, p, x, y)
    ep = ep_steps(cfg, p, s_free, x, y)
    # ep and bptt must share the same `pre` object for W_{L-1}: cheap exact inner products
    L = cfg.n_layers
    ep[f"W_{L - 1}"] = Factored(ep[f"W_{L - 1}"].post, raw[f"W_{L - 1}"].pre)  # type: ignore[union-attr]
    kinds = {f"s_{i}": NEURON for i in range(L)}
    kinds.update({n: WEIGHT for n in param_names(cfg)})
    bptt: dict[str, Trajectory] = {}
    last: dict[str, Tensor] = {}
    for n, kind in kinds.items():
        traj = raw[n]
        if kind == NEURON:
            bptt[n] = traj
            continue
        if isinstance(traj, Factored):
            last[n] = traj.step(0)
            post = traj.post.clone()
            post[0] = 0
            bptt[n] = Factored(post, traj.pre)
        else:
            last[n] = traj[0].clone()
            traj = traj.clone()
            traj[0] = 0
            bptt[n] = traj
    return GDUResult(bptt, ep, kinds, last, loss, residual)


def angle_grad(cfg: TrialConfig, params: Params, x: Tensor, y: Tensor) -> float:
    """Angle (degrees) between the total BPTT gradient and the total EP update (Fig. 5a), see GDUResult.angle_grad.

    Safe to call from inside torch.no_grad() (the trainer does): `params` is not modified.
    """
    return analyse(cfg, params, x, y).angle_grad()


def choose_units(result: GDUResult, n: int, seed: int) -> dict[str, tuple[Tensor, ...]]:
    """`n` randomly chosen units per name (seeded), for the figures: neuron indices `(idx,)` or
    synapse coordinates `(rows, cols)`.

    Drawn among the units whose BPTT trajectory is not identically zero where there are
    enough (an input pixel that is 0 gives a flat zero synapse on both sides: nothing to see).
    """
    g = torch.Generator().manual_seed(seed)
    out: dict[str, tuple[Tensor, ...]] = {}

    def draw(candidates: Tensor, total: int) -> Tensor:
        pool = candidates if len(candidates) >= min(n, total) else torch.arange(total)
        return pool[torch.randperm(len(pool), generator=g)[:n]]

    for name in result.kinds:
        traj = result.bptt[name]
        if isinstance(traj, Factored):
            active = (traj.post != 0).any(0).any(0).cpu()  # rows
            cols_active = (traj.pre != 0).any(0).cpu()
            n_rows, n_cols = active.numel(), cols_active.numel()
            rows_pool = torch.nonzero(active).flatten()
            cols_pool = torch.nonzero(cols_active).flatten()
            if len(rows_pool) == 0:
                rows_pool = torch.arange(n_rows)
            if len(cols_pool) == 0:
                cols_pool = torch.arange(n_cols)
            pick = torch.randperm(len(rows_pool) * len(cols_pool), generator=g)[:n]
            rows, cols = rows_pool[pick // len(cols_pool)], cols_pool[pick % len(cols_pool)]
            out[name] = (rows, cols)
        elif traj.dim() == 2:
            active = torch.nonzero((traj != 0).any(0).cpu()).flatten()
            out[name] = (draw(active, traj.shape[1]),)
        else:
            flat = (traj != 0).any(0).flatten().cpu()
            idx = draw(torch.nonzero(flat).flatten(), flat.numel())
            out[name] = (idx // traj.shape[2], idx % traj.shape[2])
    return out


def unit_curves(traj: Trajectory, units: tuple[Tensor, ...]) -> Tensor:
    """The chosen units' values over t, `[K, U]`."""
    if isinstance(traj, Factored):
        rows, cols = units
        return traj.entries(rows.to(traj.post.device), cols.to(traj.post.device))
    if len(units) == 1:
        return traj[:, units[0].to(traj.device)]
    return traj[:, units[0].to(traj.device), units[1].to(traj.device)]
