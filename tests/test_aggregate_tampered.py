"""`cep-sweep aggregate` on a tampered experiment: grid values of any JSON shape are grouped, and a folder where
a summary file goes is named in one line with the fix."""

from __future__ import annotations

import json

from cli_runs import run_cli


def _experiment(tmp_path):
    exp = tmp_path / "exp"
    trials = [{"id": "a", "experiment": "E", "grid": {"beta": {"x": 1}, "seed": 0}, "config": {"epochs": 1}},
              {"id": "b", "experiment": "E", "grid": {"beta": [1, {"y": 2}], "seed": 1}, "config": {"epochs": 1}}]
    for t in trials:
        (exp / "trials" / t["id"]).mkdir(parents=True)
    (exp / "sweep.json").write_text(json.dumps({"name": "exp", "trials": trials}))
    return exp


def test_a_mapping_as_grid_value_is_aggregated(tmp_path):
    exp = _experiment(tmp_path)
    proc = run_cli(["aggregate", str(exp), "--no-plots"], tmp_path, timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert (exp / "summary" / "trials.csv").exists()


def test_a_folder_where_a_summary_file_goes_is_one_line_naming_it(tmp_path):
    exp = _experiment(tmp_path)
    (exp / "summary" / "trials.csv").mkdir(parents=True)
    proc = run_cli(["aggregate", str(exp), "--no-plots"], tmp_path, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "summary/trials.csv: a folder where cep writes a file; remove it" in lines[0]
