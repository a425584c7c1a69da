"""The dry run's scaled time of a pack is within 1.5x of what calibrating that pack gives, for a 1h and a 2h net.

Scaling across nets by multiply-adds was off by 2-3x (a 1h step is mostly fixed overhead, a 2h step mostly
products), so a C-VF-2h trial alone was scaled to less than EP-2h's calibrated time although it costs more.
"""

from __future__ import annotations

import functools
from unittest import mock

import pytest

from cep.config import TrialConfig, pack_key
from cep.cost import epoch_macs
from cep.layout import Trial
from cep.sweep import calibrate
from cep.sweep.calibrate import _scaled
from cep.sweep.plan import Pack

NETS = {"1h": dict(size_tab=(10, 512, 784), lr_tab=(0.04, 0.08)),
        "2h": dict(size_tab=(10, 512, 512, 784), lr_tab=(0.005, 0.05, 0.2))}


def pack(net: str, members: int) -> Pack:
    trials = tuple(Trial(f"{net}/seed={k}", net, {"seed": k},
                         TrialConfig(**NETS[net], T=30, Kmax=10, beta=0.1, epochs=1, seed=k, dataset="mnist5k",
                                     train_samples=200, test_samples=100, device="cpu"))
                   for k in range(members))
    return Pack(f"{net}+{members}", trials)


def calibrated(*packs: Pack, rounds: int = 3) -> list[float]:
    """Each pack's calibration (over 15 minibatches, not the dry run's 3: a 1h minibatch takes milliseconds), the
    least disturbed of `rounds` taken in turns (the tests share loaded cores: timings taken one after the other
    would each see another load). What is checked is the scaling, not the calibration's own noise."""
    longer = functools.partial(calibrate.seconds_per_minibatch, batches=15)
    with mock.patch.object(calibrate, "seconds_per_minibatch", longer):
        times = [[calibrate.seconds_per_epoch(p, threads=1) for p in packs] for _ in range(rounds)]
    return [min(column) for column in zip(*times)]


@pytest.mark.parametrize("net,other,members", [("1h", "2h", 1), ("2h", "1h", 3)])
def test_a_scaled_estimate_is_within_1_5x_of_the_calibrated_one(net, other, members):
    """The dry run timed a pack of 4 of one net and a pack of the other whose multiply-adds are closer to those
    of a pack of 2 of the first; that pack of 2 is estimated from them, and compared with timing it."""
    timed, alone = [pack(net, 4), pack(other, members)], pack(net, 2)
    *seconds, truth = calibrated(*timed, alone)
    keys = [(pack_key(p.members[0].config), len(p.members)) for p in timed]
    measured = dict(zip(keys, seconds))
    costs = {k: epoch_macs(t.config for t in p.members) for k, p in zip(keys, timed)}
    estimate = _scaled(alone, measured, costs)
    assert truth / 1.5 <= estimate <= truth * 1.5, (net, estimate, truth, measured)
