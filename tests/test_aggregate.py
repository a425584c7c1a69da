"""The aggregator on experiment directories built here: numbers, statuses, determinism, figures, the command."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import pytest
import yaml

from cep.aggregate.cli import aggregate_command
from cep.aggregate.figdata import fig5a_points, paper_fig5a
from cep.aggregate.published import load_published
from cep.aggregate.read import load_experiment
from cep.aggregate.summary import aggregate_experiment, terminal_report
from cep.health import find_collapse
from cep.presets import PAPER_EXPERIMENTS, paper_config
from cep.results import metrics_csv

# ------------------------------------------------------------------ builder


def small_config(**fields: Any) -> dict[str, Any]:
    """A tiny trial config as the sweep driver would store it (the full TrialConfig dict)."""
    base = dict(rule="vf", continual=True, size_tab=[10, 16, 784], lr_tab=[0.01, 0.02], epochs=3, T=5, Kmax=2,
                beta=0.2, randbeta=0.5, dataset="mnist5k", train_samples=200)
    return paper_config("C-VF-1h").replace(**{**base, **fields}).to_dict()


def history(epochs: int, test0: float, train0: float) -> list[dict[str, float]]:
    return [dict(epoch=e, train_error=train0 / e, test_error=test0 / e, train_loss=0.1 / e, test_loss=0.2 / e,
                 epoch_seconds=1.0, elapsed_seconds=float(e)) for e in range(1, epochs + 1)]


class ExperimentBuilder:
    """Writes sweep.json and trial folders in the driver's layout (see the aggregator's contract)."""

    def __init__(self, root: Path, name: str = "test_sweep"):
        self.root = root / name
        self.root.mkdir(parents=True)
        self.name = name
        self.trials: list[dict[str, Any]] = []

    def trial_id(self, experiment: str, grid: dict[str, Any]) -> str:
        return "/".join([experiment] + [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in grid.items()])

    def add(self, experiment: str, grid: dict[str, Any], config: dict[str, Any], status: str | None = "finished",
            hist: list[dict[str, float]] | None = None, info: dict[str, Any] | None = None,
            error: str | None = None, files: tuple[str, ...] = ("config", "metrics", "summary")) -> str:
        """status None: the trial has not started (no folder)."""
        config = {**config, **grid}
        tid = self.trial_id(experiment, grid)
        self.trials.append({"id": tid, "experiment": experiment, "grid": grid, "config": config})
        if status is None:
            return tid
        path = self.root / "trials" / tid
        path.mkdir(parents=True)
        hist = hist or []
        if "config" in files:
            (path / "config.yaml").write_text(yaml.safe_dump(config))
        if "metrics" in files:
            (path / "metrics.csv").write_text(metrics_csv(hist))
        if "summary" in files:
            last = hist[-1] if hist else {}
            tests = [h["test_error"] for h in hist if math.isfinite(h["test_error"])]
            # a finished trial has done every epoch, even where the fixture lists fewer rows of metrics
            done = config["epochs"] if status == "finished" else len(hist)
            summary = {"status": status, "epochs_done": done, "epochs": config["epochs"],
                       "final": {k: (last.get(k) if last.get(k) is None or math.isfinite(last[k]) else None)
                                 for k in ("train_error", "test_error", "train_loss", "test_loss")},
                       "best_test_error": min(tests) if tests else None, "seed": config["seed"], **(info or {}),
                       "wall_seconds": 3.5, "host": "testhost", "config": config}
            (path / "summary.json").write_text(json.dumps(summary))
        if error is not None:
            (path / "error.txt").write_text(error)
        return tid

    def write(self) -> Path:
        (self.root / "sweep.json").write_text(json.dumps(
            {"name": self.name, "description": "built by the tests", "fingerprint": "x", "created": "2025-01-01",
             "cep_version": "0.1.0", "sweep_file": "test.yaml", "trials": self.trials}))
        return self.root


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def fmt(values: list[float], digits: int = 2) -> str:
    """mean ± std as the table shows it, computed independently (numpy, ddof=1)."""
    a = np.array(values, dtype=float)
    m, s = f"{a.mean():.{digits}f}", f"{a.std(ddof=1) if len(a) > 1 else 0:.{digits}f}"
    return m if len(a) == 1 else f"{m} ± {s}"


def table_rows(md: str) -> dict[str, list[str]]:
    """The Fig. 4 table of table.md, as {row label: cells}."""
    rows = {}
    for line in md.splitlines():
        if line.startswith("| ") and not line.startswith("| Experiment") and "---" not in line:
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            rows[cells[0]] = cells
    return rows


# ------------------------------------------------------------------ fixtures
@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """Two experiments: EP-1h (3 seeds finished, 1 NaN), C-VF-1h over 3 angles with every kind of trouble."""
    b = ExperimentBuilder(tmp_path)
    ep = small_config(rule="ep", continual=False, randbeta=0.0)
    for seed, (te, tr) in enumerate([(9.0, 12.0), (10.5, 11.0), (7.2, 13.0)]):
        b.add("EP-1h", {"seed": seed}, ep, hist=history(3, te, tr), info={"angle_grad": 10.0 + seed})
    nan_hist = history(3, 8.0, 8.0)
    nan_hist[-1].update(test_error=math.nan, train_error=math.nan)
    b.add("EP-1h", {"seed": 3}, ep, hist=nan_hist, info={"angle_grad": 14.0})  # finished, NaN final metrics
    vf = small_config()
    for angle in (0.0, 90.0, 180.0):
        for seed in range(3):
            grid = {"angle": angle, "seed": seed}
            info = {"measured_angle": [angle + 0.5, angle + 1.5], "angle_grad": 40.0 + angle / 2 + seed}
            h = history(3, 20.0 + angle / 10 + seed, 25.0 + angle / 10 + 2 * seed)
            if angle == 90.0 and seed == 1:
                b.add("C-VF-1h", grid, vf, status="running", hist=h[:1], info=info)  # unfinished
            elif angle == 90.0 and seed == 2:
                b.add("C-VF-1h", grid, vf, status="running", hist=h[:2], info=info,
                      error="Traceback (most recent call last):\n  File x\nRuntimeError: injected fault\n")
            elif angle == 180.0 and seed == 1:
                b.add("C-VF-1h", grid, vf, status="diverged", hist=h[:1], info={**info, "diverged_at_epoch": 2})
            elif angle == 180.0 and seed == 2:
                b.add("C-VF-1h", grid, vf, status=None)  # pending
            elif angle == 0.0 and seed == 2:
                b.add("C-VF-1h", grid, vf, hist=h, info=info, files=("config", "summary"))  # metrics.csv missing
            else:
                b.add("C-VF-1h", grid, vf, hist=h, info=info)
    return b.write()


# --------------------------------------------------------------------- tests
def test_numbers_statuses_and_flags(mixed: Path) -> None:
    agg = aggregate_experiment(mixed)
    out = mixed / "summary"
    assert agg.warnings == []
    trials = {r["id"]: r for r in read_csv(out / "trials.csv")}
    assert len(trials) == 4 + 9
    status = {k: r["status"] for k, r in trials.items()}
    assert status["C-VF-1h/angle=90/seed=1"] == "interrupted"
    assert status["C-VF-1h/angle=90/seed=2"] == "errored"
    assert status["C-VF-1h/angle=180/seed=1"] == "diverged"
    assert status["C-VF-1h/angle=180/seed=2"] == "pending"
    assert status["C-VF-1h/angle=0/seed=2"] == "finished"
    assert "injected fault" in trials["C-VF-1h/angle=90/seed=2"]["note"]
    assert "no metrics.csv" in trials["C-VF-1h/angle=0/seed=2"]["note"]
    assert trials["EP-1h/seed=0"]["final_test_error"] == repr(9.0 / 3)
    assert trials["EP-1h/seed=0"]["best_test_error"] == repr(9.0 / 3)
    assert trials["EP-1h/seed=3"]["final_test_error"] == ""  # NaN written as empty
    assert trials["C-VF-1h/angle=90/seed=1"]["epochs_done"] == "1"
    assert trials["C-VF-1h/angle=180/seed=2"]["epochs_done"] == ""
    assert trials["C-VF-1h/angle=0/seed=0"]["measured_angle_deg"] == "0.5 1.5"
    assert trials["C-VF-1h/angle=0/seed=0"]["lr_tab"] == "0.01 0.02"

    # expected numbers, independently: finished trials with finite values only
    ep_test = [9.0 / 3, 10.5 / 3, 7.2 / 3]
    ep_train = [12.0 / 3, 11.0 / 3, 13.0 / 3]
    vf = {0.0: [0, 1, 2], 90.0: [0], 180.0: [0]}
    expected = {"EP-1h": (ep_test, ep_train, [10.0, 11.0, 12.0])}
    for angle, seeds in vf.items():
        expected[f"C-VF-1h angle={angle:g}"] = ([(20.0 + angle / 10 + s) / 3 for s in seeds],
                                                [(25.0 + angle / 10 + 2 * s) / 3 for s in seeds],
                                                [40.0 + angle / 2 + s for s in seeds])
    groups = {r["row"]: r for r in read_csv(out / "groups.csv")}
    md = (out / "table.md").read_text()
    rows = table_rows(md)
    assert set(groups) == set(expected) == set(rows)
    for label, (test, train, angle) in expected.items():
        g = groups[label]
        assert int(g["test_error_n"]) == len(test)
        assert float(g["test_error_mean"]) == pytest.approx(np.mean(test), abs=1e-12)
        assert float(g["train_error_mean"]) == pytest.approx(np.mean(train), abs=1e-12)
        if len(test) > 1:
            assert float(g["test_error_std"]) == pytest.approx(np.std(test, ddof=1), abs=1e-12)
            assert float(g["train_error_std"]) == pytest.approx(np.std(train, ddof=1), abs=1e-12)
        else:
            assert g["test_error_std"] == ""
        header = md.split("| Experiment")[1].splitlines()[0]
        cols = ["Experiment"] + [c.strip() for c in header.strip(" |").split(" | ")]
        cells = dict(zip(cols, rows[label], strict=True))
        assert cells["Test error (%)"] == fmt(test)
        assert cells["Train error (%)"] == fmt(train)
        assert cells["Seeds"] == str(len(test))
        assert cells["Angle-grad (°)"] == fmt(angle, 1)
    # statuses per row, and the banner
    assert "1/3 finished, 1 running or interrupted (epoch 1 of 3), 1 errored" in rows["C-VF-1h angle=90"][-1]
    assert "1/3 finished, 1 diverged, 1 pending" in rows["C-VF-1h angle=180"][-1]
    assert rows["EP-1h"][-1] == "4/4 finished, 1 of them without a finite final error"
    assert "**PARTIAL: 9 of 13 trials finished (1 diverged, 1 running or interrupted, 1 errored, 1 pending)" in md
    assert "EP-1h/seed=3: finished without a finite final test error" in md
    assert "C-VF-1h/angle=90/seed=2: errored: RuntimeError: injected fault" in md
    assert "C-VF-1h/angle=90/seed=1: running or interrupted at epoch 1 of 3" in md
    assert "1 pending (not started): C-VF-1h/angle=180/seed=2" in md
    # mnist5k is not the paper's data: no published numbers, no Paper column, and a note says why
    assert "Paper" not in md.split("| Experiment")[1].splitlines()[0]
    assert "dataset mnist5k (paper mnist)" in md
    # the figures the data allows, all of them
    names = {p.name for p in agg.files}
    assert {"fig4_angle_curve.png", "fig4_angle_curve.pdf", "learning_curves.png", "fig5a_angle_grad.png",
            "angle_curve.csv"} <= names
    assert all((out / n).stat().st_size > 0 for n in names)


def test_angle_angle_grad_stats_in_groups_csv(mixed: Path) -> None:
    aggregate_experiment(mixed, plots=False)
    g = {r["row"]: r for r in read_csv(mixed / "summary" / "groups.csv")}
    assert float(g["EP-1h"]["angle_grad_deg_mean"]) == pytest.approx(11.0)
    assert float(g["EP-1h"]["angle_grad_deg_std"]) == pytest.approx(1.0)
    assert float(g["C-VF-1h angle=0"]["angle_grad_deg_mean"]) == pytest.approx(41.0)


def test_angle_curve_one_point_per_angle(mixed: Path) -> None:
    aggregate_experiment(mixed, plots=False)
    rows = read_csv(mixed / "summary" / "angle_curve.csv")
    # EP-1h (one angle) is the curve's reference level, listed last
    reference = rows.pop()
    assert reference["line"] == "EP-1h (reference)" and int(reference["n"]) == 3
    assert [float(r["angle"]) for r in rows] == [0.0, 90.0, 180.0]
    assert {r["line"] for r in rows} == {"C-VF-1h"}
    # x is the measured angle (mean over pairs and finished seeds), not the requested one
    assert [float(r["x_angle_mean"]) for r in rows] == [1.0, 91.0, 181.0]
    assert [int(r["n"]) for r in rows] == [3, 1, 1]
    assert float(rows[0]["test_error_mean"]) == pytest.approx(np.mean([20 / 3, 21 / 3, 22 / 3]))


def test_aggregating_twice_gives_identical_files(mixed: Path) -> None:
    aggregate_experiment(mixed)
    first = {p.name: p.read_bytes() for p in (mixed / "summary").iterdir()}
    assert "index.html" in first
    time.sleep(1.1)  # a timestamp in a PDF would differ now
    aggregate_experiment(mixed)
    second = {p.name: p.read_bytes() for p in (mixed / "summary").iterdir()}
    assert first.keys() == second.keys()
    assert [n for n in first if first[n] != second[n]] == []
    assert not [n for n in first if n.startswith(".")]  # no temporary files left


def test_no_angle_dimension_no_angle_curve_and_no_angle_grad_no_fig5a(tmp_path: Path) -> None:
    b = ExperimentBuilder(tmp_path)
    for seed in range(2):
        b.add("C-VF-1h", {"seed": seed}, small_config(angle=45.0), hist=history(2, 10.0 + seed, 12.0))
    root = b.write()
    agg = aggregate_experiment(root)
    names = {p.name for p in agg.files}
    assert "learning_curves.png" in names
    assert not names & {"fig4_angle_curve.png", "angle_curve.csv", "fig5a_angle_grad.png"}
    md = (root / "summary" / "table.md").read_text()
    assert "Angle-grad" not in md
    assert "COMPLETE: 2 of 2 trials finished" in md


def test_published_numbers_shown_only_for_the_published_configuration(tmp_path: Path) -> None:
    b = ExperimentBuilder(tmp_path)
    for name in ("EP-1h", "C-VF-2h"):
        full = paper_config(name, dataset="mnist").to_dict()
        for seed in range(2):
            b.add(name, {"seed": seed}, full, hist=history(1, 3.0 + seed, 2.0), info={"angle_grad": 20.0})
    smoke = paper_config("EP-1h", dataset="mnist", epochs=1).to_dict()
    b.add("EP-1h-smoke", {"seed": 0}, smoke, hist=history(1, 5.0, 5.0))
    b.add("C-VF-2h-angled", {"seed": 0}, paper_config("C-VF-2h", dataset="mnist", angle=45.0).to_dict(),
          hist=history(1, 5.0, 5.0), info={"angle_grad": 70.0})
    root = b.write()
    aggregate_experiment(root, plots=False)
    md = (root / "summary" / "table.md").read_text()
    rows = table_rows(md)
    paper_angle = 10  # the column after Best test, Best epoch and Angle-grad
    assert rows["EP-1h"][5] == "2.00" and rows["EP-1h"][paper_angle] == "≈17"
    assert rows["C-VF-2h"][5] == "2.97" and rows["C-VF-2h"][paper_angle] == "61–94"
    assert rows["EP-1h-smoke"][5] == "— [1]"
    assert "EP-1h-smoke: no published number: differs from the paper's EP-1h in epochs 1 (paper 30)." in md
    # the angle-grad range of C-VF covers every weight angle; the test error is the angle-0 configuration's
    assert rows["C-VF-2h-angled"][5] == "— [2]" and rows["C-VF-2h-angled"][paper_angle] == "61–94"
    assert "angle 45 (paper 0)" in md
    assert load_published()["paper"] in md


def test_published_file_holds_the_spec_configurations() -> None:
    pub = load_published()
    assert {r["name"]: r["test_error"] for r in pub["rows"]} == {
        "EP-1h": 2.00, "EP-2h": 1.95, "C-EP-1h": 2.28, "C-EP-2h": 2.44, "C-VF-1h": 2.43, "C-VF-2h": 2.97}
    for row in pub["rows"]:
        cfg = paper_config(row["name"], dataset="mnist").to_dict()
        assert {k: cfg[k] for k in row["config"]} == row["config"], row["name"]
        assert {k: cfg[k] for k in pub["common"]} == pub["common"], row["name"]
        assert set(PAPER_EXPERIMENTS[row["name"]]) <= set(row["config"])


def test_damaged_folders_do_not_crash(tmp_path: Path) -> None:
    b = ExperimentBuilder(tmp_path)
    b.add("EP-1h", {"seed": 0}, small_config(rule="ep", randbeta=0.0), hist=history(3, 9.0, 9.0))
    b.add("EP-1h", {"seed": 1}, small_config(rule="ep", randbeta=0.0), hist=history(3, 9.0, 9.0))
    b.add("EP-1h", {"seed": 2}, small_config(rule="ep", randbeta=0.0), hist=history(2, 9.0, 9.0), files=("metrics",))
    b.add("EP-1h", {"seed": 3}, small_config(rule="ep", randbeta=0.0), status="running", files=())
    root = b.write()
    (root / "trials/EP-1h/seed=1/summary.json").write_text('{"status": "fini')  # half-written
    (root / "trials/EP-1h/seed=0/metrics.csv").write_text("epoch,test_error\n1,abc\n2")
    agg = aggregate_experiment(root)
    assert agg.warnings == []
    trials = {r["id"]: r for r in read_csv(root / "summary" / "trials.csv")}
    assert trials["EP-1h/seed=0"]["status"] == "finished"
    assert "summary.json unreadable" in trials["EP-1h/seed=1"]["note"]
    assert trials["EP-1h/seed=1"]["status"] == "interrupted"
    assert trials["EP-1h/seed=2"]["status"] == "interrupted" and trials["EP-1h/seed=2"]["epochs_done"] == "2"
    assert trials["EP-1h/seed=2"]["final_test_error"] == repr(4.5)  # from metrics.csv
    assert trials["EP-1h/seed=3"]["status"] == "interrupted" and "no summary.json" in trials["EP-1h/seed=3"]["note"]
    assert "PARTIAL: 1 of 4 trials finished" in (root / "summary" / "table.md").read_text()


def test_gdu_trials_get_an_index_and_agreement_table(tmp_path: Path) -> None:
    b = ExperimentBuilder(tmp_path)
    cfg = small_config(rule="ep", randbeta=0.0, action="gdu", activation="tanh", batch_size=1)
    tid = b.add("gdu-ep", {"seed": 0}, cfg, files=())
    root = b.write()
    path = root / "trials" / tid
    (path / "gdu").mkdir()
    rows = [{"name": "s0", "kind": "neuron", "cosine": 0.999, "rel_rmse": 0.01},
            {"name": "W0", "kind": "weight", "cosine": 0.98, "rel_rmse": 0.05}]
    (path / "summary.json").write_text(json.dumps({"status": "finished", "action": "gdu", "angle_grad": 3.25,
                                                   "agreement": rows, "config": cfg}))
    with open(path / "gdu" / "agreement.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["name", "kind", "cosine", "rel_rmse"])
        w.writeheader()
        w.writerows(rows)
    (path / "gdu" / "neurons.png").write_bytes(b"png")
    agg = aggregate_experiment(root)
    md = (root / "summary" / "table.md").read_text()
    assert "COMPLETE: 1 of 1 trials finished" in md
    assert "| s0 | neuron | 0.9990 | 0.0100 |" in md
    assert "3.2°" in md
    assert f"[neurons.png](../trials/{tid}/gdu/neurons.png)" in md
    page = parse_page(root)
    assert (path / "gdu" / "neurons.png").resolve() in link_targets(root, page)
    assert [r["name"] for r in read_csv(root / "summary" / "gdu_agreement.csv")] == ["s0", "W0"]
    assert "learning_curves.png" not in {p.name for p in agg.files}
    assert f"{tid} (finished): angle-grad 3.2°; s0 0.999, W0 0.980" in terminal_report(agg)


def test_outputs_that_no_longer_apply_are_removed(mixed: Path) -> None:
    out = mixed / "summary"
    aggregate_experiment(mixed, plots=False)
    assert (out / "angle_curve.csv").exists()
    (out / "fig4_angle_curve.png").write_bytes(b"an old figure")
    sweep = json.loads((mixed / "sweep.json").read_text())
    sweep["trials"] = [t for t in sweep["trials"] if t["experiment"] == "EP-1h"]  # no angle dimension now
    (mixed / "sweep.json").write_text(json.dumps(sweep))
    aggregate_experiment(mixed, plots=False)
    assert not (out / "angle_curve.csv").exists()
    assert (out / "fig4_angle_curve.png").exists()  # tables only: figures are left alone
    aggregate_experiment(mixed)
    assert not (out / "fig4_angle_curve.png").exists()
    assert (out / "learning_curves.png").exists()


def test_reads_without_torch_or_ray(mixed: Path) -> None:
    """The aggregator, its figures and its command import neither torch nor Ray."""
    code = """if True:
        import sys
        from cep.aggregate.summary import aggregate_experiment
        from cep.aggregate.cli import aggregate_command
        from cep.cli import run_main
        aggregate_experiment(sys.argv[1])
        try:
            run_main(aggregate_command, args=[sys.argv[1], "--quiet"])
        except SystemExit as e:
            assert e.code == 0, e.code
        bad = [m for m in ("torch", "ray") if m in sys.modules]
        assert not bad, bad
    """
    subprocess.run([sys.executable, "-c", code, str(mixed)], check=True, timeout=120)


def test_load_experiment_reports_trials_in_sweep_order(mixed: Path) -> None:
    exp = load_experiment(mixed)
    assert [g.label for g in exp.groups] == ["EP-1h", "C-VF-1h angle=0", "C-VF-1h angle=90", "C-VF-1h angle=180"]


# ------------------------------------------------------------------ command
def run_command(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from cep.cli import run_main

    with pytest.raises(SystemExit) as e:
        run_main(aggregate_command, args=args)
    out, err = capsys.readouterr()
    return int(e.value.code or 0), out, err


@pytest.mark.parametrize("case", ["empty", "not_experiment", "missing", "file", "bad_json", "no_trials"])
def test_command_refuses_what_is_not_an_experiment(tmp_path: Path, case: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "x"
    if case == "empty":
        target.mkdir()
    elif case == "not_experiment":
        (target / "stuff").mkdir(parents=True)
        (target / "notes.txt").write_text("hi")
    elif case == "file":
        target.write_text("hi")
    elif case == "bad_json":
        target.mkdir()
        (target / "sweep.json").write_text("{")
    elif case == "no_trials":
        target.mkdir()
        (target / "sweep.json").write_text('{"name": "x", "trials": []}')
    code, out, err = run_command([str(target)], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert not (target / "summary").exists()


def test_command_hints_at_the_experiment_below(mixed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_command([str(mixed.parent)], capsys)
    assert code == 2 and f"did you mean {mixed}" in err


def test_command_prints_the_table(mixed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_command([str(mixed), "--no-plots"], capsys)
    assert code == 0, err
    assert out.startswith("test_sweep: PARTIAL: 9 of 13 trials finished")
    assert "C-VF-1h angle=90" in out and "needs attention:" in out
    assert not (mixed / "summary" / "learning_curves.png").exists()


def test_python_m_entry_point(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "cep.aggregate.cli", str(tmp_path)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "is empty" in r.stderr


def test_cep_sweep_aggregate_subcommand(mixed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cep.sweep.cli import main

    with pytest.raises(SystemExit) as e:
        main(["aggregate", str(mixed), "--no-plots", "--quiet"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "PARTIAL: 9 of 13 trials finished" in out
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit) as e:
        main(["aggregate", str(empty)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("error: ")


# --------------------------------------------------------- a real small sweep
TINY_SWEEP = """\
name: tiny
description: a tiny real sweep for the aggregator's test
base: {setting: discrete, dataset: mnist5k, epochs: 1, train_samples: 200, test_samples: 200, T: 5, Kmax: 2,
       size_tab: [10, 16, 784]}
experiments:
  EP-1h: {rule: ep, continual: false, lr_tab: [0.04, 0.08], beta: 0.1}
  C-VF-1h:
    rule: vf
    continual: true
    randbeta: 0.5
    lr_tab: [0.0038, 0.0076]
    beta: 0.2
    angle_grad: true
    grid:
      angle: [0, 90, 180]
grid:
  seed: [0, 1]
resources: {cpu: 1, gpu: 0}
max_failures: 0
"""


@pytest.mark.ray
def test_real_small_sweep(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """cep-sweep runs 8 tiny trials and summarises them; aggregating again gives the same bytes."""
    try:  # the session's shared Ray cluster when conftest provides one, else the driver starts its own
        address = ["--address", request.getfixturevalue("ray_address")]
    except pytest.FixtureLookupError:
        address = []
    (tmp_path / "tiny.yaml").write_text(TINY_SWEEP)
    r = subprocess.run([sys.executable, "-c", "from cep.sweep.cli import main; main()", "tiny.yaml",
                        "--storage", str(tmp_path / "store"), *address], cwd=tmp_path, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    exp = tmp_path / "store" / "tiny"
    summary = exp / "summary"
    first = {p.name: p.read_bytes() for p in summary.iterdir()}  # written by the sweep's own call
    assert {"table.md", "trials.csv", "groups.csv", "angle_curve.csv", "fig4_angle_curve.png",
            "fig4_angle_curve.pdf", "learning_curves.png", "fig5a_angle_grad.png"} <= set(first)
    agg = aggregate_experiment(exp)
    assert agg.warnings == [] and not agg.partial
    second = {p.name: p.read_bytes() for p in summary.iterdir()}
    assert first.keys() == second.keys() and [n for n in first if first[n] != second[n]] == []
    curve = read_csv(summary / "angle_curve.csv")
    assert [(r["line"], float(r["angle"]), int(r["n"])) for r in curve] == [
        ("C-VF-1h", 0.0, 2), ("C-VF-1h", 90.0, 2), ("C-VF-1h", 180.0, 2), ("EP-1h (reference)", 0.0, 2)]
    trials = read_csv(summary / "trials.csv")
    assert len(trials) == 8 and {t["status"] for t in trials} == {"finished"}
    groups = {g["row"]: g for g in read_csv(summary / "groups.csv")}
    assert list(groups) == ["EP-1h", "C-VF-1h angle=0", "C-VF-1h angle=90", "C-VF-1h angle=180"]
    for g in groups.values():  # the table's means are the trials' means
        tests = [float(t["final_test_error"]) for t in trials if f"{t['experiment']} " in f"{g['row']} "
                 and (g["variant"] == "" or f"/{g['variant']}/" in f"/{t['id']}/")]
        assert len(tests) == 2 and float(g["test_error_mean"]) == pytest.approx(np.mean(tests))


# ------------------------------------------------------------ summary/index.html
VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class PageParser(HTMLParser):
    """The page as the standard library reads it: unclosed or misnested tags, links, trial rows, the table."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.links: list[str] = []
        self.rows: dict[str, list[str]] = {}  # data-trial -> data-status of each row (a list: duplicates show)
        self.table: list[list[str]] = []  # cells of #fig4-table's body
        self.text: list[str] = []
        self._in_table = False
        self._in_tbody = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for key in ("href", "src"):
            if a.get(key) is not None:
                self.links.append(str(a[key]))
        if tag == "tr" and a.get("data-trial") is not None:
            self.rows.setdefault(str(a["data-trial"]), []).append(str(a.get("data-status")))
        if tag == "table" and a.get("id") == "fig4-table":
            self._in_table = True
        if self._in_table and tag == "tbody":
            self._in_tbody = True
        if self._in_tbody and tag == "tr":
            self.table.append([])
        if self._in_tbody and tag == "td":
            self._cell = []
        if tag not in VOID_TAGS:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID_TAGS:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID_TAGS:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
            return
        self.stack.pop()
        if tag == "td" and self._cell is not None:
            self.table[-1].append("".join(self._cell).strip())
            self._cell = None
        if tag == "tbody":
            self._in_tbody = False
        if tag == "table":
            self._in_table = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def parse_page(exp_dir: Path) -> PageParser:
    text = (exp_dir / "summary" / "index.html").read_text()
    assert text.startswith("<!DOCTYPE html>")
    p = PageParser()
    p.feed(text)
    p.close()
    assert p.errors == [] and p.stack == [], (p.errors, p.stack)
    return p


def link_targets(exp_dir: Path, page: PageParser) -> list[Path]:
    """Every href/src as a file path; each must be relative and name an existing file of the experiment."""
    out = []
    for link in page.links:
        assert "://" not in link and not link.startswith("/"), link
        target = (exp_dir / "summary" / unquote(link)).resolve()
        assert target.is_file(), link
        assert target.is_relative_to(exp_dir.resolve()), link
        out.append(target)
    return out


def test_page_is_well_formed_links_resolve_and_matches_the_table(mixed: Path) -> None:
    agg = aggregate_experiment(mixed)
    assert mixed / "summary" / "index.html" in agg.files
    page = parse_page(mixed)
    targets = link_targets(mixed, page)
    # one row per trial of sweep.json, with the status trials.csv gives it
    sweep_ids = [t["id"] for t in json.loads((mixed / "sweep.json").read_text())["trials"]]
    statuses = {r["id"]: r["status"] for r in read_csv(mixed / "summary" / "trials.csv")}
    assert list(page.rows) == sweep_ids
    assert page.rows == {i: [statuses[i]] for i in sweep_ids}
    # the table's cells are table.md's, row for row
    md = table_rows((mixed / "summary" / "table.md").read_text())
    assert {r[0]: r for r in page.table} == md
    text = " ".join(page.text)
    assert "PARTIAL: 9 of 13 trials finished" in text
    assert "C-VF-1h/angle=90/seed=2: errored: RuntimeError: injected fault" in text
    assert "C-VF-1h/angle=90/seed=1: running or interrupted at epoch 1 of 3" in text  # needs attention
    # the errored trial's error.txt, the figures, and the files of the trials
    errored = mixed / "trials" / "C-VF-1h" / "angle=90" / "seed=2" / "error.txt"
    assert errored.resolve() in targets
    assert any("angle%3D90/seed%3D2/error.txt" in link for link in page.links)  # `=` quoted in hrefs
    assert {"fig4_angle_curve.png", "learning_curves.png", "fig5a_angle_grad.png", "table.md"} <= {
        t.name for t in targets}
    assert (mixed / "trials" / "EP-1h" / "seed=0" / "config.yaml").resolve() in targets


def test_page_of_a_complete_experiment_escapes_what_it_shows(tmp_path: Path) -> None:
    b = ExperimentBuilder(tmp_path, name="odd <b>name & co")
    for seed in range(2):
        b.add("EP-1h", {"tag": "x #1&<i>", "seed": seed}, small_config(rule="ep", randbeta=0.0),
              hist=history(2, 10.0 + seed, 12.0))
    root = b.write()
    agg = aggregate_experiment(root)
    html_text = (root / "summary" / "index.html").read_text()
    assert "<b>" not in html_text and "<i>" not in html_text and "odd &lt;b&gt;name &amp; co" in html_text
    page = parse_page(root)
    link_targets(root, page)
    assert list(page.rows) == ["EP-1h/tag=x #1&<i>/seed=0", "EP-1h/tag=x #1&<i>/seed=1"]
    assert "COMPLETE: 2 of 2 trials finished" in " ".join(page.text) and "PARTIAL" not in html_text
    assert "Needs attention" not in html_text
    assert terminal_report(agg).splitlines()[-1].endswith(f"open {root / 'summary' / 'index.html'} in a browser")


def test_fig5a_data_labels_cvf_points_and_brings_the_paper_values(mixed: Path) -> None:
    points = fig5a_points(load_experiment(mixed))
    assert [(p.label, p.weight_angle) for p in points] == [
        ("EP-1h", None), ("C-VF-1h angle=0", 0.0), ("C-VF-1h angle=90", 90.0), ("C-VF-1h angle=180", 180.0)]
    assert [(q.name, q.rule, q.hidden, q.angle_low, q.angle_high, q.test) for q in paper_fig5a(points)] == [
        ("EP-1h", "EP", 1, 17.0, 17.0, 2.0), ("C-VF-1h", "C-VF", 1, 65.0, 114.0, 2.43)]


def browser() -> str | None:
    return next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@pytest.mark.skipif(browser() is None, reason="no chromium on the PATH (Debian: apt-get install chromium)")
def test_page_renders_in_a_real_browser(mixed: Path, tmp_path: Path) -> None:
    from PIL import Image  # matplotlib's own dependency

    aggregate_experiment(mixed)
    shot = tmp_path / "page.png"
    r = subprocess.run([str(browser()), "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                        "--window-size=1400,3000", (mixed / "summary" / "index.html").as_uri()],
                       capture_output=True, text=True, timeout=180)
    assert shot.is_file(), r.stderr[-2000:]
    with Image.open(shot) as im:
        assert im.size == (1400, 3000)
        gray = im.convert("L")
        dark = sum(gray.histogram()[:200])  # text, table rules, figures
        colors = len(im.convert("RGB").getcolors(1 << 20) or [])
    assert dark > 0.01 * 1400 * 3000 and colors > 50, (dark, colors)


# ------------------------------------------------------------- collapses
def test_a_collapsed_seed_is_counted_and_best_and_final_are_side_by_side(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Three seeds at two angles; seed 1 at angle 0 collapses at epoch 3 and trains on (finished), seed 2 at
    angle 90 collapses at epoch 2 and stops there (stop_on_collapse); its record is found in metrics.csv when
    summary.json predates collapse detection."""
    b = ExperimentBuilder(tmp_path)
    cfg = small_config(epochs=4)

    def hist(train: list[float], test: list[float]) -> list[dict[str, float]]:
        return [dict(epoch=e, train_error=tr, test_error=te, train_loss=0.1, test_loss=0.2, epoch_seconds=1.0,
                     elapsed_seconds=float(e)) for e, (tr, te) in enumerate(zip(train, test, strict=True), 1)]

    curves = {(0.0, 0): ([30, 15, 12, 10], [28, 14, 11, 9]),
              (0.0, 1): ([30, 15, 85, 90], [28, 12, 86, 90]),  # collapses at 3, best test 12 at epoch 2
              (0.0, 2): ([30, 18, 16, 14], [29, 17, 15, 13]),
              (90.0, 0): ([40, 20, 19, 18], [38, 21, 20, 19]),
              (90.0, 1): ([40, 25, 22, 21], [39, 24, 22, 20]),
              (90.0, 2): ([20, 88], [19, 89])}  # collapses at 2, stopped there
    for (angle, seed), (train, test) in curves.items():
        h = hist(train, test)
        info = {"collapsed": find_collapse(h)} if (angle, seed) == (0.0, 1) else {}
        status = "collapsed" if (angle, seed) == (90.0, 2) else "finished"
        b.add("C-VF-1h", {"angle": angle, "seed": seed}, cfg, status=status, hist=h, info=info)
    root = b.write()
    aggregate_experiment(root, plots=False)
    out = root / "summary"
    trials = {r["id"]: r for r in read_csv(out / "trials.csv")}
    assert trials["C-VF-1h/angle=0/seed=1"]["collapsed_epoch"] == "3"
    assert trials["C-VF-1h/angle=90/seed=2"]["collapsed_epoch"] == "2"  # found in metrics.csv
    assert trials["C-VF-1h/angle=90/seed=2"]["status"] == "collapsed"
    assert trials["C-VF-1h/angle=0/seed=0"]["collapsed_epoch"] == ""
    assert float(trials["C-VF-1h/angle=0/seed=1"]["best_test_error"]) == 12.0
    assert trials["C-VF-1h/angle=0/seed=1"]["best_test_epoch"] == "2"
    md = (out / "table.md").read_text()
    header = md.split("| Experiment")[1].splitlines()[0]
    cols = ["Experiment"] + [c.strip() for c in header.strip(" |").split(" | ")]
    rows = {label: dict(zip(cols, cells, strict=True)) for label, cells in table_rows(md).items()}
    zero, ninety = rows["C-VF-1h angle=0"], rows["C-VF-1h angle=90"]
    assert zero["Collapsed"] == "1 of 3 (epoch 3)" and ninety["Collapsed"] == "1 of 3 (epoch 2)"
    assert zero["Test error (%)"] == fmt([9, 90, 13]) and zero["Best test (%)"] == fmt([9, 12, 13])
    assert zero["Best epoch"] == "2–4"
    # the seed stopped at its collapse counts, with its errors there
    assert ninety["Test error (%)"] == fmt([19, 20, 89]) and ninety["Best test (%)"] == fmt([19, 20, 19])
    assert ninety["Seeds"] == "3" and ninety["Trials"] == "2/3 finished, 1 stopped at its collapse"
    assert "C-VF-1h/angle=0/seed=1: collapsed at epoch 3 (train error 15.00% at epoch 2 -> 85.00%" in md
    assert "COMPLETE" in md
    groups = {r["row"]: r for r in read_csv(out / "groups.csv")}
    assert groups["C-VF-1h angle=0"]["collapsed_trials"] == "1" and groups["C-VF-1h angle=90"]["collapsed"] == "1"
    # Fig. 4 from final or best errors, labelled
    final = read_csv(out / "angle_curve.csv")
    assert [r["metric"] for r in final] == ["final", "final"]
    assert float(final[0]["test_error_mean"]) == pytest.approx(np.mean([9, 90, 13]))
    agg = aggregate_experiment(root, metric="best")
    best = read_csv(out / "angle_curve.csv")
    assert [r["metric"] for r in best] == ["best", "best"]
    assert float(best[0]["test_error_mean"]) == pytest.approx(np.mean([9, 12, 13]))
    assert float(best[1]["train_error_mean"]) == pytest.approx(np.mean([18, 21, 20]))
    assert "fig4_angle_curve.png" in {p.name for p in agg.files}
    assert "Best error versus initial angle" in (out / "table.md").read_text()
    with pytest.raises(ValueError, match="metric"):
        aggregate_experiment(root, metric="last")
    code, text, err = run_command([str(root), "--no-plots", "--metric", "final"], capsys)
    assert code == 0 and "1 of 3 (epoch 3)" in text, err
    assert read_csv(out / "angle_curve.csv")[0]["metric"] == "final"


def test_a_table_without_published_numbers_is_not_headed_as_fig4_and_has_no_paper_column(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    b = ExperimentBuilder(tmp_path)
    for seed in range(2):  # a search's or a grid's own configurations: nothing the paper published
        b.add("C-VF-1h", {"beta": 0.3, "seed": seed}, small_config(), hist=history(2, 10.0 + seed, 12.0))
    root = b.write()
    agg = aggregate_experiment(root, plots=False)
    md = (root / "summary" / "table.md").read_text()
    page = (root / "summary" / "index.html").read_text()
    terminal = terminal_report(agg)
    for text in (md, page, terminal):
        assert "Fig. 4" not in text and "Paper" not in text
    assert "## Error rates\n" in md and '<h2 id="table">Error rates</h2>' in page
    assert table_rows(md)["C-VF-1h beta=0.3"][4:6] == [fmt([5.0, 5.5]), fmt([6.0, 6.0])]  # test, then train error
