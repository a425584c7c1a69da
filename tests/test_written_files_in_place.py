"""Where cep writes a file (trial.log, a figure, a summary file) a FIFO or a folder may stand in a copied or
tampered folder: one line naming it, never a hang nor a traceback."""

from __future__ import annotations

import os
import threading

import pytest
from cli_runs import one_error_line, run_cli

from cep.reading import ReadRefused
from cep.results import append_log, write_atomic

QUICK = ["--train-samples", "40", "--test-samples", "20", "--device", "cpu", "--sizes", "10,8,784", "--seed", "0",
         "--quiet"]


@pytest.mark.parametrize("kind", ["fifo", "folder", "fifo with a reader"])
def test_trial_log_that_is_no_regular_file_is_refused_without_blocking(kind, tmp_path):
    log = tmp_path / "trial.log"
    os.mkfifo(log) if kind.startswith("fifo") else log.mkdir()
    reader = None
    if kind == "fifo with a reader":  # the writer would not block then, but the text would go to the reader
        reader = os.open(log, os.O_RDONLY | os.O_NONBLOCK)
    done = threading.Event()
    failure: list[BaseException] = []

    def write() -> None:
        try:
            append_log(tmp_path, "start")
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            failure.append(e)
        done.set()

    threading.Thread(target=write, daemon=True).start()
    assert done.wait(10), "append_log blocked"
    if reader is not None:
        assert os.read(reader, 100) == b""
        os.close(reader)
    assert len(failure) == 1 and isinstance(failure[0], ReadRefused), failure
    assert "trial.log" in str(failure[0]) and "remove it" in str(failure[0])


def test_cep_train_with_a_fifo_as_trial_log_is_one_line(tmp_path):
    first = run_cli(["train", *QUICK, "--out", "o", "--checkpoint", "--epochs", "1"], tmp_path, sweep=False,
                    timeout=120)
    assert first.returncode == 0, first.stderr
    (tmp_path / "o" / "trial.log").unlink()
    os.mkfifo(tmp_path / "o" / "trial.log")
    proc = run_cli(["train", *QUICK, "--out", "o", "--checkpoint", "--epochs", "2"], tmp_path, sweep=False,
                   timeout=120)
    one_error_line(proc, "trial.log", "FIFO")


def test_a_folder_where_a_whole_file_goes_is_one_line_and_kept(tmp_path):
    (tmp_path / "fig.png").mkdir()
    (tmp_path / "fig.png" / "inside").write_text("kept")
    with pytest.raises(ReadRefused, match="a folder where cep writes a file"):
        write_atomic(tmp_path / "fig.png", b"data")
    assert (tmp_path / "fig.png" / "inside").read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png"]  # no temporary left
