"""The GDU analysis (spec section 6): BPTT truncations, the theorem where it holds, where it fails, the CLI."""

from __future__ import annotations

import csv
import json
import math
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cep.checkpoint import new_state
from cep.cli import cli, legacy_config, run_main
from cep.config import ConfigError, TrialConfig
from cep.data import load_data
from cep.fused_step import relax
from cep.gdu.analysis import Factored, analyse, angle_grad, choose_units, unit_curves
from cep.gdu.report import first_minibatch
from cep.model import Params, init_params, input_drive, step
from cep.presets import GDU_PRESETS, paper_config

COMMANDS = [line for line in (Path(__file__).parent / "seed_readme_commands.txt").read_text().splitlines()
            if line.startswith("cep run ") and "plotcurves" in line]
DISCRETE = dict(setting="discrete", beta=0.01, T=150, Kmax=10)
CONTINUOUS = dict(setting="continuous", no_clamp=True, dt=0.08, beta=0.005, T=800, Kmax=80)


@pytest.fixture(scope="module")
def mnist() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_data(TrialConfig())
    return data.x_train[:4].double(), F.one_hot(data.y_train[:4], 10).double()


def setup(mnist, sizes=(10, 32, 784), batch=2, wscale=1.0, seed=1, **fields):
    """A tanh net in float64 on the first `batch` mnist5k images; weights optionally scaled down."""
    L = len(sizes) - 1
    cfg = TrialConfig.from_dict({"size_tab": sizes, "activation": "tanh", "batch_size": batch, "dtype": "float64",
                                 "seed": seed, "lr_tab": [1e-7] * L, **fields})
    p = init_params(cfg, torch.Generator().manual_seed(seed), "cpu", torch.float64)
    for t in p.tensors():
        t.mul_(wscale)
    return cfg, p, mnist[0][:batch], mnist[1][:batch]


def cosines(result) -> dict[str, float]:
    return {r["name"]: r["cosine"] for r in result.agreement()}


def rmses(result) -> dict[str, float]:
    return {r["name"]: r["rel_rmse"] for r in result.agreement()}


# ------------------------------------------------------------ BPTT truncation
def literal_truncated(cfg: TrialConfig, p: Params, x, y, K: int) -> tuple[dict[str, torch.Tensor], list]:
    """G(K) by the definition: detach the states at step T-1-K, backpropagate through the last K+1 steps
    with the parameters themselves as leaves (W_{L-1} through a drive recomputed from it)."""
    q = Params(*([t.detach().clone().requires_grad_() for t in group] for group in (p.W, p.b, p.V)))
    with torch.no_grad():
        s = relax(cfg, p, x, cfg.T - 1 - K)
    states = []
    for _ in range(K + 1):
        s, _ = step(cfg, q, s, input_drive(cfg, q, x))
        for t in s:
            t.retain_grad()
        states.append(s)
    loss = 0.5 * ((s[0] - y) ** 2).sum() / x.shape[0]
    loss.backward()
    named = {**{f"W_{i}": w for i, w in enumerate(q.W)}, **{f"b_{i}": b for i, b in enumerate(q.b)},
             **{f"V_{i}": v for i, v in enumerate(q.V)}}
    grads = {n: torch.zeros_like(t) if t.grad is None else t.grad for n, t in named.items()}
    neurons = [[torch.zeros_like(t) if t.grad is None else t.grad for t in st] for st in reversed(states)]
    return grads, neurons  # neurons[t][i] = dL/ds_i(T - t)


@pytest.mark.parametrize("kind", [dict(rule="ep", setting="discrete"), dict(rule="vf", setting="discrete", angle=60),
                                  dict(rule="ep", setting="continuous", no_clamp=True),
                                  dict(rule="vf", setting="continuous", angle=30, activation="sigm")])
def test_per_step_gradients_are_the_differences_of_truncated_gradients(kind):
    """One backward pass with per-step parameter copies equals the literal definition, for every K."""
    g = torch.Generator().manual_seed(0)
    cfg = TrialConfig.from_dict({"size_tab": [10, 12, 9, 784], "activation": "tanh", "T": 14, "Kmax": 6, "dt": 0.3,
                                 "lr_tab": [0.1] * 3, "beta": 0.1, "seed": 0, **kind})
    p = init_params(cfg, g, "cpu", torch.float64)
    x = torch.rand(3, 784, generator=g, dtype=torch.float64)
    y = F.one_hot(torch.tensor([1, 4, 7]), 10).double()
    result = analyse(cfg, p, x, y)
    previous = None
    for K in range(cfg.Kmax):
        literal, _ = literal_truncated(cfg, p, x, y, K)
        for name in result.bptt_last_step:
            torch.testing.assert_close(result.truncated(name)[K], literal[name], rtol=1e-9, atol=1e-12)
            traj = result.bptt[name]
            per_step = (traj.dense() if isinstance(traj, Factored) else traj)[K]
            expected = torch.zeros_like(literal[name]) if K == 0 else literal[name] - previous[name]
            torch.testing.assert_close(per_step, expected, rtol=1e-9, atol=1e-12)
        previous = literal
    # the sum of the per-step gradients (plus the last step's) is the plain gradient of the last Kmax steps
    full, neurons = literal_truncated(cfg, p, x, y, cfg.Kmax - 1)
    for name, last in result.bptt_last_step.items():
        traj = result.bptt[name]
        total = traj.total() if isinstance(traj, Factored) else traj.sum(0)
        torch.testing.assert_close(last + total, full[name], rtol=1e-9, atol=1e-12)
    for i in range(cfg.n_layers):
        literal_s = torch.stack([neurons[t][i].sum(0) for t in range(cfg.Kmax)])
        torch.testing.assert_close(result.bptt[f"s_{i}"], literal_s, rtol=1e-9, atol=1e-12)
    assert torch.equal(result.bptt["s_1"][0], torch.zeros(12, dtype=torch.float64))  # t < i
    assert torch.equal(result.bptt["s_2"][:2], torch.zeros(2, 9, dtype=torch.float64))


# ---------------------------------------------------------------- the theorem
def test_discrete_ep_and_vf_follow_bptt_at_the_fixed_point(mnist):
    """Discrete models at their fixed point, beta 0.01: every layer's cosine > 0.99 (spec 6, Theorem 1)."""
    for kind in (dict(rule="ep"), dict(rule="ep", continual=True), dict(rule="vf"),
                 dict(rule="vf", continual=True)):
        cfg, p, x, y = setup(mnist, **DISCRETE, **kind)
        s = relax(cfg, p, x, cfg.T)
        assert max(float((a - b).abs().max()) for a, b in zip(s, relax(cfg, p, x, 1, s), strict=True)) < 1e-12
        before = [t.clone() for t in p.tensors()]
        result = analyse(cfg, p, x, y)
        assert all(torch.equal(a, b) for a, b in zip(before, p.tensors(), strict=True))  # p untouched
        cos = cosines(result)
        assert set(cos) == ({"s_0", "s_1", "W_0", "W_1", "b_0", "b_1"} if kind["rule"] == "ep"
                            else {"s_0", "s_1", "W_0", "W_1", "b_0", "V_0"})  # discrete vf never updates b_1
        assert min(cos.values()) > 0.99, (kind, cos)
        assert result.angle_grad() < 8
    # two hidden layers: synchronous discrete updates oscillate at the default scale; at half the weights
    # the dynamics contract to a fixed point and every layer agrees
    cfg, p, x, y = setup(mnist, sizes=(10, 32, 16, 784), wscale=0.5, **DISCRETE)
    cos = cosines(analyse(cfg, p, x, y))
    assert len(cos) == 9 and min(cos.values()) > 0.98, cos


def test_continual_updates_approach_ep_as_the_learning_rate_vanishes(mnist):
    """C-EP's agreement with BPTT degrades with lr (the weights move under the neurons) and tends to EP's."""
    ep = cosines(analyse(*setup(mnist, **DISCRETE)))
    worst = []
    for lr in (1e-3, 1e-4, 1e-7):
        cos = cosines(analyse(*setup(mnist, continual=True, lr_tab=[lr, lr], **DISCRETE)))
        worst.append(min(cos.values()))
        if lr == 1e-7:
            assert all(abs(cos[n] - ep[n]) < 1e-4 for n in ep)
    assert worst[0] < worst[1] < worst[2]


def test_continuous_ep_agrees_within_a_calibrated_bound(mnist):
    """Continuous ep is not an exact gradient system (spec 2.3); measured min cosine over the layers:
    0.9997 (1h), 0.9996 (2h at 0.7 of the initial weights, which settles), 0.9986 (vf); asserted with margin."""
    cfg, p, x, y = setup(mnist, **CONTINUOUS)
    cos, rel = cosines(r := analyse(cfg, p, x, y)), rmses(r)
    assert min(cos.values()) > 0.995 and max(rel.values()) < 0.15, (cos, rel)
    two = analyse(*setup(mnist, sizes=(10, 32, 16, 784), wscale=0.7, **CONTINUOUS))
    assert min(cosines(two).values()) > 0.995 and not two.unsettled(0.005), cosines(two)
    vf = cosines(analyse(*setup(mnist, rule="vf", **CONTINUOUS)))
    assert min(vf.values()) > 0.99, vf


def test_agreement_is_worse_with_a_large_beta_or_a_large_weight_angle(mnist):
    small, large = (analyse(*setup(mnist, **{**DISCRETE, "beta": b})) for b in (0.01, 0.5))
    assert min(cosines(large).values()) < min(cosines(small).values()) - 0.05
    assert np.mean(list(rmses(large).values())) > 3 * np.mean(list(rmses(small).values()))
    for name in cosines(small):
        assert cosines(large)[name] < cosines(small)[name]
    means = [np.mean([c for n, c in cosines(analyse(*setup(mnist, rule="vf", angle=a, **DISCRETE))).items()
                      if n != "s_0"]) for a in (0, 45, 90, 135)]
    assert means[0] > 0.99 and means[0] > means[1] > means[2] > means[3], means
    assert abs(means[2]) < 0.3  # random feedback: no agreement beyond the output layer


def test_an_unsettled_free_phase_spoils_the_agreement(mnist):
    """At the default scale this 2h net is still drifting after 800 steps (residual ~5e-4 per unit time):
    divided by beta the drift swamps the nudge, and the result says so."""
    cfg, p, x, y = setup(mnist, sizes=(10, 32, 16, 784), **CONTINUOUS)
    result = analyse(cfg, p, x, y)
    assert result.unsettled(cfg.beta) and result.free_residual > 1e-4
    assert min(cosines(result).values()) < 0.5


def test_zero_pattern_of_the_discrete_one_hidden_layer_net(mnist):
    """Error needs i steps to reach layer i, and synchronous updates make the dependency graph bipartite."""
    result = analyse(*setup(mnist, **DISCRETE))
    for side in (result.bptt, result.ep):
        assert torch.all(side["s_1"][0] == 0)
        assert torch.all(side["W_0"][0] == 0) and torch.all(side["b_1"][0] == 0)
    assert torch.all(result.bptt["s_0"][1::2] == 0) and torch.all(result.bptt["s_1"][0::2] == 0)
    assert torch.all(result.bptt["s_0"][0::2].abs().sum(-1) > 0)


def test_chosen_units_are_seeded_and_show_something(mnist):
    result = analyse(*setup(mnist, **DISCRETE))
    units, again = choose_units(result, 5, seed=3), choose_units(result, 5, seed=3)
    for name, u in units.items():
        assert all(torch.equal(a, b) for a, b in zip(u, again[name], strict=True))
        curves = unit_curves(result.bptt[name], u)
        assert curves.shape == (10, 5) and bool((curves != 0).any(0).all()), name
    rows, cols = units["W_1"]
    dense = result.bptt["W_1"].dense()
    torch.testing.assert_close(unit_curves(result.bptt["W_1"], units["W_1"]), dense[:, rows, cols])


# ---------------------------------------------------------------- angle-grad
@pytest.fixture(scope="module")
def paper_batch():
    cfg = paper_config("EP-1h", dataset="mnist5k", seed=0, dtype="float64")
    state = new_state(cfg, torch.device("cpu"))
    return state, first_minibatch(cfg, state.generator, torch.device("cpu"), torch.float64)


def test_angle_grad_is_small_for_ep_1h_at_initialisation(paper_batch):
    """Fig. 5(a) reads about 17° for EP-1h; here 18.5° (seed 0; 21° with seed 1)."""
    state, (x, y, _) = paper_batch
    before = [t.clone() for t in state.params.tensors()]
    with torch.no_grad():  # as the trainer calls it
        angle = angle_grad(state.config, state.params, x, y)
    assert 5 < angle < 30
    assert all(torch.equal(a, b) for a, b in zip(before, state.params.tensors(), strict=True))


def test_angle_grad_grows_with_the_vf_weight_angle(paper_batch):
    """C-VF-1h at initialisation (Fig. 5a): about 67°, 88°, 109° for weight angles 0°, 90°, 180°."""
    _, (x, y, _) = paper_batch
    angles = []
    for weight_angle in (0, 90, 180):
        cfg = paper_config("C-VF-1h", angle=weight_angle, seed=0, dtype="float64")
        p = init_params(cfg, torch.Generator().manual_seed(0), "cpu", torch.float64)
        angles.append(angle_grad(cfg, p, x, y))
    assert angles[0] < angles[1] < angles[2], angles
    assert angles[1] - angles[0] > 10 and angles[2] > 95


def test_angle_grad_of_a_training_run_is_printed_and_saved(tmp_path, capsys):
    out = tmp_path / "train"
    args = ["run", "--action", "train", "--discrete", "--size_tab", "10", "32", "784", "--lr_tab", "0.04", "0.08",
            "--T", "20", "--Kmax", "5", "--beta", "0.1", "--angle-grad", "--dataset", "mnist5k", "--seed", "0",
            "--train-samples", "40", "--test-samples", "50", "--device", "cpu", "--out", str(out)]
    with pytest.raises(SystemExit) as e:
        run_main(cli, None, args)
    assert e.value.code == 0
    angle = json.loads((out / "summary.json").read_text())["angle_grad"]
    assert 0 < angle < 90
    assert f"total BPTT gradient: {angle:.1f}°" in capsys.readouterr().out


# ------------------------------------------------------------------------ CLI
def test_every_plotcurves_command_parses():
    assert len(COMMANDS) == 11
    for line in COMMANDS:
        cfg = legacy_config(shlex.split(line)[2:])
        assert cfg.action == "gdu" and cfg.batch_size == 1 and cfg.activation == "tanh"
        assert (cfg.T, cfg.Kmax, cfg.beta) == ((150, 10, 0.01) if cfg.setting == "discrete" else (800, 80, 0.005))
        if cfg.continual:
            assert cfg.lr_tab == (0.00002, 0.00002)
        preset = f"{'c-' if cfg.continual else ''}{cfg.rule}-{cfg.setting}"
        assert cfg.replace(out_dir=None, dataset="mnist5k", dtype="float64", seed=None, device="auto",
                           data_dir="data", lr_tab=cfg.lr_tab if cfg.continual else (0.00002, 0.00002)) == \
            TrialConfig.from_dict({**GDU_PRESETS[preset], "dtype": "float64", "dataset": "mnist5k",
                                   "checkpoint": True})  # like cep gdu, cep run finds a finished analysis again


def short(line: str, out: Path) -> list[str]:
    args = shlex.split(line)[2:]
    for flag, value in (("--T", "30"), ("--Kmax", "8")):
        args[args.index(flag) + 1] = value
    return ["run", *args, "--dataset", "mnist5k", "--device", "cpu", "--out", str(out)]


def test_plotcurves_commands_run_end_to_end(tmp_path, capsys):
    """Every plotcurves command of the seed README, shortened (T 30, Kmax 8), through the CLI."""
    for n, line in enumerate(COMMANDS):
        out = tmp_path / f"run{n}"
        with pytest.raises(SystemExit) as e:
            run_main(cli, None, short(line, out))
        assert e.value.code == 0, line
        stdout = capsys.readouterr().out
        assert "cosine" in stdout and "total BPTT gradient" in stdout and str(out) in stdout
        summary = json.loads((out / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["action"] == "gdu" and summary["wall_seconds"] > 0
        cfg = TrialConfig.from_dict(summary["config"])
        assert cfg.T == 30 and cfg.Kmax == 8 and cfg.seed is not None
        rows = list(csv.DictReader((out / "gdu" / "agreement.csv").open()))
        assert [r["name"] for r in rows] == [r["name"] for r in summary["agreement"]]
        assert {r["kind"] for r in rows} == {"neuron", "weight"} and 0 < summary["angle_grad"] < 180
        assert ("V_0" in [r["name"] for r in rows]) == (cfg.rule == "vf")
        for suffix in (".png", ".pdf"):
            assert (out / "gdu" / f"gdu_curves{suffix}").stat().st_size > 10_000
        npz = np.load(out / "gdu" / "trajectories.npz")
        assert npz["bptt.s_0"].shape == (8, 10) and npz["ep.W_1.post"].shape[0] == 8
        assert (out / "config.yaml").exists()


def test_cep_gdu_command(tmp_path, capsys):
    out = tmp_path / "gdu"
    with pytest.raises(SystemExit) as e:
        run_main(cli, None, ["gdu", "--preset", "c-vf-continuous", "--free-steps", "40", "--nudged-steps", "10",
                             "--sizes", "10,16,784", "--angle", "30", "--seed", "2", "--units", "3",
                             "--device", "cpu", "--out", str(out)])
    assert e.value.code == 0
    summary = json.loads((out / "summary.json").read_text())
    cfg = TrialConfig.from_dict(summary["config"])
    assert (cfg.rule, cfg.continual, cfg.setting, cfg.angle, cfg.lr_tab, cfg.dtype, cfg.gdu_units) == \
           ("vf", True, "continuous", 30.0, (0.00002, 0.00002), "float64", 3)
    assert 25 < summary["measured_angle"][0] < 35
    assert np.load(out / "gdu" / "trajectories.npz")["units.s_1"].shape == (1, 3)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_main(cli, None, ["gdu", "--free-steps", "5", "--nudged-steps", "10", "--out", str(tmp_path / "x")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --free-steps: got 5 < Kmax 10") and not (tmp_path / "x").exists()


def test_analysis_refuses_fewer_free_steps_than_nudged_ones(mnist):
    with pytest.raises(ConfigError):
        analyse(*setup(mnist, setting="discrete", T=5, Kmax=10))
    assert math.isfinite(analyse(*setup(mnist, setting="discrete", T=10, Kmax=10)).loss)
