"""A trial's health: per-epoch angle, norms and output saturation; collapse detection and stop_on_collapse."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from trainer import train

from cep.checkpoint import new_state
from cep.config import TrialConfig
from cep.data import load_data
from cep.fused_step import relax
from cep.health import find_collapse
from cep.member import Member
from cep.results import METRIC_COLUMNS, read_folder
from cep.runner import rounds, run
from cep.train import train_pack

TINY = dict(rule="vf", continual=True, size_tab=(10, 12, 10, 784), lr_tab=(0.004, 0.008, 0.01), T=6, Kmax=3,
            beta=0.2, randbeta=0.5, angle=45.0, train_samples=60, test_samples=40, batch_size=20, seed=0,
            device="cpu", dtype="float64")


def test_health_columns_equal_independent_computations(tmp_path):
    cfg = TrialConfig(epochs=2, out_dir=str(tmp_path), **TINY)
    state = run(cfg, tmp_path).state
    last = state.history[-1]
    p = state.params
    for i in range(2):  # V_i against W_i^T, computed here from the entries
        w, v = p.W[i].double(), p.V[i].double()
        cos = float((v * w.T).sum()) / math.sqrt(float((v ** 2).sum()) * float((w ** 2).sum()))
        assert last[f"angle_{i}"] == pytest.approx(math.degrees(math.acos(cos)), abs=1e-9)
        assert last[f"norm_V{i}"] == pytest.approx(math.sqrt(float((v ** 2).sum())), rel=1e-12)
    for i in range(3):
        assert last[f"norm_W{i}"] == pytest.approx(math.sqrt(float((p.W[i].double() ** 2).sum())), rel=1e-12)
    data = load_data(cfg)
    with torch.no_grad():
        s0 = relax(cfg, p, data.x_test.double(), cfg.T)[0]
    near = [(u <= 1e-3 or u >= 1 - 1e-3) for u in s0.flatten().tolist()]
    assert last["output_saturation"] == pytest.approx(sum(near) / len(near), abs=1e-12)
    # metrics.csv: the original columns where they were, the health columns after them, every epoch
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0])[:len(METRIC_COLUMNS)] == METRIC_COLUMNS
    assert list(rows[0])[len(METRIC_COLUMNS):] == ["angle_0", "angle_1", "norm_W0", "norm_W1", "norm_W2",
                                                   "norm_V0", "norm_V1", "output_saturation"]
    assert [float(r["angle_1"]) for r in rows] == [h["angle_1"] for h in state.history]


def test_ep_has_norms_but_no_angles():
    state = train(TrialConfig(**{**TINY, "rule": "ep", "randbeta": 0.0, "angle": 0.0}))
    keys = [k for k in state.history[-1] if k.startswith(("angle_", "norm_"))]
    assert keys == ["norm_W0", "norm_W1", "norm_W2"]


def test_collapse_rule():
    def h(*train):
        return [{"epoch": e, "train_error": t, "test_error": t + 1} for e, t in enumerate(train, 1)]

    assert find_collapse(h(95, 90, 85)) is None  # never learned: not a collapse
    assert find_collapse(h(30, 21, 85)) is None  # never reached 20%
    assert find_collapse(h(30, 15, 60, 79.9)) is None  # bad, but not chance level
    assert find_collapse(h(30, 15, 20, 60, 90, 92, 10, 95)) == {
        "epoch": 5, "train_error_before": 20, "train_error_after": 90, "test_error_before": 21,
        "test_error_after": 91, "epoch_before": 3, "seen_in": "train_error"}


def _collapse_after_first_epoch(metrics, state, seeds=(0,)):
    """What a collapse looks like, made in one epoch: the first epoch is recorded as a good one (a tiny run
    cannot reach 20% quickly) and the output bias is blown up so that every image gets class 0 from then on
    (chance level; no learning rate of the run undoes it)."""
    if state.epoch == 1 and state.config.seed in seeds:
        state.history[-1]["train_error"] = 10.0
        state.params.b[0][..., 0] += 1e4


def test_a_collapse_is_flagged_and_the_run_goes_on():
    state = train(TrialConfig(epochs=3, **TINY), report=_collapse_after_first_epoch)
    assert state.status == "finished" and state.epoch == 3
    c = state.info["collapsed"]
    assert c["epoch"] == 2 and c["epoch_before"] == 1 and c["train_error_before"] == 10.0
    assert c["train_error_after"] == state.history[1]["train_error"] >= 80
    assert c["test_error_after"] == state.history[1]["test_error"]
    assert state.history[1]["output_saturation"] >= 0.1  # the blown-up unit sits at the clamp


def test_stop_on_collapse_ends_the_run_there_and_resumes_as_collapsed(tmp_path):
    cfg = TrialConfig(epochs=4, stop_on_collapse=True, checkpoint=True, out_dir=str(tmp_path), **TINY)
    seen = []

    def hook(metrics, state):
        seen.append(metrics["status"])
        _collapse_after_first_epoch(metrics, state)

    out = Member(cfg, tmp_path)
    for trained in rounds([out]):
        for e in trained:
            hook(e.metrics, e.state)
    out = out.outcome
    assert out.status == "collapsed" and out.state.epoch == 2 and seen == ["running", "collapsed"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "collapsed" and summary["collapsed"]["epoch"] == 2
    assert summary["best_test_epoch"] in (1, 2)
    folder = read_folder(tmp_path, "train", 4)
    assert folder.complete and folder.status == "collapsed"
    assert "collapsed at epoch 2" in folder.detail(tmp_path)
    again = run(cfg, tmp_path)  # a rerun (a sweep's resume) replays the ended trial, trains nothing
    assert again.replayed and again.status == "collapsed" and again.state.epoch == 2
    assert "collapsed at epoch 2" in (tmp_path / "trial.log").read_text()


def test_a_collapsed_member_of_a_pack_is_marked_alone():
    cfgs = [TrialConfig(epochs=3, stop_on_collapse=stop, **{**TINY, "seed": seed})
            for seed, stop in ((0, False), (1, True), (2, False))]

    def hook(metrics, state):
        _collapse_after_first_epoch(metrics, state, seeds=(1, 2))

    packed = train_pack([new_state(c, torch.device("cpu")) for c in cfgs], report=hook)
    assert [s.status for s in packed] == ["finished", "collapsed", "finished"]
    assert [s.epoch for s in packed] == [3, 2, 3]
    assert "collapsed" not in packed[0].info
    assert packed[1].info["collapsed"]["epoch"] == packed[2].info["collapsed"]["epoch"] == 2
    alone = [train(c, report=hook) for c in cfgs]
    for p, a in zip(packed, alone, strict=True):  # health columns of a member are its own, as alone
        for hp, ha in zip(p.history, a.history, strict=True):
            for k in ("angle_0", "angle_1", "norm_W0", "norm_V1", "output_saturation"):
                assert hp[k] == pytest.approx(ha[k], rel=1e-9, abs=1e-12), k


def test_older_configs_and_sweeps_stay_the_same_trials():
    """A config written before stop_on_collapse existed (no such key) is the same trial as one at its default."""
    cfg = TrialConfig(**TINY)
    old = {k: v for k, v in cfg.to_dict().items() if k != "stop_on_collapse"}
    assert cfg.result_differences(old) == []
    assert "stop_on_collapse" not in cfg.result_dict()  # sweep fingerprints unchanged
    assert cfg.replace(stop_on_collapse=True).result_differences(old) == ["stop_on_collapse"]
