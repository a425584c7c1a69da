"""The experiment's lock file is opened like every other file of an experiment: never through a link, never
blocking, a regular file only; and what it says is shown, never turned into advice."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cli_runs import SWEEP, one_error_line, run_cli

from cep.layout import LOCK_FILE
from cep.sweep.lock import ExperimentLock, check_unlocked, holder
from cep.sweep.spec import SweepError


def test_a_link_as_lock_file_is_refused_and_its_target_kept(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / LOCK_FILE).symlink_to(outside)
    with pytest.raises(SweepError) as e:
        ExperimentLock(exp).acquire()
    assert "symbolic link" in e.value.problems[0] and LOCK_FILE in e.value.problems[0]
    with pytest.raises(SweepError):
        check_unlocked(exp)
    assert outside.read_text() == "precious\n"


def test_a_dangling_link_as_lock_file_creates_nothing(tmp_path):
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / LOCK_FILE).symlink_to(tmp_path / "made-by-us")
    with pytest.raises(SweepError) as e:
        ExperimentLock(exp).acquire()
    assert "symbolic link" in e.value.problems[0]
    assert not (tmp_path / "made-by-us").exists()


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_a_lock_file_that_is_no_regular_file_is_one_line_without_blocking(kind, tmp_path):
    exp = tmp_path / "exp"
    exp.mkdir()
    lock = exp / LOCK_FILE
    lock.mkdir() if kind == "folder" else os.mkfifo(lock)
    (tmp_path / "s.yaml").write_text(SWEEP)
    for args in (["--dry-run"], []):  # the probe of --dry-run, and a run's acquire
        proc = run_cli(["s.yaml", "--storage", str(tmp_path), "--name", "exp", *args], tmp_path, timeout=60)
        line = one_error_line(proc, LOCK_FILE, "not a regular file" if kind == "fifo" else "a folder", "remove it")
    assert sorted(p.name for p in exp.iterdir()) == [LOCK_FILE]  # nothing written beside it
    with pytest.raises(SweepError) as e:
        ExperimentLock(exp).acquire()
    assert e.value.problems == [line.removeprefix("error: ")]


@pytest.mark.parametrize("content", ["pid 1 host evil started 2026\n", "pid $(rm -rf ~) host ;reboot started x\n",
                                     "\x00\xff" * 300])
def test_a_forged_lock_file_is_shown_as_a_claim_never_as_advice(content, tmp_path):
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / LOCK_FILE).write_bytes(content.encode("latin-1"))
    said = holder(exp)
    assert "rm " not in said and ";" not in said and "\x00" not in said and len(said) < 120
    import fcntl
    fd = os.open(exp / LOCK_FILE, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # held (by this process, through another descriptor)
    try:
        with pytest.raises(SweepError) as e:
            check_unlocked(exp)
    finally:
        os.close(fd)
    line = e.value.problems[0]
    assert "kill" not in line and "in use" in line and said in line


def test_the_lock_is_still_taken_released_and_removed(tmp_path):
    exp = Path(tmp_path / "exp")
    lock = ExperimentLock(exp)
    lock.acquire()
    assert holder(exp).startswith(f"pid {os.getpid()} on host ")
    lock.release(remove=True)
    assert list(exp.iterdir()) == []
