"""A start refused for a link among the experiment's own files (a new folder holding a linked ray.log) is
refused before sweep.json is written: nothing is left behind, nothing outside is touched."""

from __future__ import annotations

from cli_runs import SWEEP, one_error_line, run_cli


def test_a_linked_ray_log_in_a_new_experiment_is_refused_before_sweep_json(tmp_path):
    outside = tmp_path / "outside.log"
    outside.write_text("theirs\n")
    exp = tmp_path / "st" / "s"
    exp.mkdir(parents=True)
    (exp / "ray.log").symlink_to(outside)
    (tmp_path / "s.yaml").write_text(SWEEP)
    proc = run_cli(["s.yaml", "--storage", str(tmp_path / "st")], tmp_path, timeout=120)
    one_error_line(proc, "ray.log", "symbolic link")
    assert sorted(p.name for p in exp.iterdir()) == ["ray.log"] and outside.read_text() == "theirs\n"
