"""The one trial runner: resume from the newest readable state, refuse another configuration, report every epoch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from trial_files import log_lines, metrics

from cep.checkpoint import load_state, new_state, save_state
from cep.config import TrialConfig
from cep.member import Member
from cep.results import CHECKPOINT_FILE, read_folder
from cep.runner import ResumeError, resume, resume_pack, rounds, run, run_pack

SMALL = dict(size_tab=(10, 8, 784), lr_tab=(0.05, 0.1), T=5, Kmax=2, train_samples=60, test_samples=30,
             dataset="mnist5k", seed=3, device="cpu")


def test_a_damaged_saved_state_falls_back_to_the_other_copy(tmp_path):
    """Tune's checkpoint and checkpoint.pt are two copies: resume from whichever can be read, else say so."""
    folder = tmp_path / "trial"
    cfg = TrialConfig(**SMALL, epochs=5, checkpoint=True, out_dir=str(folder))
    folder.mkdir()
    good = new_state(cfg, torch.device("cpu"))
    good.epoch = 2
    save_state(good, tmp_path / "tune_state.pt")
    (folder / CHECKPOINT_FILE).write_bytes(b"truncated by a crash")
    hint = "rerun cep-sweep with --restart --only TRIAL to start it afresh"
    resumed = resume(cfg, folder, [("Tune checkpoint", tmp_path / "tune_state.pt")], hint)
    assert resumed.source == "Tune checkpoint" and resumed.epoch == 2
    assert "warning: cannot read checkpoint.pt" in (folder / "trial.log").read_text()
    (tmp_path / "tune_state.pt").write_bytes(b"also damaged")
    with pytest.raises(ResumeError, match=r"cannot read any saved state of trial .*--restart --only TRIAL"):
        resume(cfg, folder, [("Tune checkpoint", tmp_path / "tune_state.pt")], hint)


def test_the_newest_state_wins_and_only_run_fields_may_differ(tmp_path):
    folder = tmp_path / "trial"
    cfg = TrialConfig(**SMALL, epochs=5, checkpoint=True, out_dir=str(folder))
    older = new_state(cfg, torch.device("cpu"))
    older.epoch = 1
    newer = new_state(cfg, torch.device("cpu"))
    newer.epoch = 3
    folder.mkdir()
    save_state(older, tmp_path / "other.pt")
    save_state(newer, folder / CHECKPOINT_FILE)
    assert resume(cfg, folder, [("other", tmp_path / "other.pt")]).source == CHECKPOINT_FILE
    # where it runs and reads does not change what it computes: the state continues, with the new places
    moved = cfg.replace(data_dir=str(tmp_path / "elsewhere"), device="auto", seed=None)
    resumed = resume(moved, folder)
    assert resumed.epoch == 3 and resumed.state.config.data_dir == str(tmp_path / "elsewhere")
    assert resumed.state.config.seed == 3  # the saved seed stands in for "draw one"
    with pytest.raises(ResumeError, match=r"belongs to a different configuration \(beta, dtype differ\)"):
        resume(cfg.replace(beta=0.3, dtype="float64"), folder)
    # without cfg.checkpoint the folder's checkpoint is not a candidate
    assert resume(cfg.replace(checkpoint=False), folder).state is None


def run_with(cfg, folder, each_epoch):
    """A trial alone through the runner's rounds, `each_epoch(metrics, state)` after each saved epoch."""
    member = Member(cfg, folder)
    for trained in rounds([member]):
        for e in trained:
            each_epoch(e.metrics, e.state)
    return member.outcome


def test_the_diverging_epoch_is_reported_and_saved_and_a_rerun_replays_it(tmp_path):
    folder = tmp_path / "trial"
    cfg = TrialConfig(**SMALL, epochs=4, checkpoint=True, out_dir=str(folder))
    seen = []

    def poison_after_first_epoch(m, state):
        seen.append((m["epoch"], m["status"]))
        if state.epoch == 1:
            state.params.W[0][0, 0] = float("inf")  # what an exploding run looks like

    outcome = run_with(cfg, folder, poison_after_first_epoch)
    assert outcome.status == "diverged" and not outcome.replayed
    assert seen == [(1, "running"), (1, "diverged")]  # the last finite metrics, once more, with the new status
    saved = load_state(folder / CHECKPOINT_FILE)
    assert saved.status == "diverged" and saved.epoch == 1
    st = read_folder(folder, "train", 4)
    assert st.status == "diverged" and st.complete and st.epochs_done == 1
    assert json.loads((folder / "summary.json").read_text())["diverged_at_epoch"] == 2
    before = metrics(folder)
    again = run_with(cfg, folder, lambda m, s: seen.append("trained"))
    assert again.replayed and again.status == "diverged" and "trained" not in seen
    assert metrics(folder) == before
    lines = log_lines(folder)
    assert lines[0].startswith("start after epoch 0") and lines[1] == "epoch 1 done: test error " + \
        f"{float(before[0]['test_error']):.2f}%"
    assert lines[2] == "end: diverged after epoch 1" and lines[3].startswith("replay: already diverged after epoch 1")


def test_a_run_that_fails_before_its_first_epoch_leaves_no_folder(tmp_path, monkeypatch):
    folder = tmp_path / "never"

    def fail(*args, **kwargs):  # in the first round
        raise RuntimeError("boom")

    monkeypatch.setattr("cep.runner.train_round", fail)
    with pytest.raises(RuntimeError, match="boom"):
        run(TrialConfig(**SMALL, out_dir=str(folder)), folder)
    assert not folder.exists()


def test_a_pack_resumes_in_step_from_the_copy_of_the_same_round(tmp_path):
    """A kill while a pack saves its members can leave one a round ahead: it continues from its copy of the
    round the others stand at (the pack's Tune checkpoint), so the pack runs as it would have."""
    cfgs = [TrialConfig(**{**SMALL, "seed": s}, epochs=5, checkpoint=True, out_dir=str(tmp_path / f"m{s}"))
            for s in (1, 2)]
    members = [Member(c, Path(c.out_dir)) for c in cfgs]
    states = [new_state(c, torch.device("cpu")) for c in cfgs]
    for st, m in zip(states, members, strict=True):
        st.epoch = 2
        m.folder.mkdir()
        save_state(st, tmp_path / f"tune-{m.folder.name}.pt")  # the pack's last complete round
        save_state(st, m.folder / CHECKPOINT_FILE)
    states[0].epoch = 3
    save_state(states[0], members[0].folder / CHECKPOINT_FILE)  # member 0 saved round 3, member 1 did not
    saved = {str(m.folder): [("Tune checkpoint", tmp_path / f"tune-{m.folder.name}.pt")] for m in members}
    resume_pack(members, saved)
    assert [m.resumed.epoch for m in members] == [2, 2]
    assert members[0].resumed.source == "Tune checkpoint"
    resume_pack(members, {})  # without the older copy: each continues from its newest state
    assert [m.resumed.epoch for m in members] == [3, 2]


class _RunsCode:
    """Pickles into a call of os.system: what a crafted checkpoint.pt would hold."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("content", ["crafted", "empty", "truncated", "garbage", "a list", "foreign keys"])
def test_a_checkpoint_that_is_not_a_valid_state_is_refused_and_never_runs_code(content, tmp_path):
    """Checkpoints are loaded with weights_only=True: a crafted file cannot run code, and every damaged
    file is one ResumeError naming it (exit 2 in `cep`)."""
    folder = tmp_path / "trial"
    folder.mkdir()
    cfg = TrialConfig(**SMALL, checkpoint=True, out_dir=str(folder))
    ckpt = folder / CHECKPOINT_FILE
    marker = tmp_path / "code-ran"
    good = new_state(cfg, torch.device("cpu"))
    if content == "crafted":
        torch.save({**good.to_dict(), "info": {"x": _RunsCode(marker)}}, ckpt)
    elif content == "empty":
        ckpt.write_bytes(b"")
    elif content == "truncated":
        save_state(good, ckpt)
        ckpt.write_bytes(ckpt.read_bytes()[:300])
    elif content == "garbage":
        ckpt.write_bytes(bytes(range(256)) * 10)
    elif content == "a list":
        torch.save([1, 2, 3], ckpt)
    else:
        torch.save({"weights": torch.zeros(3)}, ckpt)
    with pytest.raises(ResumeError) as e:
        resume(cfg, folder)
    assert not marker.exists()
    assert str(ckpt) in str(e.value) and "not a valid checkpoint" in str(e.value)
    assert "\n" not in str(e.value)
    if content == "crafted":  # the refused object, not torch's advice to load the file unsafely
        assert "refused by the safe loader: a Python object posix.system" in str(e.value)
        assert "weights_only" not in str(e.value)


def test_a_saved_state_holds_only_tensors_and_plain_values(tmp_path):
    import numpy as np

    cfg = TrialConfig(**SMALL, checkpoint=True)
    state = new_state(cfg, torch.device("cpu"))
    state.info["numpy"] = np.float64(1.5)  # e.g. a measured value computed with numpy
    state.info["pair"] = (1, 2)
    save_state(state, tmp_path / "s.pt")
    torch.load(tmp_path / "s.pt", weights_only=True)
    assert load_state(tmp_path / "s.pt").info["numpy"] == 1.5


def test_more_epochs_continue_a_finished_run_exactly(tmp_path):
    """`cep train --checkpoint --epochs 5` after a 3-epoch run: epochs 4-5 equal those of a 5-epoch run."""
    folder, whole = tmp_path / "grown", tmp_path / "whole"
    cfg = TrialConfig(**SMALL, rule="vf", continual=True, randbeta=0.5, angle=30, checkpoint=True)
    run(cfg.replace(epochs=3, out_dir=str(folder)), folder)
    grown = run(cfg.replace(epochs=5, out_dir=str(folder)), folder)
    assert not grown.replayed and grown.status == "finished" and grown.state.epoch == 5
    run(cfg.replace(epochs=5, out_dir=str(whole)), whole)
    assert metrics(folder) == metrics(whole)
    assert read_folder(folder, "train", 5).status == "finished"
    assert json.loads((folder / "summary.json").read_text())["epochs"] == 5
    assert run(cfg.replace(epochs=5, out_dir=str(folder)), folder).replayed
    with pytest.raises(ResumeError, match="has 5 epochs done, more than the 4 asked"):
        resume(cfg.replace(epochs=4), folder)
    with pytest.raises(ResumeError, match=r"different configuration \(beta differ\)"):
        resume(cfg.replace(epochs=6, beta=0.3), folder)


def test_summary_records_the_provenance_of_the_run(tmp_path):
    import platform

    folder = tmp_path / "trial"
    run(TrialConfig(**SMALL, out_dir=str(folder)), folder)
    prov = json.loads((folder / "summary.json").read_text())["provenance"]
    assert set(prov) == {"cep", "git_commit", "python", "torch", "ray", "host", "device", "dtype"}
    assert prov["torch"] == torch.__version__.split("+")[0] and prov["python"] == platform.python_version()
    assert prov["device"] == "cpu" and prov["dtype"] == "float32" and prov["host"]


def _pack_of_3(folder: Path) -> list[Member]:
    cfgs = [TrialConfig(**{**SMALL, "seed": s}, epochs=3, dtype="float64", checkpoint=True,
                        out_dir=str(folder / f"m{s}")) for s in (1, 2, 3)]
    return [Member(c, Path(c.out_dir)) for c in cfgs]


def _numbers(m: Member) -> list[dict]:
    return [{k: v for k, v in h.items() if "seconds" not in k} for h in m.state.history]


def test_a_members_own_failure_ends_it_alone_and_the_others_train_on_bit_for_bit(tmp_path):
    """Its checkpoint cannot be written after epoch 1: that member alone ends (errored, its epoch 2 not saved);
    the pack trains on without it, and the others' numbers and weights are bit-equal (float64) to the same
    pack never failing; the end of the rounds raises its error."""
    whole = _pack_of_3(tmp_path / "whole")
    run_pack(whole)
    members = _pack_of_3(tmp_path / "failing")
    seen = []
    with pytest.raises(IsADirectoryError):
        for trained in rounds(members):
            seen.append([e.id for e in trained])
            if len(seen) == 1:
                (members[1].folder / CHECKPOINT_FILE).unlink()
                (members[1].folder / CHECKPOINT_FILE).mkdir()  # its own checkpoint path is now unusable
    ids = [m.id for m in members]
    assert seen == [ids, ids[::2], ids[::2]]
    assert members[1].outcome.status == "errored" and isinstance(members[1].error, IsADirectoryError)
    assert [r["epoch"] for r in metrics(members[1].folder)] == ["1"]
    for k in (0, 2):
        assert members[k].outcome.status == "finished" and _numbers(members[k]) == _numbers(whole[k])
        for a, b in zip(members[k].state.params.tensors(), whole[k].state.params.tensors(), strict=True):
            assert torch.equal(a, b)
        assert log_lines(members[k].folder)[-1] == "end: finished after epoch 3"


def test_a_failure_of_memory_or_the_device_is_the_packs(tmp_path, monkeypatch):
    """Out of memory while one member saves: not that member's own, the pack stops at once (nothing trains on)."""
    members = _pack_of_3(tmp_path)
    real = save_state

    def save(state, path):
        if Path(path).parent == members[1].folder and state.epoch == 2:
            raise torch.OutOfMemoryError("out of memory")
        real(state, path)

    monkeypatch.setattr("cep.runner.save_state", save)
    with pytest.raises(torch.OutOfMemoryError):
        for _ in rounds(members):
            pass
    assert all(m.error is None and m.outcome is None for m in members)
    assert [m.state.epoch for m in members] == [2, 2, 2]
    assert [len(metrics(m.folder)) for m in members] == [1, 1, 1]


def test_a_member_that_has_ended_is_not_rewound_to_the_others_epoch(tmp_path):
    """A member that failed alone stays behind the ones that finished: they are replayed, not trained again."""
    cfgs = [TrialConfig(**{**SMALL, "seed": s}, epochs=2, checkpoint=True, out_dir=str(tmp_path / f"m{s}"))
            for s in (1, 2)]
    members = [Member(c, Path(c.out_dir)) for c in cfgs]
    for st, m in zip([new_state(c, torch.device("cpu")) for c in cfgs], members, strict=True):
        m.folder.mkdir()
        st.epoch = 1
        save_state(st, m.folder / "checkpoint-previous.pt")
        st.epoch, st.status = (2, "finished") if m is members[0] else (1, "running")
        save_state(st, m.folder / CHECKPOINT_FILE)
    resume_pack(members, {})
    assert [m.resumed.epoch for m in members] == [2, 1]
