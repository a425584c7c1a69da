"""The reference network of spec sections 1-4, literally: parameters, activations, one step, increments, nudged phase.

cep.fused_step trains with the same dynamics; tests, the gdu analysis and benchmarks check it against these.

Rule (ep|vf) and setting (discrete|continuous) are parameters, not subclasses.
Every function broadcasts over an optional leading trial dimension: states are
`[..., B, n]`, weights `[..., n, m]`, biases `[..., n]`, and per-trial scalars
(beta, learning rates) may be floats or tensors of shape `[...]`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from cep.config import TrialConfig

Scalar = float | Tensor
States = list[Tensor]


# ---------------------------------------------------------------- activations
def _sigm(u: Tensor) -> Tensor:
    return torch.sigmoid(4 * (u - 0.5))


def _sigm_prime(u: Tensor) -> Tensor:
    r = _sigm(u)
    return 4 * r * (1 - r)


def _hardsigm_prime(u: Tensor) -> Tensor:
    return ((u >= 0) & (u <= 1)).to(u.dtype)


def _tanh_prime(u: Tensor) -> Tensor:
    return 1 - torch.tanh(u) ** 2


ACTIVATION: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]] = {
    "sigm": (_sigm, _sigm_prime),
    "hardsigm": (lambda u: u.clamp(0, 1), _hardsigm_prime),
    "tanh": (torch.tanh, _tanh_prime),
}


def rho(cfg: TrialConfig, u: Tensor) -> Tensor:
    return ACTIVATION[cfg.activation][0](u)


def rho_prime(cfg: TrialConfig, u: Tensor) -> Tensor:
    return ACTIVATION[cfg.activation][1](u)


def synaptic(cfg: TrialConfig, s: Tensor) -> Tensor:
    """What a neuron sends through a synapse: its state (discrete) or rho(state) (continuous)."""
    return s if cfg.setting == "discrete" else rho(cfg, s)


def _per_trial(value: Scalar, trailing: int) -> Scalar:
    """A per-trial scalar shaped to broadcast against `trailing` more dimensions."""
    if isinstance(value, Tensor) and value.dim() > 0:
        return value.reshape(value.shape + (1,) * trailing)
    return value


# ----------------------------------------------------------------- parameters
@dataclass
class Params:
    """Weights W[i] `[..., n_i, n_{i+1}]`, biases b[i] `[..., n_i]`, feedback V[i] `[..., n_{i+1}, n_i]` (vf only)."""

    W: list[Tensor]
    b: list[Tensor]
    V: list[Tensor]

    def tensors(self) -> list[Tensor]:
        return [*self.W, *self.b, *self.V]

    def clone(self) -> Params:
        return Params([w.clone() for w in self.W], [b.clone() for b in self.b], [v.clone() for v in self.V])

    def copy_(self, other: Params) -> None:
        for mine, theirs in zip(self.tensors(), other.tensors(), strict=True):
            mine.copy_(theirs)

    def all_finite(self) -> bool:
        return all(bool(torch.isfinite(t).all()) for t in self.tensors())

    def to_dict(self) -> dict[str, list[Tensor]]:
        return {"W": [t.detach().cpu() for t in self.W], "b": [t.detach().cpu() for t in self.b],
                "V": [t.detach().cpu() for t in self.V]}

    @classmethod
    def from_dict(cls, d: dict[str, list[Tensor]], device: torch.device | str = "cpu") -> Params:
        return cls(*([t.to(device) for t in d[k]] for k in ("W", "b", "V")))

    @classmethod
    def stack(cls, members: Sequence[Params]) -> Params:
        """The parameters of several trials with a leading trial dimension (a pack)."""
        return cls(*([torch.stack(ts) for ts in zip(*(getattr(m, k) for m in members), strict=True)]
                     for k in ("W", "b", "V")))

    def member(self, i: int) -> Params:
        """Trial `i` of a pack, as views."""
        return Params([w[i] for w in self.W], [b[i] for b in self.b], [v[i] for v in self.V])


def init_params(cfg: TrialConfig, generator: torch.Generator, device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.float32) -> Params:
    """nn.Linear's default initialisation (uniform within ±1/sqrt(fan_in)); for vf, V_i = W_i^T with
    each entry's sign flipped with probability (1 - cos(angle))/2 (spec section 5).

    Drawn on the CPU from `generator`, so the same seed gives the same net on every device.
    """
    sizes = cfg.size_tab
    W, b, V = [], [], []
    for i in range(cfg.n_layers):
        bound = 1 / math.sqrt(sizes[i + 1])
        W.append((torch.rand(sizes[i], sizes[i + 1], generator=generator, dtype=torch.float64) * 2 - 1) * bound)
        b.append((torch.rand(sizes[i], generator=generator, dtype=torch.float64) * 2 - 1) * bound)
    if cfg.rule == "vf":
        flip = 0.5 * (1 - math.cos(math.radians(cfg.angle)))
        for i in range(cfg.n_layers - 1):
            mask = torch.rand(sizes[i + 1], sizes[i], generator=generator, dtype=torch.float64) < flip
            V.append(torch.where(mask, -W[i].T, W[i].T))
    return Params(*([t.to(device=device, dtype=dtype) for t in group] for group in (W, b, V)))


def weight_angles(p: Params) -> list[float]:
    """Measured angle (degrees) between each feedback matrix V_i and W_i^T (vf; empty for ep)."""
    out = []
    for w, v in zip(p.W, p.V):
        cos = (v * w.mT).sum() / (v.norm() * w.norm())
        out.append(math.degrees(math.acos(max(-1.0, min(1.0, float(cos))))))
    return out


# ------------------------------------------------------------------- dynamics
def input_drive(cfg: TrialConfig, p: Params, x: Tensor) -> Tensor:
    """The input's contribution to the last layer, `x W_{L-1}^T` (or `rho(x) W_{L-1}^T`).

    x is constant during both phases, so this is computed once per phase.
    """
    return synaptic(cfg, x) @ p.W[-1].mT


def step(cfg: TrialConfig, p: Params, s: States, drive: Tensor, beta: Scalar = 0.0,
         y: Tensor | None = None) -> tuple[States, States | None]:
    """One synchronous step of the dynamics (spec sections 2-3), nudged when `y` is given.

    Returns the new states and, in the continuous setting, the `ds` of each layer
    (after the clamp zeroing, not multiplied by dt; section 6 records it).
    """
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


# ---------------------------------------------------------------- increments
@dataclass
class Increment:
    """An EP update (spec section 4), already divided by beta*B.

    The input matrix's update is kept factored, dW_{L-1} = d_in^T x_syn, because it
    is 784 wide and only its sum over a phase is ever needed: `dW` holds the
    hidden matrices W_0..W_{L-2}, `d_in` the last layer's post-synaptic difference.
    """

    dW: list[Tensor]
    db: list[Tensor]
    dV: list[Tensor]
    d_in: Tensor
    x_syn: Tensor

    def input_matrix(self) -> Tensor:
        """dW_{L-1}, dense."""
        return self.d_in.mT @ self.x_syn

    def add_(self, other: Increment) -> None:
        """Sum in place (the factored input part sums exactly: x_syn is the same all phase)."""
        for mine, theirs in zip([*self.dW, *self.db, *self.dV, self.d_in],
                                [*other.dW, *other.db, *other.dV, other.d_in], strict=True):
            mine.add_(theirs)


def increment(cfg: TrialConfig, a: States, c: States, x_syn: Tensor, beta: Scalar) -> Increment:
    """ΔW(a, c) between a later state `a` and an earlier one `c` (spec 4.1-4.4).

    `x_syn` is `synaptic(cfg, x)`: x in the discrete setting, rho(x) in the continuous one.
    """
    L = len(a)
    scale = 1 / (_per_trial(beta, 2) * a[0].shape[-2])
    sa = [synaptic(cfg, t) for t in a]
    sc = [synaptic(cfg, t) for t in c]
    # post-synaptic difference: through rho for ep, raw states for vf
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
        db[-1] = torch.zeros_like(db[-1])  # the original never updates b_{L-1} here (spec 4.3, 9)
    return Increment(dW, db, dV, d[-1], x_syn)


def apply_increment(p: Params, inc: Increment, lrs: Sequence[Scalar], input_weight: bool = True) -> None:
    """p += lr * increment, in place; lrs[i] applies to W_i, b_i and V_i.

    `input_weight=False` leaves W_{L-1} alone (the caller applies the summed d_in later).
    """
    for i, lr in enumerate(lrs):
        if i < len(inc.dW):
            p.W[i].add_(_per_trial(lr, 2) * inc.dW[i])
        p.b[i].add_(_per_trial(lr, 1) * inc.db[i])
        if i < len(p.V):
            p.V[i].add_(_per_trial(lr, 2) * inc.dV[i])
    if input_weight:
        apply_input_update(p, inc.d_in, inc.x_syn, lrs[-1])


def apply_input_update(p: Params, d_in: Tensor, x_syn: Tensor, lr: Scalar) -> None:
    """W_{L-1} += lr * d_in^T x_syn."""
    p.W[-1].add_(_per_trial(lr, 2) * (d_in.mT @ x_syn))


def update_drive(drive: Tensor, gram: Tensor, inc: Increment, lr: Scalar) -> Tensor:
    """The input drive after W_{L-1} += lr * d_in^T x_syn, without redoing the 784-wide product.

    x_syn (W + lr d^T x_syn)^T = drive + lr (x_syn x_syn^T) d   (spec section 8).
    """
    return drive + _per_trial(lr, 2) * (gram @ inc.d_in)


# --------------------------------------------------------------- nudged phase
# called after every nudged step k = 1..Kmax with (k, previous states, new states, ds, increment)
StepHook = Callable[[int, States, States, "States | None", Increment], None]

def nudged_phase(cfg: TrialConfig, p: Params, s_free: States, x: Tensor, y: Tensor, beta: Scalar,
                 lrs: Sequence[Scalar] | None = None, accumulate: bool = False,
                 on_step: StepHook | None = None) -> tuple[States, Increment | None]:
    """Run Kmax nudged steps from the free equilibrium.

    With `lrs`, every per-step increment is applied immediately (continual rules).
    The input matrix W_{L-1} acts on the dynamics only through the input drive,
    which follows it exactly through the batch Gram matrix (spec section 8); so
    its per-step updates are summed in factored form and written once, at the
    end, instead of rewriting the 784-wide matrix at every step.
    With `accumulate`, the sum of the per-step increments is returned.
    """
    x_syn = synaptic(cfg, x)
    drive = input_drive(cfg, p, x)
    gram = x_syn @ x_syn.mT if lrs is not None else None
    s, total, d_in_sum = s_free, None, None
    for k in range(1, cfg.Kmax + 1):
        new, ds = step(cfg, p, s, drive, beta, y)
        if lrs is not None or accumulate or on_step is not None:
            inc = increment(cfg, new, s, x_syn, beta)
            if on_step is not None:
                on_step(k, s, new, ds, inc)
            if lrs is not None:
                apply_increment(p, inc, lrs, input_weight=False)
                drive = update_drive(drive, gram, inc, lrs[-1])
                d_in_sum = inc.d_in.clone() if d_in_sum is None else d_in_sum.add_(inc.d_in)
            if accumulate:
                if total is None:
                    total = inc
                else:
                    total.add_(inc)
        s = new
    if d_in_sum is not None:
        apply_input_update(p, d_in_sum, x_syn, lrs[-1])
    return s, total
