"""`cep-sweep --trial ID --local` replays a packed trial exactly (its whole pack, same program), `--alone` does
not; a local run never writes into a sweep's experiment folder, and a finished folder run again stays as it was."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest
import yaml
from commands import run_cli

from cep.sweep.cli import main

SWEEP = """\
name: replay
description: a small float32 sweep whose C-VF trials train as one pack
base: {size_tab: [10, 32, 784], train_samples: 200, test_samples: 100, epochs: 2, T: 10, Kmax: 4,
       dataset: mnist5k, dtype: float32}
experiments:
  EP: {rule: ep, lr_tab: [0.05, 0.1]}
  C-VF: {rule: vf, continual: true, lr_tab: [0.01, 0.02], randbeta: 0.5, grid: {angle: [0, 90, 180]}}
grid:
  seed: [0]
resources: {cpu: 1, gpu: 0}
"""
CVF = ["C-VF/angle=0/seed=0", "C-VF/angle=90/seed=0", "C-VF/angle=180/seed=0"]
TIMING = ("epoch_seconds", "elapsed_seconds")


def numbers(folder: Path) -> list[dict[str, str]]:
    """metrics.csv as written (strings: bit-for-bit comparison), every column but the wall-clock ones."""
    with open(folder / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def sweep_exp(sweep_file, ray_address, tmp_path_factory):
    storage = tmp_path_factory.mktemp("storage")
    with pytest.raises(SystemExit) as e:
        main([str(sweep_file), "--storage", str(storage), "--no-aggregate", "--progress-interval", "0"])
    assert e.value.code == 0
    return storage / "replay"


@pytest.mark.ray
def test_local_replays_a_packed_member_bit_for_bit_and_alone_differs(sweep_exp, sweep_file, tmp_path, capsys):
    tid = CVF[1]
    local = tmp_path / "local"
    code, out, err = run_cli([str(sweep_file), "--trial", tid, "--local", "--out", str(local)], capsys)
    assert code == 0, err
    assert (f"the sweep trains this trial in a pack of 3 ({CVF[0]}+2): training that whole pack here (same members, "
            f"order and threads) to replay it exactly, showing this trial; the other 2 member(s)' results go to "
            f"{local / 'pack'}/<trial id>/") in out
    assert [ln.split()[1] for ln in out.splitlines() if ln.startswith("epoch ")] == ["1", "2"]  # this trial's only
    assert numbers(local) == numbers(sweep_exp / "trials" / tid)
    for other in (CVF[0], CVF[2]):  # the other members, beside it
        assert numbers(local / "pack" / other) == numbers(sweep_exp / "trials" / other)
    alone = tmp_path / "alone"
    code, out, err = run_cli([str(sweep_file), "--trial", tid, "--local", "--alone", "--out", str(alone)], capsys)
    assert code == 0, err
    assert "--alone: the sweep trains this trial in a pack of 3" in out and "within an epoch" in out
    assert not (alone / "pack").exists()
    mine, theirs = numbers(alone), numbers(sweep_exp / "trials" / tid)
    assert [r["epoch"] for r in mine] == ["1", "2"] and mine != theirs  # float32, another summation order
    # a finished local folder run again: nothing trained, every file (trial.log too) byte for byte as it was
    before = hashes(local)
    code, out, err = run_cli([str(sweep_file), "--trial", tid, "--local", "--out", str(local)], capsys)
    assert code == 0, err
    assert "already finished after epoch 2; nothing left to train" in out
    assert hashes(local) == before


@pytest.mark.ray
def test_local_never_writes_into_a_sweeps_experiment_folder(sweep_exp, sweep_file, capsys):
    before = hashes(sweep_exp)
    for target in (sweep_exp / "trials" / CVF[1], sweep_exp / "trials" / "EP" / "seed=0", sweep_exp / "elsewhere"):
        for extra in ([], ["--alone"]):
            code, out, err = run_cli([str(sweep_file), "--trial", CVF[1], "--local", *extra, "--out", str(target)],
                                     capsys)
            assert code == 2 and out == ""
            assert err == (f"error: --out {target}: inside the sweep experiment folder {sweep_exp} (it holds "
                           "sweep.json); a local run never writes into a sweep's results: choose a folder outside "
                           f"it (default runs/replay/{CVF[1]})\n")
    assert hashes(sweep_exp) == before and not (sweep_exp / "elsewhere").exists()


def test_out_inside_an_experiment_is_refused_before_anything_runs(sweep_file, tmp_path, capsys):
    """Without Ray: any folder below one holding sweep.json (a copied experiment too) is refused."""
    exp = tmp_path / "copied"
    (exp / "trials" / "EP" / "seed=0").mkdir(parents=True)
    (exp / "sweep.json").write_text("{}")
    (exp / "trials" / "EP" / "seed=0" / "summary.json").write_text('{"status": "finished"}')
    before = hashes(exp)
    link = tmp_path / "link"
    link.symlink_to(exp / "trials")
    for target in (exp / "trials" / "EP" / "seed=0", link / "EP" / "seed=0"):
        code, out, err = run_cli([str(sweep_file), "--trial", "EP/seed=0", "--local", "--out", str(target)], capsys)
        assert code == 2 and err.startswith(f"error: --out {target}: inside the sweep experiment folder ")
        assert len(err.splitlines()) == 1
    assert hashes(exp) == before


def test_alone_and_the_pack_replay_default_to_separate_folders():
    """An --alone run's own trajectory must never be resumed as the pack's replay (or the reverse)."""
    from cep.sweep.local import member_folders
    from cep.sweep.spec import parse_sweep

    spec = parse_sweep(yaml.safe_load(SWEEP))
    members = [spec.trial(i) for i in CVF]
    packed = member_folders(spec, members[1], members, None)
    alone = member_folders(spec, members[1], members[1:2], None, alone=True)
    assert packed == {i: Path("runs/replay") / i for i in CVF}
    assert alone == {CVF[1]: Path("runs/replay.alone") / CVF[1]}


def test_alone_needs_local(sweep_file, capsys):
    code, out, err = run_cli([str(sweep_file), "--alone"], capsys)
    assert code == 2 and err.startswith("error: --trial ID and --local go together")


def test_a_finished_folder_run_again_keeps_its_result_files(tmp_path):
    """The runner's replay of a trial that has ended leaves files that already record that end untouched."""
    from cep.config import TrialConfig
    from cep.runner import run

    cfg = TrialConfig(size_tab=(10, 8, 784), lr_tab=(0.05, 0.1), T=4, Kmax=2, train_samples=40, test_samples=20,
                      epochs=1, seed=0, dataset="mnist5k", checkpoint=True, out_dir=str(tmp_path))
    assert run(cfg, tmp_path).status == "finished"
    summary = json.loads((tmp_path / "summary.json").read_text())  # as written on another node (a sweep's)
    (tmp_path / "summary.json").write_text(json.dumps({**summary, "host": "node-7"}, indent=2) + "\n")
    before = {k: v for k, v in hashes(tmp_path).items() if k != "trial.log"}
    outcome = run(cfg, tmp_path)
    assert outcome.replayed
    assert {k: v for k, v in hashes(tmp_path).items() if k != "trial.log"} == before
    (tmp_path / "learning_curve.png").unlink()  # a file that is missing is written again
    run(cfg, tmp_path)
    assert (tmp_path / "learning_curve.png").exists()


# ------------------------------------------------- a collapse seen in test error
def rows(*errors: tuple[float, float]) -> list[dict[str, float]]:
    """A metrics history from (train error, test error) per epoch."""
    return [{"epoch": e, "train_error": tr, "test_error": te} for e, (tr, te) in enumerate(errors, 1)]


def test_a_collapse_seen_in_test_error_is_found_like_one_in_train_error():
    from cep.health import collapse_line, find_collapse

    learns = [(50, 40), (15, 12)]
    assert find_collapse(rows(*learns, (10, 95), (8, 96))) is None  # two epochs at chance: not yet
    assert find_collapse(rows(*learns, (10, 95), (8, 96), (9, 50), (7, 97), (6, 98))) is None  # not in a row
    assert find_collapse(rows((99, 99), (99, 98), (99, 99), (90, 90))) is None  # never learned (a 180° start)
    assert find_collapse(rows(*learns, (30, 95), (25, 96), (40, 97))) is None  # train error not low
    c = find_collapse(rows(*learns, (10, 95), (8, 96), (9, 91), (85, 90)))
    assert c == {"epoch": 5, "train_error_before": 15, "train_error_after": 9, "test_error_before": 12,
                 "test_error_after": 91, "epoch_before": 2, "seen_in": "test_error", "since_epoch": 3}
    assert collapse_line(c) == ("collapsed at epoch 5, seen in test error: test error 12.00% (epoch 2) -> 91.00%, "
                                "at chance level since epoch 3 while the train error is 9.00%")
    from cep.aggregate.summary import _collapse_words

    assert _collapse_words(c) == ("collapsed at epoch 5, seen in test error (test error 91.00%, at chance level "
                                  "since epoch 3, while the train error is 9.00%)")
    # whichever shows first: here the train error collapses (epoch 4) before three test epochs are at chance
    t = find_collapse(rows(*learns, (10, 95), (85, 96), (9, 91), (8, 90)))
    assert t["seen_in"] == "train_error" and t["epoch"] == 4
    assert collapse_line(t) == "collapsed at epoch 4: train error 10.00% (epoch 3) -> 85.00%"


@pytest.fixture
def test_labels_shifted(monkeypatch):
    """A run that learns while its evaluation is at chance: the test labels moved by one class."""
    import cep.train

    real = cep.train.load_data

    def shifted(cfg):
        data = real(cfg)
        data.y_test = (data.y_test + 1) % 10
        return data

    monkeypatch.setattr(cep.train, "load_data", shifted)


SMALL_EP = dict(rule="ep", size_tab=(10, 32, 784), lr_tab=(0.1, 0.2), T=10, Kmax=4, train_samples=20,
                test_samples=20, batch_size=10, seed=0, dataset="mnist5k", device="cpu")


def test_a_run_whose_test_error_collapses_is_flagged_and_stopped(test_labels_shifted, tmp_path, capsys):
    from cep.cli import execute
    from cep.config import TrialConfig
    from cep.results import read_folder

    cfg = TrialConfig(epochs=12, stop_on_collapse=True, checkpoint=True, out_dir=str(tmp_path), **SMALL_EP)
    assert execute(cfg, quiet=True) == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    c = summary["collapsed"]
    assert summary["status"] == "collapsed" and c["seen_in"] == "test_error"
    assert summary["epochs_done"] == c["epoch"] == c["since_epoch"] + 2 < 12
    assert set(c) >= {"epoch", "train_error_before", "train_error_after", "test_error_before", "test_error_after",
                      "epoch_before"}
    assert c["train_error_after"] <= 20 and c["test_error_after"] >= 80
    err = capsys.readouterr().err
    assert f"collapsed at epoch {c['epoch']}, seen in test error" in err and "stopped there (stop_on_collapse)" in err
    assert f"collapsed at epoch {c['epoch']}, seen in test error" in (tmp_path / "trial.log").read_text()
    folder = read_folder(tmp_path, "train", 12)
    assert folder.complete and folder.status == "collapsed"
    train_on = TrialConfig(epochs=c["epoch"] + 1, **SMALL_EP)  # without stop_on_collapse it trains on
    from trainer import train

    state = train(train_on)
    assert state.status == "finished" and state.info["collapsed"] == c


def test_the_live_table_says_a_collapse_was_seen_in_test_error():
    pytest.importorskip("ray")
    import io
    from types import SimpleNamespace

    from cep.sweep.progress import ProgressTable

    out = io.StringIO()
    table = ProgressTable({"a": 5}, interval=1e9, out=out)
    trial = SimpleNamespace(config={"trial_id": "a"}, trial_id="t0", num_failures=0)
    table.on_trial_start(0, [], trial)
    table.on_trial_result(0, [], trial, {"members": [
        {"id": "a", "epoch": 3, "epochs": 5, "train_error": 5.0, "test_error": 91.0, "status": "running",
         "collapsed_epoch": 3, "collapse_seen_in": "test_error"}]})
    assert ("! a: collapsed at epoch 3 (seen in test error: test error 91.00% at chance while train error 5.00%); "
            "training on") in out.getvalue()


# ------------------------------------------------------ pack: auto packs where it pays
def test_auto_packs_by_net_size_threads_and_device():
    from cep.cost import step_synapses
    from cep.presets import paper_config
    from cep.sweep.plan import auto_pack

    one, two, gpu = {"cpu": 1, "gpu": 0}, {"cpu": 2, "gpu": 0}, {"cpu": 1, "gpu": 0.25}
    for name in ("EP-1h", "C-EP-1h", "C-VF-1h", "EP-2h", "C-EP-2h", "C-VF-2h"):
        cfg = paper_config(name)
        small = name.endswith("1h")
        # measured (README, Packs): on 1 thread 1h packs pay and 2h packs are slower per trial; on 2 both pay
        assert auto_pack(cfg, one)[0] == (9 if small else 1), name
        assert auto_pack(cfg, two)[0] == 9 and auto_pack(cfg, gpu)[0] == 45, name
        assert auto_pack(cfg.replace(device="cuda"), one)[0] == 45
    assert step_synapses(paper_config("C-VF-1h")) == 2 * 512 * 10
    assert step_synapses(paper_config("EP-2h")) == 512 * 10 + 512 * 512
    wide = paper_config("C-VF-1h").replace(size_tab=(10, 2048, 784))  # break-even measured: alone
    narrow = paper_config("C-VF-2h").replace(size_tab=(10, 256, 256, 784))  # 2x slower packed: alone
    assert auto_pack(wide, one)[0] == auto_pack(narrow, one)[0] == 1
    assert "a pack would be slower per trial there than the trials alone" in auto_pack(narrow, one)[1]


MIXED = """\
name: mixed
base: {lr_tab: [0.1, 0.2], epochs: 1, train_samples: 40, test_samples: 20, dataset: mnist5k}
experiments:
  small: {size_tab: [10, 32, 784]}
  deep: {size_tab: [10, 512, 512, 784], lr_tab: [0.1, 0.2, 0.3]}
grid:
  seed: [0, 1, 2]
resources: {cpu: 1, gpu: 0}
"""


def test_dry_run_shows_what_auto_packing_chose(tmp_path, capsys):
    from cep.sweep.plan import make_packs, pack_sizes
    from cep.sweep.spec import load_sweep

    path = tmp_path / "mixed.yaml"
    path.write_text(MIXED)
    spec = load_sweep(path)
    assert [p.ids for p in make_packs(spec.trials, pack_sizes(spec))] == [
        ["small/seed=0", "small/seed=1", "small/seed=2"], ["deep/seed=0"], ["deep/seed=1"], ["deep/seed=2"]]
    two = load_sweep(path, ["resources.cpu=2"])
    assert [len(p.ids) for p in make_packs(two.trials, pack_sizes(two))] == [3, 3]
    pinned = load_sweep(path, ["pack=2"])  # pack: N is what the user asked for
    assert [len(p.ids) for p in make_packs(pinned.trials, pack_sizes(pinned))] == [2, 1, 2, 1]
    code, out, err = run_cli([str(path), "--dry-run", "--storage", str(tmp_path / "results")], capsys)
    assert code == 0, err
    assert "4 pack(s) of up to 9 trial(s) (pack: auto)" in out
    assert "pack: auto: small: up to 9 per pack (320 synapses per step: a small net, packs pay even on 1 CPU thread)" \
        in out
    assert ("pack: auto: deep: each trial alone (267k synapses per step on 1 CPU thread, above 32.8k: a pack would "
            "be slower per trial there than the trials alone; with 2+ CPUs per trial they pack)") in out
