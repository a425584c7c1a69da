"""The spec's equations (sections 2-4) written out literally, for tests only.

Deliberately naive and independent of cep.model: no cached input drive, no Gram
trick, per-layer formulas with einsum, derivatives from autograd.
"""

from __future__ import annotations

import torch


def act(name: str, u: torch.Tensor) -> torch.Tensor:
    if name == "sigm":
        return 1 / (1 + torch.exp(-4 * (u - 0.5)))
    if name == "hardsigm":
        return torch.clamp(u, 0, 1)
    return torch.tanh(u)


def act_prime(name: str, u: torch.Tensor) -> torch.Tensor:
    if name == "hardsigm":  # the spec's convention at the kinks: 1 on the closed interval
        return ((u >= 0) & (u <= 1)).to(u.dtype)
    with torch.enable_grad():
        v = u.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(act(name, v).sum(), v)
    return g


def mm(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """a W^T for a batch of rows a [B, m] and W [n, m]."""
    return torch.einsum("bm,nm->bn", a, w)


def step(kind: str, W, b, V, s, x, act_name="sigm", beta=0.0, y=None, dt=0.2, clamp=True):
    """kind: 'ep-discrete', 'vf-discrete', 'ep-continuous', 'vf-continuous'. Returns (new states, ds or None)."""
    rule, setting = kind.split("-")
    L = len(s)
    f = (lambda t: t) if setting == "discrete" else (lambda t: act(act_name, t))

    def feedback(i):  # what layer i-1 sends up into layer i
        if rule == "ep":
            return torch.einsum("bn,nm->bm", f(s[i - 1]), W[i - 1])
        return mm(f(s[i - 1]), V[i - 1])

    total = []
    for i in range(L):
        h = (mm(f(s[i + 1]), W[i]) if i < L - 1 else mm(f(x), W[L - 1])) + b[i]
        if i > 0:
            h = h + feedback(i)
        total.append(h)
    if setting == "discrete":
        new = [act(act_name, h) for h in total]
        if y is not None:
            new[0] = new[0] + beta * (y - s[0])
        return new, None
    ds = []
    for i in range(L):
        gain = act_prime(act_name, s[i]) if (rule == "ep" and i > 0) else 1.0
        ds.append(-s[i] + gain * total[i])
    if y is not None:
        ds[0] = ds[0] + beta * (y - s[0])
    new = [s[i] + dt * ds[i] for i in range(L)]
    if clamp:
        new = [torch.clamp(t, 0, 1) for t in new]
        ds = [torch.where((n == 0) | (n == 1), torch.zeros_like(d), d) for n, d in zip(new, ds)]
    return new, ds


def delta(kind: str, a, c, x, beta, act_name="sigm"):
    """Spec 4.1-4.4: (dW, db, dV) between a later state a and an earlier state c."""
    rule, setting = kind.split("-")
    L = len(a)
    B = a[0].shape[0]
    f = (lambda t: t) if setting == "discrete" else (lambda t: act(act_name, t))
    k = 1.0 / (beta * B)
    dW, db, dV = [], [], []
    for i in range(L - 1):
        if rule == "ep":
            dW.append(k * (torch.einsum("bi,bj->ij", f(a[i]), f(a[i + 1]))
                           - torch.einsum("bi,bj->ij", f(c[i]), f(c[i + 1]))))
        else:
            dW.append(k * torch.einsum("bi,bj->ij", a[i] - c[i], f(c[i + 1])))
            dV.append(k * torch.einsum("bj,bi->ji", a[i + 1] - c[i + 1], f(c[i])))
    post = (f(a[L - 1]) - f(c[L - 1])) if rule == "ep" else (a[L - 1] - c[L - 1])
    dW.append(k * torch.einsum("bi,bj->ij", post, f(x)))
    for i in range(L):
        d = (f(a[i]) - f(c[i])) if rule == "ep" else (a[i] - c[i])
        db.append(k * d.sum(0))
    if rule == "vf" and setting == "discrete":
        db[L - 1] = torch.zeros_like(db[L - 1])
    return dW, db, dV


def zeros(sizes, B, like):
    return [torch.zeros(B, n, dtype=like.dtype) for n in sizes[:-1]]


def one_minibatch(kind, W, b, V, x, y, T, Kmax, beta, lrs, continual, act_name="sigm", dt=0.2, clamp=True):
    """Free phase, nudged phase and update of one minibatch, per spec 4.5; returns new (W, b, V) and s_free."""
    W, b, V = [w.clone() for w in W], [t.clone() for t in b], [v.clone() for v in V]
    sizes = [w.shape[0] for w in W] + [x.shape[1]]
    s = zeros(sizes, x.shape[0], x)
    for _ in range(T):
        s, _ = step(kind, W, b, V, s, x, act_name, dt=dt, clamp=clamp)
    s_free = s
    total = None
    for _ in range(Kmax):
        new, _ = step(kind, W, b, V, s, x, act_name, beta, y, dt=dt, clamp=clamp)
        inc = delta(kind, new, s, x, beta, act_name)
        if continual:
            for i, lr in enumerate(lrs):
                W[i] = W[i] + lr * inc[0][i]
                b[i] = b[i] + lr * inc[1][i]
                if i < len(V):
                    V[i] = V[i] + lr * inc[2][i]
        else:
            total = inc if total is None else tuple([t + u for t, u in zip(tt, uu)] for tt, uu in zip(total, inc))
        s = new
    if not continual:
        if kind.startswith("ep"):
            total = delta(kind, s, s_free, x, beta, act_name)
        for i, lr in enumerate(lrs):
            W[i] = W[i] + lr * total[0][i]
            b[i] = b[i] + lr * total[1][i]
            if i < len(V):
                V[i] = V[i] + lr * total[2][i]
    return W, b, V, s_free


def debug_cep_minibatch(W, b, V, x, y, T, Kmax, beta, lrs, scale=1e-5, act_name="sigm"):
    """Spec 5, debug-cep (ep, discrete), literally: continual nudged phase at scale * lr, per-step increments
    summed, the tiny updates undone, the sum applied with the full lr. Returns new (W, b, V)."""
    kind = "ep-discrete"
    s = zeros([w.shape[0] for w in W] + [x.shape[1]], x.shape[0], x)
    for _ in range(T):
        s, _ = step(kind, W, b, V, s, x, act_name)
    Wm, bm = [w.clone() for w in W], [t.clone() for t in b]
    total = None
    for _ in range(Kmax):
        new, _ = step(kind, Wm, bm, V, s, x, act_name, beta, y)
        inc = delta(kind, new, s, x, beta, act_name)
        for i, lr in enumerate(lrs):
            Wm[i] = Wm[i] + scale * lr * inc[0][i]
            bm[i] = bm[i] + scale * lr * inc[1][i]
        total = inc if total is None else tuple([t + u for t, u in zip(tt, uu)] for tt, uu in zip(total, inc))
        s = new
    return ([w + lr * d for w, lr, d in zip(W, lrs, total[0])], [t + lr * d for t, lr, d in zip(b, lrs, total[1])],
            [v.clone() for v in V])
