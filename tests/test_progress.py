"""The live sweep table (a Tune callback) driven by hand: no Ray cluster needed."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest

pytest.importorskip("ray")

from cep.sweep.progress import ProgressTable  # noqa: E402


def test_a_collapse_gets_a_line_and_stays_in_its_row():
    out = io.StringIO()
    table = ProgressTable({"a": 5, "b": 5}, interval=1e9, out=out, packs={"a+1": ("a", "b")})
    pack = SimpleNamespace(config={"trial_id": "a+1"}, trial_id="t0", num_failures=0)
    table.on_trial_start(0, [], pack)

    def report(epoch: int, b_train: float, b_collapsed: int | None, b_status: str = "running") -> None:
        members = [{"id": "a", "epoch": epoch, "epochs": 5, "train_error": 10.0, "test_error": 11.0,
                    "status": "running", "collapsed_epoch": None},
                   {"id": "b", "epoch": epoch, "epochs": 5, "train_error": b_train, "test_error": 90.0,
                    "status": b_status, "collapsed_epoch": b_collapsed}]
        table.on_trial_result(0, [], pack, {"members": members})

    report(1, 15.0, None)
    assert "collapsed" not in out.getvalue()
    report(2, 88.0, 2)
    report(3, 89.0, 2)
    lines = [ln for ln in out.getvalue().splitlines() if "collapsed" in ln]
    assert lines[0].startswith("! b: collapsed at epoch 2 (train error 88.00%); training on") and len(lines) == 1
    text = table.table()
    assert "1 collapsed so far" in text.splitlines()[0]
    assert "running, collapsed at epoch 2" in next(ln for ln in text.splitlines() if ln.strip().startswith("b "))
    report(4, 89.0, 2, "collapsed")
    table.on_trial_complete(0, [], pack)
    assert "+ b: collapsed at epoch 4/5, test error 90.00%, collapsed at epoch 2" in out.getvalue()
