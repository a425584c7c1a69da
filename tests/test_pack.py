"""Packed trials: several trials as one program (cep.train.train_pack) compute what each computes alone.

float64 throughout: the packed program sums in another order (batched products), and float32 trajectories
of different summation orders drift apart chaotically (~5e-7 after one minibatch, ~7e-5 after five), so
only float64 can show that the two compute the same thing.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from trainer import train

from cep.checkpoint import new_state
from cep.config import TrialConfig, pack_key, pack_problems
from cep.train import train_pack

CPU = torch.device("cpu")
BASE = dict(T=6, Kmax=3, train_samples=60, test_samples=40, batch_size=20, dataset="mnist5k", dtype="float64",
            device="cpu")


def members(rule: str, setting: str, continual: bool, sizes: tuple[int, ...], **extra) -> list[TrialConfig]:
    """Three trials that differ in every per-trial field: seed, lr_tab, beta, randbeta (and angle for vf)."""
    n = len(sizes) - 1
    out = []
    for k, (seed, beta, p) in enumerate([(0, 0.2, 0.0), (1, 0.3, 0.5), (2, 0.15, 0.8)]):
        out.append(TrialConfig(rule=rule, setting=setting, continual=continual, size_tab=sizes,
                               lr_tab=tuple(0.02 * (k + 1) * (i + 1) for i in range(n)), beta=beta, randbeta=p,
                               seed=seed, angle=[0.0, 60.0, 150.0][k] if rule == "vf" else 0.0,
                               **{**BASE, **extra}))
    return out


def assert_same(packed, alone, tol=1e-9):
    assert [s.status for s in packed] == [s.status for s in alone]
    for p, a in zip(packed, alone, strict=True):
        assert len(p.history) == len(a.history)
        for hp, ha in zip(p.history, a.history, strict=True):
            for key in ("train_error", "test_error", "train_loss", "test_loss"):
                assert math.isclose(hp[key], ha[key], rel_tol=tol, abs_tol=tol), (key, hp[key], ha[key])
        for tp, ta in zip(p.params.tensors(), a.params.tensors(), strict=True):
            assert torch.allclose(tp, ta, rtol=1e-10, atol=1e-10, equal_nan=True), float((tp - ta).abs().max())
        assert torch.equal(p.generator.get_state(), a.generator.get_state())


@pytest.mark.parametrize("rule,setting,continual,sizes", [
    (r, s, c, z) for r, s, c, z in itertools.product(("ep", "vf"), ("discrete", "continuous"), (False, True),
                                                     ((10, 12, 784), (10, 8, 8, 784)))])
def test_every_member_of_a_pack_equals_its_trial_alone(rule, setting, continual, sizes):
    cfgs = members(rule, setting, continual, sizes, epochs=1)
    assert_same(train_pack([new_state(c, CPU) for c in cfgs]), [train(c) for c in cfgs])


def test_debug_cep_packs_too():
    cfgs = members("ep", "discrete", True, (10, 12, 784), epochs=1, debug_cep=True)
    assert_same(train_pack([new_state(c, CPU) for c in cfgs]), [train(c) for c in cfgs])


def test_several_epochs_and_members_at_different_epochs():
    cfgs = members("vf", "discrete", True, (10, 12, 784), epochs=3)
    alone = [train(c) for c in cfgs]
    # member 0 is two epochs ahead, member 1 one: the pack brings each to the end from where it stands
    states = [new_state(c, CPU) for c in cfgs]
    train_pack(states[:1], report=lambda m, s: None)  # stands alone through its 3 epochs ...
    early = [new_state(c, CPU) for c in cfgs]
    seen = []
    train_pack([early[0]], report=lambda m, s: seen.append(m["epoch"]) or (s.epoch == 2 and _stop(s)))
    assert early[0].epoch == 2
    train(cfgs[1], state=early[1], report=lambda m, s: s.epoch == 1 and _stop(s))
    for s in early[:2]:
        s.status = "running"
    assert_same(train_pack(early), alone)


def _stop(state) -> None:
    """Pretend the run was cut after this epoch (a report that ends training)."""
    state.status = "stopped-for-test"


def test_a_diverging_member_is_marked_alone_and_the_others_go_on():
    cfgs = members("ep", "discrete", False, (10, 12, 784), epochs=3)
    statuses = []

    def poison_member_1(metrics, state):  # what an exploding run looks like, after its first epoch
        statuses.append((state.config.seed, metrics["status"]))
        if state.config.seed == 1 and state.epoch == 1:
            state.params.W[0][0, 0] = float("inf")

    alone = [train(c, report=poison_member_1) for c in cfgs]
    assert [s.status for s in alone] == ["finished", "diverged", "finished"]
    statuses.clear()
    packed = train_pack([new_state(c, CPU) for c in cfgs], report=poison_member_1)
    assert_same(packed, alone)
    assert statuses.count((1, "diverged")) == 1 and statuses.count((0, "running")) == 2


def test_what_may_differ_in_a_pack():
    a = TrialConfig(**BASE, seed=0)
    assert pack_problems([a, a.replace(seed=1, beta=0.3, lr_tab=(0.1, 0.1), randbeta=0.5, out_dir="x")]) == []
    assert pack_key(a) == pack_key(a.replace(seed=5, out_dir="elsewhere"))
    assert pack_problems([a, a.replace(T=7)]) == ["T differs (6 and 7)"]
    assert pack_problems([a, a.replace(action="gdu")]) == ["only training trials are packed (action train)"]
    with pytest.raises(ValueError, match="cannot share a pack: epochs differs"):
        train_pack([new_state(a, CPU), new_state(a.replace(epochs=2), CPU)])

