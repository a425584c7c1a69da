"""Sweep files without Ray: parsing, validation messages, expansion, ids, selection, fingerprints, the shipped files."""

from __future__ import annotations

import json
import shlex
import textwrap
from pathlib import Path

import pytest
import yaml

from cep.cli import legacy_config
from cep.config import TrialConfig
from cep.cost import sample_steps
from cep.layout import SWEEP_FILE, trial_dir
from cep.presets import PAPER_EXPERIMENTS
from cep.safe_files import write_atomic
from cep.sweep.faults import parse_faults
from cep.sweep.plan import dry_run_table, fingerprint, make_packs, pack_size, select
from cep.sweep.spec import SweepError, format_value, load_sweep, parse_sets, parse_sweep
from cep.sweep.store import (
    check_experiment,
    delete_discarded,
    discard,
    grown_record,
    outcomes,
    resolve_trials,
    sweep_record,
    write_sweep_record,
)

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted((ROOT / "sweeps").glob("*.yaml"))
PAPER_FILES = ["fig4_table", "fig4_angles", "fig5a_angle_grad", "appendix_f2_debug_cep"]
GDU_FILES = ["fig5b_gdu", "appendix_e6_gdu"]
ANGLES = [0, 22.5, 45, 67.5, 90, 112.5, 135, 157.5, 180]
README = [ln for ln in (Path(__file__).parent / "seed_readme_commands.txt").read_text().splitlines()
          if ln.startswith("cep run ")]
# what a legacy command line leaves to the environment rather than to the experiment
NOT_HYPER = ("seed", "dataset", "data_dir", "out_dir", "device", "checkpoint")


def parse(text: str, overrides=()):
    return parse_sweep(yaml.safe_load(textwrap.dedent(text)), overrides)


def problems(text: str, overrides=()) -> list[str]:
    with pytest.raises(SweepError) as e:
        parse(text, overrides)
    return e.value.problems


def hyper(cfg: TrialConfig) -> dict:
    return {k: v for k, v in cfg.to_dict().items() if k not in NOT_HYPER}


# ------------------------------------------------------------- shipped files
def test_every_sweep_file_parses_validates_and_dry_runs():
    names = {p.stem for p in SWEEPS}
    assert {"quickstart", *PAPER_FILES, *GDU_FILES} <= names
    for path in SWEEPS:
        spec = load_sweep(path)
        assert spec.name == path.stem and spec.trials and spec.description
        table = dry_run_table(spec, spec.trials)
        assert f"{len(spec.trials)} trial(s) of sweep {spec.name}" in table and "sample-steps" in table
        assert all(sample_steps(t.config) > 0 for t in spec.trials)


def test_packs_group_trials_of_one_structure_in_order():
    spec = parse(GOOD)  # a GPU share per pack: auto is up to 45
    assert pack_size(spec) == 45 and pack_size(parse(GOOD, ["resources.gpu=0"])) == 9
    packs = make_packs(spec.trials, pack_size(spec))
    assert [p.ids for p in packs] == [["A/seed=0", "A/seed=1"], [t.id for t in spec.trials[2:]]]
    assert [p.id for p in packs] == ["A/seed=0+1", "B/angle=0/seed=0+3"]
    # at most `size` per pack; 1: every trial alone; a gdu trial is never packed
    assert [len(p.ids) for p in make_packs(spec.trials, 3)] == [2, 3, 1]
    assert [p.id for p in make_packs(spec.trials, 1)] == spec.ids
    assert parse(GOOD, ["pack=1"]).pack == 1 and pack_size(parse(GOOD, ["pack=1"])) == 1
    gdu = parse("name: g\nbase: {action: gdu, batch_size: 1}\ngrid: {seed: [0, 1]}")
    assert [len(p.ids) for p in make_packs(gdu.trials, 9)] == [1, 1]
    assert problems(GOOD + "pack: 0\n") == ["pack: got 0; auto, or the most trials per pack (1: every trial alone)"]
    table = dry_run_table(spec, spec.trials, packs)
    assert "2 pack(s) of up to 45 trial(s) (pack: auto)" in table
    assert [ln.split()[-1] for ln in table.splitlines()[2:8]] == ["1", "1", "2", "2", "2", "2"]


def test_paper_files_hold_exactly_the_published_hyperparameters():
    for stem in PAPER_FILES:
        spec = load_sweep(ROOT / "sweeps" / f"{stem}.yaml")
        for t in spec.trials:
            cfg = t.config
            assert cfg.dataset == "mnist" and cfg.setting == "discrete" and cfg.activation == "sigm"
            assert cfg.batch_size == 20 and cfg.train_samples is None and cfg.test_samples is None
            row = t.experiment.removeprefix("debug-")
            published = PAPER_EXPERIMENTS[row if stem != "appendix_f2_debug_cep" else row.replace("C-EP", "EP")]
            for key, value in published.items():
                if key == "continual" and stem == "appendix_f2_debug_cep":
                    assert cfg.continual and cfg.debug_cep
                    continue
                assert getattr(cfg, key) == value, (stem, t.id, key)
            assert cfg.angle_grad == (stem == "fig5a_angle_grad")


def test_paper_files_a_few_values_spelled_out():
    table = {t.id: t.config for t in load_sweep(ROOT / "sweeps/fig4_table.yaml").trials}
    assert len(table) == 30
    assert table["C-VF-2h/seed=4"].lr_tab == (0.00016, 0.0016, 0.009) and table["C-VF-2h/seed=4"].beta == 0.35
    assert table["EP-1h/seed=0"].epochs == 30 and table["EP-1h/seed=0"].T == 30 and table["EP-1h/seed=0"].Kmax == 10
    assert table["C-EP-2h/seed=2"].size_tab == (10, 512, 512, 784) and table["C-EP-2h/seed=2"].epochs == 150
    assert table["C-VF-1h/seed=1"].randbeta == 0.5 and table["C-VF-1h/seed=1"].continual
    angles = load_sweep(ROOT / "sweeps/fig4_angles.yaml")
    assert len(angles.trials) == 2 * 9 * 5
    assert sorted({t.config.angle for t in angles.trials}) == ANGLES
    assert angles.trials[0].id == "C-VF-1h/angle=0/seed=0" and angles.ids[3] == "C-VF-1h/angle=0/seed=3"
    assert "C-VF-2h/angle=67.5/seed=4" in angles.ids
    fig5a = load_sweep(ROOT / "sweeps/fig5a_angle_grad.yaml")
    assert all(t.config.angle_grad for t in fig5a.trials)
    assert {t.config.angle for t in fig5a.trials if t.config.rule == "ep"} == {0}
    assert len([t for t in fig5a.trials if t.experiment == "C-VF-2h"]) == 9 * 3


def test_every_file_trial_is_a_seed_readme_command():
    """Each trial of the paper and GDU files equals a seed README command line (spec section 7), but its seed/data."""
    readme = [hyper(legacy_config(shlex.split(line)[2:])) for line in README]
    for stem in PAPER_FILES + GDU_FILES:
        for t in load_sweep(ROOT / "sweeps" / f"{stem}.yaml").trials:
            h = hyper(t.config)
            if t.config.rule == "vf" and t.config.action == "train":
                h["angle"] = 0.0 if stem == "fig4_table" else h["angle"]
                candidates = [{**r, "angle": h["angle"]} for r in readme]
            else:
                candidates = readme
            assert h in candidates, (stem, t.id)


def test_gdu_files_cover_the_readme_plotcurves_lines():
    e6 = load_sweep(ROOT / "sweeps/appendix_e6_gdu.yaml")
    assert len(e6.trials) == 8 and all(t.config.action == "gdu" and t.config.batch_size == 1 for t in e6.trials)
    cont = {t.id: t.config for t in e6.trials}["C-VF-continuous"]
    assert (cont.setting, cont.no_clamp, cont.dt, cont.beta, cont.T, cont.Kmax, cont.activation) == (
        "continuous", True, 0.08, 0.005, 800, 80, "tanh")
    assert cont.lr_tab == (0.00002, 0.00002) and cont.continual and cont.rule == "vf"
    assert len(load_sweep(ROOT / "sweeps/fig5b_gdu.yaml").trials) == 3


def test_quickstart_is_small_and_offline():
    """A miniature of Fig. 4: EP-1h and C-VF-1h at 0, 90 and 180 degrees, 3 seeds, on the embedded data, and
    small enough for a few minutes on 2 cores (its cost bounded in the dry run's sample-steps)."""
    from cep.cost import sample_steps

    spec = load_sweep(ROOT / "sweeps/quickstart.yaml")
    assert spec.resources == {"cpu": 1.0, "gpu": 0.0}
    assert all(t.config.dataset == "mnist5k" and t.config.epochs <= 10 for t in spec.trials)
    assert sum(sample_steps(t.config) for t in spec.trials) <= 30e6
    assert spec.ids == [f"EP-1h/seed={s}" for s in range(3)] + [
        f"C-VF-1h/angle={a}/seed={s}" for a in (0, 90, 180) for s in range(3)]


# --------------------------------------------------------- ids and expansion
GOOD = """
name: demo
base: {size_tab: [10, 32, 784], lr_tab: [0.1, 0.2], epochs: 2}
experiments:
  A: {rule: ep}
  B: {rule: vf, continual: true, grid: {angle: [0, 22.5]}}
grid:
  seed: [0, 1]
resources: {cpu: 2, gpu: 0.5}
max_failures: 3
"""


def test_expansion_ids_order_and_values():
    spec = parse(GOOD)
    assert spec.ids == ["A/seed=0", "A/seed=1", "B/angle=0/seed=0", "B/angle=0/seed=1",
                        "B/angle=22.5/seed=0", "B/angle=22.5/seed=1"]
    b = spec.trial("B/angle=22.5/seed=1")
    assert b.grid == {"angle": 22.5, "seed": 1} and b.experiment == "B"
    assert b.config.rule == "vf" and b.config.angle == 22.5 and b.config.seed == 1 and b.config.epochs == 2
    assert spec.resources == {"cpu": 2.0, "gpu": 0.5} and spec.max_failures == 3


def test_ids_are_folder_safe():
    assert format_value(45.0) == "45" and format_value(22.5) == "22.5" and format_value(True) == "true"
    assert format_value([10, 512, 784]) == "10,512,784" and format_value(None) == "null"
    assert format_value("a/b c") == "a_b_c" and format_value("..") == "_.."
    spec = parse("""
        name: s
        base: {rule: vf}
        grid: {size_tab: [[10, 32, 784], [10, 64, 784]], lr_tab: [[0.1, 0.2]], device: ["cuda:1"]}
        resources: {gpu: 1}
    """)
    assert spec.ids == ["size_tab=10,32,784/lr_tab=0.1,0.2/device=cuda_1",
                        "size_tab=10,64,784/lr_tab=0.1,0.2/device=cuda_1"]
    # where a trial runs does not change what it computes (TrialConfig.result_differences): a duplicate
    assert "has exactly the configuration of trial device=cuda_1" in problems(
        "name: s\ngrid: {device: ['cuda:1', cpu]}\nresources: {gpu: 1}")[0]


def test_no_experiments_and_no_grid():
    assert parse("name: one\nbase: {epochs: 1}").ids == ["trial"]
    assert parse("name: g\ngrid: {seed: [3, 4]}").ids == ["seed=3", "seed=4"]


def test_set_overrides_are_typed_and_apply_to_every_trial():
    spec = parse(GOOD, ["epochs=1", "dataset=mnist", "train_samples=200", "beta=0.5", "continual=true",
                        "resources.gpu=0", "max_failures=0"])
    assert all(t.config.epochs == 1 and t.config.dataset == "mnist" and t.config.train_samples == 200
               and t.config.beta == 0.5 and t.config.continual for t in spec.trials)
    assert spec.resources["gpu"] == 0.0 and spec.max_failures == 0
    problems: list[str] = []
    assert parse_sets(["size_tab=[10, 64, 784]", "lr_tab=0.1,0.2", "seed=null", "resources.gpu=0.5",
                       "max_failures=3"], problems) == (
        {"size_tab": (10, 64, 784), "lr_tab": (0.1, 0.2), "seed": None}, {"resources": {"gpu": 0.5}, "max_failures": 3})
    assert problems == []


def test_only_selects_by_glob_or_prefix():
    spec = parse(GOOD)
    assert [t.id for t in select(spec.trials, ["A"])] == ["A/seed=0", "A/seed=1"]
    assert [t.id for t in select(spec.trials, ["B/*/seed=1"])] == ["B/angle=0/seed=1", "B/angle=22.5/seed=1"]
    assert len(select(spec.trials, ["A/seed=0", "B/angle=0"])) == 3
    with pytest.raises(SweepError, match="--only C: matches no trial; ids look like A/seed=0"):
        select(spec.trials, ["C"])


def test_fingerprint_follows_the_trials_not_their_locations(tmp_path):
    spec = parse(GOOD)
    fp = fingerprint(spec.trials)
    assert fp == fingerprint(parse(GOOD).trials)
    assert fp == fingerprint(resolve_trials(spec.trials, tmp_path / "elsewhere"))
    assert fp != fingerprint(parse(GOOD, ["epochs=3"]).trials)
    assert fp != fingerprint(spec.trials[:-1])


def test_experiment_folder_refuses_a_changed_sweep(tmp_path):
    spec = parse(GOOD)
    exp = tmp_path / "demo"
    trials = resolve_trials(spec.trials, exp)
    assert check_experiment(exp, trials) is None
    assert trials[0].config.out_dir == str(trial_dir(exp, "A/seed=0")) and trials[0].config.checkpoint
    write_sweep_record(exp, sweep_record(spec, trials))
    record = json.loads((exp / SWEEP_FILE).read_text())
    assert record["fingerprint"] == fingerprint(trials) and record["trials"][2]["id"] == "B/angle=0/seed=0"
    assert record["trials"][2]["grid"] == {"angle": 0.0, "seed": 0} and record["trials"][2]["config"]["rule"] == "vf"
    assert check_experiment(exp, trials)["name"] == "demo"
    changed = resolve_trials(parse(GOOD, ["epochs=1", "beta=0.3"]).trials, exp)  # fewer epochs: not a growth
    with pytest.raises(SweepError) as e:
        check_experiment(exp, changed)
    assert "different trial list (6 trial(s) changed (e.g. A/seed=0: beta 0.1 -> 0.3, epochs 2 -> 1))" \
        in e.value.problems[0]
    assert "--restart" in e.value.problems[0] and "--name" in e.value.problems[0]
    grown = resolve_trials(parse(GOOD, ["epochs=5"]).trials, exp)
    write_sweep_record(exp, sweep_record(spec, trials[:4]))  # two trials fewer, fewer epochs: it grows
    record = check_experiment(exp, grown)
    new = grown_record(record, spec, grown)
    assert new is not None and new["created"] == record["created"]
    assert new["grown"][-1]["what"] == "2 trial(s) added (e.g. B/angle=22.5/seed=0); 4 trial(s) with more epochs " \
        "(e.g. A/seed=0)"
    assert [t["id"] for t in new["trials"]] == [t.id for t in grown]
    assert grown_record(new, spec, grown) is None
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("")
    with pytest.raises(SweepError, match="not a cep-sweep experiment"):
        check_experiment(tmp_path / "other", trials)


def test_completion_is_read_from_the_trial_folders(tmp_path):
    spec = parse(GOOD)
    trials = resolve_trials(spec.trials[:5], tmp_path)
    states = [{"status": "finished", "epochs_done": 2, "final": {"test_error": 9.5}},
              {"status": "diverged", "epochs_done": 1, "diverged_at_epoch": 2},
              {"status": "running", "epochs_done": 1}, {"status": "running", "epochs_done": 1}, None]
    for t, s in zip(trials, states, strict=True):
        if s is not None:
            write_atomic(Path(t.config.out_dir) / "summary.json", json.dumps(s))
    write_atomic(Path(trials[3].config.out_dir) / "error.txt", "Traceback ...\nValueError: boom\n")
    write_atomic(Path(trials[0].config.out_dir) / "metrics.csv", "epoch,test_error\n1,9.9\n2,9.5\n")
    write_atomic(Path(trials[1].config.out_dir) / "metrics.csv", "epoch,test_error\n1,9.9\n")
    got = [(o.status, o.complete, o.detail(trial_dir(tmp_path, i)).split(" (see")[0])
           for i, o in outcomes(tmp_path, trials).items()]
    assert got == [("finished", True, ""), ("diverged", True, "diverged at epoch 2"),
                   ("interrupted", False, "stopped after epoch 1 of 2"), ("errored", False, "ValueError: boom"),
                   ("pending", False, "")]


def test_restart_discards_only_sweep_folders(tmp_path):
    spec = parse(GOOD)
    exp = tmp_path / "demo"
    trials = resolve_trials(spec.trials, exp)
    write_sweep_record(exp, sweep_record(spec, trials))
    for t in trials:
        Path(t.config.out_dir).mkdir(parents=True)
    assert delete_discarded(discard(exp, ["A/seed=0"])) == ""
    assert not trial_dir(exp, "A/seed=0").exists() and trial_dir(exp, "A/seed=1").exists()
    assert delete_discarded(discard(exp)) == ""
    assert not exp.exists() and list(tmp_path.iterdir()) == []
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("")
    with pytest.raises(SweepError, match="not a cep-sweep experiment"):
        discard(tmp_path / "mine")
    assert (tmp_path / "mine" / "thesis.tex").exists()


def test_fault_spec():
    assert parse_faults("A/*:2") [0].times == 1
    f = parse_faults("A/*:2:always;B:1:3")
    assert (f[0].pattern, f[0].epoch, f[0].times) == ("A/*", 2, None) and f[1].times == 3
    assert not f[0].pack and [(g.times, g.pack) for g in parse_faults("A:3:pack;B:1:always:pack")] == [(1, True),
                                                                                                 (None, True)]
    with pytest.raises(SweepError, match="test-only"):
        parse_faults("A")


# ------------------------------------------------------------- bad files
def test_lr_tab_length_names_its_yaml_path():
    lines = problems("""
        name: bad
        experiments:
          C-VF-2h: {rule: vf, size_tab: [10, 512, 512, 784], lr_tab: [0.1, 0.2]}
        grid: {seed: [0, 1]}
    """)
    assert lines == ["experiments.C-VF-2h.lr_tab: 3 values needed for size_tab [10, 512, 512, 784] "
                     "(one per weight matrix, output-first), got 2"]


def test_every_kind_of_problem_is_one_line_with_its_path():
    lines = problems("""
        name: bad name
        descripton: typo
        epochs: 3
        base: {epoch: 3, beta: high, size_tab: 5}
        experiments:
          A: {rule: ep, grid: {angle: [0, 45]}}
          B: [1, 2]
        grid:
          seed: []
          T: 10
        resources: {cpu: 0, tpu: 1}
        max_failures: -1
    """, ["epochs", "Kmax=lots", "nope=1"])
    expected = [
        "descripton: unknown key; did you mean description?",
        "epochs: unknown key; trial fields go under base: (or an experiment)",
        "name: got 'bad name'; use letters, digits and . _ + -, starting with a letter or digit (it becomes a "
        "folder name)",
        "base.epoch: unknown trial field 'epoch'; did you mean epochs?",
        "base.beta: got 'high'; expected a number",
        "base.size_tab: got 5; give a non-empty list of integers",  # wording of cep.config
        "grid.seed: empty list gives no trials; give at least one value or remove seed",
        "grid.T: expected a list of values, e.g. [10], got 10; a single value belongs in base",
        "resources.cpu: got 0; each trial needs a positive number of CPUs, e.g. 1",
        "resources.tpu: unknown resource; did you mean gpu?",
        "max_failures: got -1; a non-negative integer (retries per trial)",
        "--set epochs: expected key=value, e.g. --set epochs=1",
        "--set Kmax: got 'lots'; expected an integer",
        "--set nope: unknown trial field 'nope'; did you mean no_clamp?",
        "experiments.B: expected a mapping of trial fields, got a list [1, 2]",
        # found in the same pass (issue #19): the trials of what could be read are checked too
        "experiments.A.grid.angle: got 45.0 with rule ep; weight angles need rule vf (ep ties the feedback to the "
        "forward weights) (trial A/angle=45)",
    ]
    assert lines == expected


def test_trial_level_problems_name_the_grid_and_the_trials():
    lines = problems("""
        name: bad
        base: {size_tab: [10, 32, 784], lr_tab: [0.1, 0.2]}
        experiments:
          EP: {rule: ep}
        grid: {angle: [0, 45], seed: [0, 1]}
    """)
    assert lines == ["grid.angle: got 45.0 with rule ep; weight angles need rule vf (ep ties the feedback to the "
                     "forward weights) (trials EP/angle=45/seed=0, EP/angle=45/seed=1)"]


def test_duplicates_are_refused():
    assert problems("name: d\ngrid: {seed: [0, 1, 0]}") == ["grid.seed[2]: value 0 is listed twice; remove the repeat"]
    lines = problems("""
        name: d
        experiments:
          A: {rule: ep, epochs: 2}
          B: {epochs: 2}
        grid: {seed: [0]}
    """)
    assert lines == ["experiments.B: trial B/seed=0 has exactly the configuration of trial A/seed=0 (a duplicate); "
                     "remove one or make them differ (e.g. another seed)"]
    assert problems("name: d\nexperiments: {}") == [
        "experiments: empty; list at least one named experiment or remove the key"]


def test_conflicting_keys_and_gpu_devices():
    lines = problems("""
        name: c
        base: {seed: 1, device: cuda}
        experiments:
          A: {angle: 0}
        grid: {seed: [0], angle: [0]}
    """, ["seed=3"])
    assert "base.seed: also a grid key; remove one of them" in lines
    assert any(ln.startswith("experiments.A.angle: also a grid key") for ln in lines)
    assert any(ln.startswith("--set seed: seed is a grid key of this sweep") for ln in lines)
    lines = problems("name: c\nbase: {device: cuda}")
    assert lines[0].startswith("resources.gpu: 0, but trials ask for device cuda")


def test_yaml_level_problems(tmp_path):
    dup = tmp_path / "dup.yaml"
    dup.write_text("name: x\nexperiments:\n  A: {epochs: 1}\n  A: {epochs: 2}\n")
    with pytest.raises(SweepError) as e:
        load_sweep(dup)
    assert e.value.problems == [f"{dup}: line 4: key 'A' repeats the one on line 3; keep one"]
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [x\n")
    with pytest.raises(SweepError, match=r"broken.yaml: line 2, column 1: invalid YAML"):
        load_sweep(broken)
    with pytest.raises(SweepError, match="cannot read the sweep file"):
        load_sweep(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(SweepError, match="expected a mapping with name"):
        load_sweep(tmp_path / "list.yaml")


def test_ray_address_from_the_environment_counts_as_address(tmp_path, monkeypatch, capsys):
    """`ray job submit` passes the cluster as $RAY_ADDRESS: it must get the same shared-storage check as --address."""
    from cep.sweep.cli import main

    sweep = tmp_path / "s.yaml"
    sweep.write_text("name: s\nbase: {dataset: mnist5k}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    with pytest.raises(SystemExit) as e:
        main([str(sweep), "--storage", "relative/results"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: --storage relative/results: with RAY_ADDRESS set, every node")
    assert not (tmp_path / "relative").exists()


def test_dry_run_shows_the_packs_and_their_calibrated_time(tmp_path, capsys):
    """--dry-run times a few minibatches of each pack's program here; it writes nothing."""
    from cep.sweep.cli import main

    sweep = tmp_path / "s.yaml"
    sweep.write_text(textwrap.dedent(GOOD).replace("gpu: 0.5", "gpu: 0").replace("epochs: 2", "epochs: 2, T: 5, "
                                                                                  "Kmax: 2, train_samples: 200"))
    with pytest.raises(SystemExit) as e:
        main([str(sweep), "--dry-run", "--storage", str(tmp_path / "results")])
    out = capsys.readouterr().out
    assert e.value.code == 0
    assert "2 pack(s) of up to 9 trial(s) (pack: auto)" in out and "estimated time per pack" in out
    rows = [ln.split() for ln in out.split("estimated time per pack")[1].splitlines() if ln.startswith(("1 ", "2 "))]
    assert [r[:3] for r in rows] == [["1", "A/seed=0+1", "2"], ["2", "B/angle=0/seed=0+3", "4"]]
    assert all(r[-1].endswith("s") and r[-1][:-1].isdigit() for r in rows)  # 2 epochs of 200 images: seconds
    assert not (tmp_path / "results").exists()
