"""val_samples: a fixed, stratified validation split held out of the training images, the same for every
trial and every resume; its error per epoch; the best epoch chosen on it."""

from __future__ import annotations

import json

import pytest
import torch
from trainer import evaluate, train

from cep.checkpoint import load_state
from cep.cli import TRAIN_FIELD_NAMES, cli, run_main
from cep.config import ConfigError, TrialConfig, pack_problems
from cep.data import _mnist5k, load_data, load_mnist5k
from cep.errors import DataError
from cep.runner import run

TINY = dict(size_tab=(10, 16, 784), lr_tab=(0.1, 0.2), T=8, Kmax=3, beta=0.5, batch_size=20, train_samples=300,
            test_samples=200, val_samples=150, device="cpu", dtype="float64", seed=3)


def _rows(x: torch.Tensor) -> set[bytes]:
    return {r.numpy().tobytes() for r in x}


def test_the_split_is_disjoint_from_training_and_covers_the_training_set():
    full = load_mnist5k()
    data = load_data(TrialConfig(val_samples=400))
    assert len(data.y_val) == 400 and len(data.y_train) == len(full.y_train) - 400
    val, train_rows = _rows(data.x_val), _rows(data.x_train)
    assert len(val) == 400 and not val & train_rows  # no held-out image is trained on
    assert val | train_rows == _rows(full.x_train)  # nothing lost, nothing from the test set
    assert not val & _rows(full.x_test)
    # stratified: each class in proportion to its share of the training images (within one image)
    for c in range(10):
        share = int((full.y_train == c).sum()) * 400 / len(full.y_train)
        assert abs(int((data.y_val == c).sum()) - share) < 1
    # the labels travel with their images
    x_all, y_all = _mnist5k()
    label_of = {r.numpy().tobytes(): int(y) for r, y in zip(x_all, y_all)}
    assert all(label_of[r.numpy().tobytes()] == int(y) for r, y in zip(data.x_val, data.y_val))


def test_the_split_is_the_same_for_every_trial_of_a_sweep():
    a = load_data(TrialConfig(val_samples=300, seed=1))
    b = load_data(TrialConfig(val_samples=300, seed=2, lr_tab=(0.5, 0.5), train_samples=1000, rule="vf"))
    assert torch.equal(a.x_val, b.x_val) and torch.equal(a.y_val, b.y_val)
    assert not _rows(b.x_train) & _rows(a.x_val)  # a train_samples limit draws from the rest only


def test_no_split_leaves_the_data_as_it_was():
    plain, zero = load_mnist5k(), load_data(TrialConfig())
    assert zero.x_val is None and torch.equal(plain.x_train, zero.x_train) and torch.equal(plain.y_train,
                                                                                          zero.y_train)


def test_validation_error_is_the_error_on_the_held_out_images_and_survives_a_resume(tmp_path):
    cfg = TrialConfig(epochs=3, **TINY)
    whole = train(cfg)
    data = load_data(cfg)
    err, loss = evaluate(cfg, whole.params, data.x_val.double(), data.y_val)
    assert whole.history[-1]["val_error"] == err and whole.history[-1]["val_loss"] == pytest.approx(loss, rel=1e-12)
    # stopped after epoch 1 and resumed from its checkpoint: the same validation numbers, bit for bit
    folder = tmp_path / "run"
    run(cfg.replace(epochs=1, checkpoint=True, out_dir=str(folder)), folder)
    resumed = run(cfg.replace(checkpoint=True, out_dir=str(folder)), folder).state
    assert [h["val_error"] for h in resumed.history] == [h["val_error"] for h in whole.history]
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in whole.history]
    assert load_state(folder / "checkpoint.pt").config.val_samples == 150


def test_summary_selects_the_best_epoch_on_validation(tmp_path):
    cfg = TrialConfig(epochs=4, checkpoint=True, out_dir=str(tmp_path), **TINY)
    state = run(cfg, tmp_path).state
    summary = json.loads((tmp_path / "summary.json").read_text())
    vals = [h["val_error"] for h in state.history]
    pick = vals.index(min(vals))  # the first of equal ones
    assert summary["best"] == {"selected_on": "validation", "epoch": pick + 1,
                               "train_error": state.history[pick]["train_error"], "val_error": vals[pick],
                               "test_error": state.history[pick]["test_error"]}
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "val_error" in header and "val_loss" in header


def test_without_a_split_the_best_epoch_is_chosen_on_test_and_says_so(tmp_path):
    cfg = TrialConfig(epochs=2, out_dir=str(tmp_path), **{**TINY, "val_samples": 0})
    run(cfg, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["best"]["selected_on"] == "test"
    assert summary["best"]["epoch"] == summary["best_test_epoch"]
    assert "val_error" not in (tmp_path / "metrics.csv").read_text()


def test_val_samples_is_shared_by_a_pack_and_changes_the_result():
    a, b = TrialConfig(val_samples=100), TrialConfig(val_samples=200)
    assert any("val_samples" in p for p in pack_problems([a, b]))
    assert a.result_differences(b) == ["val_samples"]
    assert "val_samples" not in TrialConfig().result_dict()  # at its default: an older sweep's identity is kept


def test_bad_val_samples_are_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(ConfigError, match="val_samples"):
        TrialConfig(val_samples=-1)
    with pytest.raises(DataError, match="val_samples: got 4000"):
        load_data(TrialConfig(val_samples=4000))
    with pytest.raises(SystemExit) as e:
        run_main(cli, TRAIN_FIELD_NAMES, ["train", "--val-samples", "5000", "--out", str(tmp_path / "r"),
                                          "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "val_samples" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()
