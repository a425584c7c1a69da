"""The four models and four learning rules against the spec's equations (tests/spec_reference.py)."""

from __future__ import annotations

import itertools
import math

import pytest
import spec_reference as ref
import torch
from trainer import increment_weights, zero_states

from cep.config import TrialConfig
from cep.fused_step import learn
from cep.model import (
    ACTIVATION,
    Params,
    increment,
    init_params,
    input_drive,
    nudged_phase,
    step,
    synaptic,
    update_drive,
    weight_angles,
)

KINDS = ["ep-discrete", "vf-discrete", "ep-continuous", "vf-continuous"]
SIZES = {"1h": (10, 9, 784), "2h": (10, 9, 7, 784)}


def make(kind: str, depth: str, **kw) -> tuple[TrialConfig, Params]:
    rule, setting = kind.split("-")
    sizes = SIZES[depth]
    cfg = TrialConfig(rule=rule, setting=setting, size_tab=sizes, lr_tab=(0.05,) * (len(sizes) - 1),
                      dtype="float64", seed=0, **kw)
    p = init_params(cfg, torch.Generator().manual_seed(1), dtype=torch.float64)
    if rule == "vf":  # make V independent of W, so that a mix-up of W^T and V would show
        p.V = [v + 0.1 * torch.randn(v.shape, generator=torch.Generator().manual_seed(i), dtype=v.dtype)
               for i, v in enumerate(p.V)]
    return cfg, p


def batch(B: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, 784, generator=g, dtype=torch.float64)
    y = torch.nn.functional.one_hot(torch.randint(0, 10, (B,), generator=g), 10).double()
    return x, y


def random_states(cfg: TrialConfig, B: int, seed: int, lo: float = 0.0, hi: float = 1.0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [lo + (hi - lo) * torch.rand(B, n, generator=g, dtype=torch.float64) for n in cfg.size_tab[:-1]]


@pytest.mark.parametrize("name", ["sigm", "hardsigm", "tanh"])
def test_activation_derivatives_match_autograd(name):
    u = torch.linspace(-2.3, 2.7, 101, dtype=torch.float64)
    rho, rho_prime = ACTIVATION[name]
    assert torch.allclose(rho(u), ref.act(name, u))
    assert torch.allclose(rho_prime(u), ref.act_prime(name, u))


STEP_CASES = [(k, d, n, c, a) for k, d, n, c in itertools.product(KINDS, SIZES, [False, True], [True, False])
              for a in (["sigm", "tanh"] if k.endswith("continuous") else ["sigm"])
              if c or k.endswith("continuous")]  # clamping exists in the continuous setting only


@pytest.mark.parametrize("kind,depth,nudged,clamp,activation", STEP_CASES)
def test_one_step_equals_spec(kind, depth, nudged, clamp, activation):
    cfg, p = make(kind, depth, no_clamp=not clamp, dt=0.3, activation=activation, beta=0.7)
    x, y = batch()
    # states partly outside [0, 1], so that clamping has work to do
    s = random_states(cfg, 4, seed=3, lo=-0.3, hi=1.3)
    beta = 0.7 if nudged else 0.0
    got, got_ds = step(cfg, p, s, input_drive(cfg, p, x), beta, y if nudged else None)
    want, want_ds = ref.step(kind, p.W, p.b, p.V, s, x, activation, beta, y if nudged else None, dt=0.3, clamp=clamp)
    for g_, w_ in zip(got, want, strict=True):
        torch.testing.assert_close(g_, w_, rtol=1e-12, atol=1e-12)
    if kind.endswith("continuous"):
        for g_, w_ in zip(got_ds, want_ds, strict=True):
            torch.testing.assert_close(g_, w_, rtol=1e-12, atol=1e-12)
        if clamp:
            assert any(bool(((t == 0) | (t == 1)).any()) for t in got), "the clamp was not exercised"
    else:
        assert got_ds is None


def test_continuous_ep_output_layer_has_no_rho_prime():
    """Kept from the original on purpose (spec 2.3, 9): changing it would change the published model."""
    cfg, p = make("ep-continuous", "1h", no_clamp=True)
    x, _ = batch()
    s = random_states(cfg, 4, seed=5)
    _, ds = step(cfg, p, s, input_drive(cfg, p, x))
    h0 = synaptic(cfg, s[1]) @ p.W[0].T + p.b[0]
    torch.testing.assert_close(ds[0], h0 - s[0])


@pytest.mark.parametrize("kind,depth", list(itertools.product(KINDS, SIZES)))
def test_increments_equal_spec(kind, depth):
    cfg, _ = make(kind, depth)
    x, _ = batch()
    a, c = random_states(cfg, 4, 1), random_states(cfg, 4, 2)
    inc = increment(cfg, a, c, synaptic(cfg, x), -0.3)  # a negative beta divides with its sign
    dW, db, dV = ref.delta(kind, a, c, x, -0.3)
    for got, want in zip(increment_weights(inc) + inc.db + inc.dV, dW + db + dV, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind,depth,continual", list(itertools.product(KINDS, SIZES, [False, True])))
def test_learning_rule_weight_change_equals_spec(kind, depth, continual):
    """EP, C-EP, VF, C-VF: the weights after one minibatch, against the literal spec (no Gram trick)."""
    cfg, p = make(kind, depth, continual=continual, T=12, Kmax=6, beta=0.4, no_clamp=False)
    lrs = [0.3, 0.2, 0.1][: cfg.n_layers]
    x, y = batch()
    W, b, V, s_free = ref.one_minibatch(kind, p.W, p.b, p.V, x, y, 12, 6, 0.4, lrs, continual)
    from cep.fused_step import relax
    got_free = relax(cfg, p, x, cfg.T)
    for g_, w_ in zip(got_free, s_free, strict=True):
        torch.testing.assert_close(g_, w_, rtol=1e-12, atol=1e-12)
    learn(cfg, p, got_free, x, y, 0.4, lrs)
    for g_, w_ in zip(p.tensors(), W + b + V, strict=True):
        torch.testing.assert_close(g_, w_, rtol=1e-10, atol=1e-12)


def test_continual_updates_change_the_nudged_trajectory():
    cfg, p = make("ep-discrete", "1h", continual=True, T=15, Kmax=8, beta=0.5)
    x, y = batch()
    from cep.fused_step import relax
    s_free = relax(cfg, p, x, cfg.T)
    frozen, _ = nudged_phase(cfg, p.clone(), s_free, x, y, 0.5)
    moving, _ = nudged_phase(cfg, p.clone(), s_free, x, y, 0.5, lrs=[0.5, 0.5])
    assert (frozen[0] - moving[0]).abs().max() > 1e-4


def test_input_drive_follows_continual_updates_exactly():
    """Spec section 8: the Gram-matrix update of x W^T equals recomputing it."""
    for kind in KINDS:
        cfg, p = make(kind, "1h")
        x, _ = batch(6)
        xs = synaptic(cfg, x)
        drive = input_drive(cfg, p, x)
        inc = increment(cfg, random_states(cfg, 6, 1), random_states(cfg, 6, 2), xs, 0.2)
        from cep.model import apply_increment
        apply_increment(p, inc, [0.7, 0.9])
        torch.testing.assert_close(update_drive(drive, xs @ xs.T, inc, 0.9), input_drive(cfg, p, x))


def test_vf_with_zero_angle_follows_ep_exactly():
    cfg_ep, p = make("ep-discrete", "2h", Kmax=7, beta=0.3)
    cfg_vf = cfg_ep.replace(rule="vf")
    p_vf = Params([w.clone() for w in p.W], [t.clone() for t in p.b], [w.T.clone() for w in p.W[:-1]])
    x, y = batch()
    traj = {}
    for name, cfg, params in (("ep", cfg_ep, p), ("vf", cfg_vf, p_vf)):
        s = zero_states(cfg, (4,), x)
        drive = input_drive(cfg, params, x)
        states = []
        for t in range(20):
            s, _ = step(cfg, params, s, drive, 0.3 if t >= 13 else 0.0, y if t >= 13 else None)
            states.append([si.clone() for si in s])
        traj[name] = states
    for se, sv in zip(traj["ep"], traj["vf"], strict=True):
        for a, b in zip(se, sv, strict=True):
            assert torch.equal(a, b)


def test_debug_cep_equals_plain_ep(monkeypatch):
    """Appendix F.2: debug-cep's update equals EP's up to the first-order effect of its tiny (1e-5 lr)
    continual updates on the nudged trajectory: exactly zero without them, linear in their scale, and
    about 1e-3 of the update at the published scale."""
    import cep.fused_step

    cfg, p = make("ep-discrete", "2h", T=20, Kmax=8, beta=0.5)
    x, y = batch()
    from cep.fused_step import relax
    s_free = relax(cfg, p, x, cfg.T)
    lrs = [0.005, 0.05, 0.2]  # the published EP-2h rates of the debug command (Appendix F.2)
    plain = p.clone()
    learn(cfg, plain, s_free, x, y, 0.5, lrs)
    d_plain = torch.cat([(a - b).flatten() for a, b in zip(plain.tensors(), p.tensors())])
    residue = {}
    for scale in (0.0, 1e-7, cep.fused_step.DEBUG_CEP_SCALE):
        monkeypatch.setattr(cep.fused_step, "DEBUG_CEP_SCALE", scale)
        debug = p.clone()
        learn(cfg.replace(continual=True, debug_cep=True), debug, s_free, x, y, 0.5, lrs)
        d_debug = torch.cat([(a - b).flatten() for a, b in zip(debug.tensors(), p.tensors())])
        residue[scale] = float((d_debug - d_plain).norm() / d_plain.norm())
    assert residue[0.0] < 1e-14
    assert residue[1e-5] < 1e-2, residue
    assert 50 < residue[1e-5] / residue[1e-7] < 200, residue


def test_cep_approaches_ep_linearly_in_the_learning_rate():
    """Theorem 1 regime: C-EP's total change / eps -> EP's, with an error proportional to eps."""
    cfg, p = make("ep-discrete", "1h", T=30, Kmax=10, beta=0.5)
    x, y = batch()
    from cep.fused_step import relax
    s_free = relax(cfg, p, x, cfg.T)
    base = [0.04, 0.08]  # EP-1h's published rates, scaled by eps below
    rel = []
    for eps in (1e-2, 1e-4, 1e-6):
        lrs = [lr * eps for lr in base]
        ep, cep = p.clone(), p.clone()
        learn(cfg, ep, s_free, x, y, 0.5, lrs)
        learn(cfg.replace(continual=True), cep, s_free, x, y, 0.5, lrs)
        d_ep = torch.cat([(a - b).flatten() for a, b in zip(ep.tensors(), p.tensors())])
        d_cep = torch.cat([(a - b).flatten() for a, b in zip(cep.tensors(), p.tensors())])
        rel.append(float((d_cep - d_ep).norm() / d_ep.norm()))
    assert rel[0] > 1e-6, rel  # continual updates do change things at eps = 1e-2
    # each factor 100 in eps buys (about) a factor 100 in the difference
    for big, small in zip(rel, rel[1:]):
        assert 30 < big / small < 300, rel


@pytest.mark.parametrize("angle", [0, 45, 90, 135, 180])
def test_measured_weight_angle_matches_request(angle):
    cfg = TrialConfig(rule="vf", size_tab=(10, 512, 512, 784), lr_tab=(0.1, 0.1, 0.1), angle=angle)
    p = init_params(cfg, torch.Generator().manual_seed(angle))
    hidden_pair = weight_angles(p)[1]  # V_1 against W_1^T: the 512x512 pair
    assert abs(hidden_pair - angle) < 2.0


def test_trial_dimension_broadcasts():
    """A leading trial dimension (with per-trial beta and learning rates) equals separate trials."""
    for kind in KINDS:
        cfg, p1 = make(kind, "2h", continual=True, Kmax=4, T=6)
        _, p2 = make(kind, "2h", continual=True, Kmax=4, T=6)
        for t in p2.tensors():
            t.mul_(1.1)
        x, y = batch()
        betas, lrs = [0.3, -0.5], [[0.1, 0.2, 0.3], [0.05, 0.15, 0.25]]
        stacked = Params(*([torch.stack([a, b]) for a, b in zip(g1, g2)] for g1, g2 in
                           ((p1.W, p2.W), (p1.b, p2.b), (p1.V, p2.V))))
        from cep.fused_step import relax
        xs, ys = x.expand(2, *x.shape), y.expand(2, *y.shape)
        s_free = relax(cfg, stacked, xs, cfg.T)
        learn(cfg, stacked, s_free, xs, ys, torch.tensor(betas, dtype=torch.float64),
              [torch.tensor(pair, dtype=torch.float64) for pair in zip(*lrs)])
        for k, single in enumerate((p1, p2)):
            sf = relax(cfg, single, x, cfg.T)
            torch.testing.assert_close(s_free[0][k], sf[0])
            learn(cfg, single, sf, x, y, betas[k], lrs[k])
            for a, b in zip(stacked.tensors(), single.tensors(), strict=True):
                torch.testing.assert_close(a[k], b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("rule,sizes", [("ep", (10, 9, 784)), ("vf", (10, 9, 7, 784)), ("ep", (10, 9, 8, 7, 784))])
@pytest.mark.parametrize("steps", [1, 2, 5, 6])
@pytest.mark.parametrize("start", [False, True])
def test_discrete_free_phase_as_two_chains_equals_iterated_steps(rule, sizes, steps, start):
    """relax (two chains side by side, cep.fused_step) against `step` iterated from zero or from given states,
    for odd and even step counts and 1-3 hidden layers, alone and with a trial dimension."""
    from cep.fused_step import relax
    cfg = TrialConfig(rule=rule, size_tab=sizes, lr_tab=(0.05,) * (len(sizes) - 1), dtype="float64", seed=0)
    singles = [init_params(cfg, torch.Generator().manual_seed(k), dtype=torch.float64) for k in range(2)]
    x, _ = batch()
    s0 = random_states(cfg, 4, seed=7) if start else None
    wants = []
    for p in singles:
        s = s0 if start else [torch.zeros(4, n, dtype=torch.float64) for n in sizes[:-1]]
        for _ in range(steps):
            s, _ = step(cfg, p, s, input_drive(cfg, p, x))
        wants.append(s)
        for got, want in zip(relax(cfg, p, x, steps, s0), s, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    packed = Params.stack(singles)
    got = relax(cfg, packed, x.expand(2, *x.shape), steps, s0 and [t.expand(2, *t.shape) for t in s0])
    for k, want in enumerate(wants):
        for g_, w_ in zip(got, want, strict=True):
            torch.testing.assert_close(g_[k], w_, rtol=1e-12, atol=1e-12)


def test_init_follows_nn_linear_bounds():
    cfg = TrialConfig(size_tab=(10, 512, 784), lr_tab=(0.1, 0.1))
    p = init_params(cfg, torch.Generator().manual_seed(0))
    for w, b, fan_in in zip(p.W, p.b, (512, 784)):
        bound = 1 / math.sqrt(fan_in)
        assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound
        assert b.abs().max() <= bound


# ------------------------------------------------- the fused step (cep.fused_step) over several minibatches
FAST_SIZES = {"1h": (10, 32, 784), "2h": (10, 16, 16, 784)}


def _fast_setup(kind: str, depth: str, dtype: torch.dtype = torch.float64, **kw) -> tuple[TrialConfig, Params]:
    rule, setting = kind.split("-")
    sizes = FAST_SIZES[depth]
    cfg = TrialConfig(rule=rule, setting=setting, size_tab=sizes, lr_tab=(0.05,) * (len(sizes) - 1),
                      dtype=str(dtype).removeprefix("torch."), seed=0, T=10, Kmax=6, **kw)
    p = init_params(cfg, torch.Generator().manual_seed(1), dtype=dtype)
    if rule == "vf":
        p.V = [v + 0.1 * torch.randn(v.shape, generator=torch.Generator().manual_seed(i), dtype=v.dtype)
               for i, v in enumerate(p.V)]
    return cfg, p


FAST_LRS = [0.4, 0.3, 0.2]  # large, so that continual updates move the trajectories visibly
FAST_BETAS = [0.4, -0.3, 0.5]  # one negative nudge per run: randbeta's sign flip (spec 5)


@pytest.mark.parametrize("kind,depth,continual", list(itertools.product(KINDS, FAST_SIZES, [False, True])))
def test_fast_step_follows_spec_over_minibatches(kind, depth, continual):
    """relax + learn (the fused step) against the literal spec, float64, three minibatches in a row:
    every rule x setting x continual x depth, with a negative beta in the middle (randbeta)."""
    from cep.fused_step import relax
    cfg, p = _fast_setup(kind, depth, continual=continual)
    lrs = FAST_LRS[: cfg.n_layers]
    W, b, V = [w.clone() for w in p.W], [t.clone() for t in p.b], [v.clone() for v in p.V]
    for m, beta in enumerate(FAST_BETAS):
        x, y = batch(6, seed=10 + m)
        W, b, V, want_free = ref.one_minibatch(kind, W, b, V, x, y, cfg.T, cfg.Kmax, beta, lrs, continual)
        got_free = relax(cfg, p, x, cfg.T)
        for g_, w_ in zip(got_free, want_free, strict=True):
            torch.testing.assert_close(g_, w_, rtol=1e-10, atol=1e-10)
        learn(cfg, p, got_free, x, y, beta, lrs)
        for g_, w_ in zip(p.tensors(), W + b + V, strict=True):
            torch.testing.assert_close(g_, w_, rtol=1e-10, atol=1e-10)
    moved = max(float((a - c).abs().max()) for a, c in zip(p.W, _fast_setup(kind, depth)[1].W))
    assert moved > 1e-3  # the updates did something


def test_fast_debug_cep_follows_spec_over_minibatches():
    """debug-cep (spec 5) against its literal definition: tiny continual updates, undone, summed increment."""
    from cep.fused_step import relax
    for depth in FAST_SIZES:
        cfg, p = _fast_setup("ep-discrete", depth, continual=True, debug_cep=True)
        lrs = FAST_LRS[: cfg.n_layers]
        W, b, V = [w.clone() for w in p.W], [t.clone() for t in p.b], []
        for m, beta in enumerate(FAST_BETAS):
            x, y = batch(6, seed=20 + m)
            # scale 1e-2 instead of 1e-5 so that the tiny updates' effect on the trajectory is far above 1e-10
            W, b, V = ref.debug_cep_minibatch(W, b, V, x, y, cfg.T, cfg.Kmax, beta, lrs, scale=1e-2)
            import cep.fused_step
            old, cep.fused_step.DEBUG_CEP_SCALE = cep.fused_step.DEBUG_CEP_SCALE, 1e-2
            try:
                learn(cfg, p, relax(cfg, p, x, cfg.T), x, y, beta, lrs)
            finally:
                cep.fused_step.DEBUG_CEP_SCALE = old
            for g_, w_ in zip(p.tensors(), W + b, strict=True):
                torch.testing.assert_close(g_, w_, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", KINDS)
def test_fast_step_float32_one_minibatch(kind):
    """float32 at a paper-like width (512 hidden units, batch 20), one minibatch against the literal spec
    in float32. Float32 trajectories of different summation orders drift apart chaotically (~5e-7 after
    one minibatch at the paper's settings, and here, with larger rates, today's step and the spec differ
    by ~5e-5 in the discrete ep weights, as much as float32 and float64 differ): so one minibatch only,
    and a tolerance on the relative size of the weight change's error."""
    from cep.fused_step import relax
    rule, setting = kind.split("-")
    cfg = TrialConfig(rule=rule, setting=setting, continual=True, size_tab=(10, 512, 784), lr_tab=(0.01, 0.02),
                      T=20, Kmax=8, beta=0.2, seed=0)
    p = init_params(cfg, torch.Generator().manual_seed(3))
    x, y = (t.float() for t in batch(20, seed=5))
    W, b, V, _ = ref.one_minibatch(kind, p.W, p.b, p.V, x, y, cfg.T, cfg.Kmax, 0.2, [0.01, 0.02], True)
    before = p.clone()
    learn(cfg, p, relax(cfg, p, x, cfg.T), x, y, 0.2, [0.01, 0.02])
    for g_, w_, o in zip(p.tensors(), W + b + V, before.tensors(), strict=True):
        err, change = float((g_ - w_).norm()), float((w_ - o).norm())
        assert err <= 1e-3 * change + 1e-7, (err, change)  # today's step: err ~ 4e-5 * change


def test_free_phase_preparation_is_not_reused_after_the_weights_change():
    """learn() reuses what relax() prepared (input drive, scaled weights) only for unchanged weights and x."""
    from cep.fused_step import relax
    cfg, p = _fast_setup("ep-discrete", "1h", continual=True)
    x, y = batch(6)
    s_free = relax(cfg, p, x, cfg.T)
    p.W[-1].add_(0.01)  # in place: same tensor object, new version
    p.b[0].mul_(1.5)
    fresh = p.clone()
    learn(cfg, p, s_free, x, y, 0.4, [0.4, 0.3])
    learn(cfg, fresh, list(s_free), x, y, 0.4, [0.4, 0.3])  # a plain list carries nothing prepared
    for a, b in zip(p.tensors(), fresh.tensors(), strict=True):
        assert torch.equal(a, b)
