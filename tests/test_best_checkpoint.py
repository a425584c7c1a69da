"""checkpoint-best.pt: the state at the selected best epoch, kept beside the last one, written safely, and
continued or evaluated with `cep train --resume-from`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import cep.checkpoint
from cep.checkpoint import load_state
from cep.cli import TRAIN_FIELD_NAMES, cli, run_main
from cep.config import TrialConfig
from cep.member import Member
from cep.runner import rounds, run

# float64, a learning rate high enough that the validation error swings: the best epoch is not the last
TINY = dict(size_tab=(10, 16, 784), lr_tab=(0.4, 0.8), T=8, Kmax=3, beta=0.5, batch_size=20, train_samples=300,
            test_samples=100, val_samples=100, device="cpu", dtype="float64", seed=6, checkpoint=True)
EPOCHS = 6


def same_state(a, b) -> None:
    """Bit for bit: weights, generator, epoch and history (where a run stopped at an epoch says "finished", the
    longer one said "running": the status is compared by the callers that need it)."""
    assert a.epoch == b.epoch
    assert all(torch.equal(x, y) for x, y in zip(a.params.W + a.params.V, b.params.W + b.params.V))
    assert all(torch.equal(x, y) for x, y in zip(a.params.b, b.params.b))
    assert torch.equal(a.generator.get_state(), b.generator.get_state())
    def numbers(state):
        return [{k: v for k, v in h.items() if "seconds" not in k and k != "status"} for h in state.history]

    assert numbers(a) == numbers(b)


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    folder = tmp_path_factory.mktemp("whole")
    state = run(TrialConfig(epochs=EPOCHS, out_dir=str(folder), **TINY), folder).state
    return folder, state


def test_the_best_checkpoint_is_the_state_of_a_run_stopped_at_that_epoch(whole, tmp_path):
    folder, state = whole
    best = load_state(folder / "checkpoint-best.pt")
    vals = [h["val_error"] for h in state.history]
    assert best.epoch == vals.index(min(vals)) + 1 == json.loads((folder / "summary.json").read_text())["best"]["epoch"]
    assert best.epoch < EPOCHS  # else this test would not tell the best from the last
    stopped = run(TrialConfig(epochs=best.epoch, out_dir=str(tmp_path), **TINY), tmp_path).state
    same_state(best, load_state(tmp_path / "checkpoint.pt"))
    same_state(best, stopped)


def test_resume_from_the_best_checkpoint_continues_as_the_run_did(whole, tmp_path, capsys):
    folder, state = whole
    out = tmp_path / "continued"
    with pytest.raises(SystemExit) as e:
        run_main(cli, TRAIN_FIELD_NAMES, ["train", "--resume-from", str(folder / "checkpoint-best.pt"), "--out",
                                          str(out), "--epochs", str(EPOCHS), "--device", "cpu", "--checkpoint",
                                          "--quiet", "--threads", str(torch.get_num_threads())])  # as `whole` ran
    assert e.value.code == 0
    same_state(load_state(out / "checkpoint.pt"), state)


def test_resume_from_the_best_checkpoint_evaluates_it(whole, tmp_path, capsys):
    folder, _ = whole
    best = json.loads((folder / "summary.json").read_text())["best"]
    out = tmp_path / "evaluated"
    with pytest.raises(SystemExit) as e:
        run_main(cli, TRAIN_FIELD_NAMES, ["train", "--resume-from", str(folder / "checkpoint-best.pt"), "--out",
                                          str(out), "--epochs", str(best["epoch"]), "--device", "cpu", "--quiet"])
    assert e.value.code == 0
    final = json.loads((out / "summary.json").read_text())["final"]
    assert final["test_error"] == best["test_error"]
    said = capsys.readouterr().out
    assert f"test error there {best['test_error']:.2f}%" in said
    assert f"resuming from {folder / 'checkpoint-best.pt'}: already finished after epoch {best['epoch']}" in said


def test_a_kill_between_the_best_and_the_last_checkpoint_leaves_both_readable(whole, tmp_path, monkeypatch):
    folder, state = whole
    best_epoch = load_state(folder / "checkpoint-best.pt").epoch
    real_save = torch.save

    class Killed(BaseException):
        pass

    def killed_while_writing_the_last(obj, f):
        if str(f).endswith("checkpoint.pt") and obj["epoch"] == best_epoch:
            Path(f).write_bytes(b"half a checkpoint")  # checkpoint-best.pt of this epoch is written
            raise Killed
        real_save(obj, f)

    monkeypatch.setattr(cep.checkpoint.torch, "save", killed_while_writing_the_last)
    cfg = TrialConfig(epochs=EPOCHS, out_dir=str(tmp_path), **TINY)
    with pytest.raises(Killed):
        run(cfg, tmp_path)
    assert load_state(tmp_path / "checkpoint-best.pt").epoch == best_epoch
    assert load_state(tmp_path / "checkpoint.pt").epoch == best_epoch - 1  # the previous one, whole
    monkeypatch.setattr(cep.checkpoint.torch, "save", real_save)
    resumed = run(cfg, tmp_path).state  # repeats the killed epoch and ends as the uninterrupted run
    same_state(resumed, state)
    same_state(load_state(tmp_path / "checkpoint-best.pt"), load_state(folder / "checkpoint-best.pt"))


def test_a_diverged_epoch_never_replaces_the_best(tmp_path):
    cfg = TrialConfig(epochs=4, out_dir=str(tmp_path), **TINY)
    member = Member(cfg, tmp_path)
    for trained in rounds([member]):  # each round is saved before it is yielded
        for e in trained:
            if e.state.epoch == 1:
                e.state.params.W[0][0, 0] = float("inf")  # what an exploding run looks like
    state = member.outcome.state
    assert state.status == "diverged" and state.epoch == 1  # epoch 1 is still the best: its state is kept
    best = load_state(tmp_path / "checkpoint-best.pt")
    assert best.epoch == 1 and best.params.all_finite() and best.status == "running"


def test_resume_from_without_out_keeps_the_original_run(whole, tmp_path, capsys, monkeypatch):
    """The default folder (runs/NAME-HASH) of a run continued from its own checkpoint-best.pt is the original
    run's (same fields): refused in one line, so the later epochs of that run are never rewritten."""
    from commands import one_line_exit_2

    folder, _ = whole
    monkeypatch.chdir(tmp_path)
    line = one_line_exit_2(["train", "--resume-from", str(folder / "checkpoint-best.pt"), "--quiet"], capsys)
    assert "--resume-from" in line and "--out" in line
    assert not (tmp_path / "runs").exists()
