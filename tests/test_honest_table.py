"""The aggregator names which selection each best-epoch number used (test, or validation: the honest figure),
counts drifting seeds in the Fig. 4 table, and reports every trial's metrics at its selected best epoch."""

from __future__ import annotations

from pathlib import Path

from test_aggregate import ExperimentBuilder, fmt, read_csv, small_config, table_rows

from cep.aggregate.summary import aggregate_experiment
from cep.health import find_drift
from cep.selection import best_record

# (train, val, test) per epoch; seed 0 drifts from epoch 6 (min 1.0 at epoch 4, then >= 3.0 for three epochs)
CURVES = {
    0: ([20, 8, 3, 1.0, 1.2, 3.0, 3.5, 4.0], [22, 10, 6, 5.6, 5.5, 7, 8, 9], [21, 9, 5.5, 4.5, 5.2, 7, 8, 9]),
    1: ([20, 9, 4, 2.0, 1.5, 1.4, 1.3, 1.2], [22, 11, 7, 6.0, 5.8, 6.2, 5.9, 6.1], [21, 10, 6, 6.5, 5.0, 5.6, 5.4,
                                                                                  5.5]),
    2: ([25, 10, 5, 3.0, 2.5, 2.2, 2.0, 2.1], [24, 12, 8, 7.0, 6.6, 6.6, 6.9, 7.0], [23, 11, 7, 6.8, 6.4, 6.0, 6.2,
                                                                                   6.3]),
}


def history(train, val, test):
    return [dict(epoch=e, train_error=tr, test_error=te, train_loss=0.1, test_loss=0.2, epoch_seconds=1.0,
                 elapsed_seconds=float(e), val_error=va, val_loss=0.2) for e, (tr, va, te) in
            enumerate(zip(train, val, test, strict=True), 1)]


def build(tmp_path: Path, with_records: bool) -> Path:
    """The trainer's records in summary.json (with_records), or an older summary.json without them: then the
    aggregator finds the same in metrics.csv."""
    b = ExperimentBuilder(tmp_path)
    cfg = small_config(epochs=8, val_samples=500, rule="ep", randbeta=0.0)
    for seed, curve in CURVES.items():
        h = history(*curve)
        info = {}
        if with_records:
            info = {"best": best_record(h), **({"drifting": find_drift(h)} if find_drift(h) else {})}
        b.add("C-EP-1h", {"seed": seed}, cfg, hist=h, info=info)
    return b.write()


def check(root: Path) -> None:
    aggregate_experiment(root, plots=False)
    out = root / "summary"
    md = (out / "table.md").read_text()
    header = md.split("| Experiment")[1].splitlines()[0]
    cols = ["Experiment"] + [c.strip() for c in header.strip(" |").split(" | ")]
    row = dict(zip(cols, table_rows(md)["C-EP-1h"], strict=True))
    assert row["Drifting"] == "1 of 3 (from epoch 6)"
    # each seed's lowest validation error (the first of equal ones), and the test error there
    assert row["Best val epoch"] == "5" and row["Test at best val (%)"] == fmt([5.2, 5.0, 6.4])
    assert row["Best test (%)"] == fmt([4.5, 5.0, 6.0]) and row["Best epoch"] == "4–6"
    assert "Test at best val" in md and "the honest figure" in md and "chosen on the test set" in md
    assert "C-EP-1h/seed=0: drifting since epoch 6: train error 4.00% at epoch 8, up from its minimum 1.00% at " \
           "epoch 4" in md
    trials = {r["id"]: r for r in read_csv(out / "trials.csv")}
    assert trials["C-EP-1h/seed=0"]["drifting_epoch"] == "6" and trials["C-EP-1h/seed=1"]["drifting_epoch"] == ""
    assert [trials[f"C-EP-1h/seed={s}"]["selected_epoch"] for s in range(3)] == ["5", "5", "5"]
    assert trials["C-EP-1h/seed=1"]["selected_on"] == "validation"
    assert float(trials["C-EP-1h/seed=1"]["selected_test_error"]) == 5.0
    assert float(trials["C-EP-1h/seed=1"]["selected_val_error"]) == 5.8
    groups = read_csv(out / "groups.csv")
    assert groups[0]["drifting_trials"] == "1" and groups[0]["test_error_at_best_val_n"] == "3"
    page = (out / "index.html").read_text()
    assert "<th>Drifting</th>" in page and "Test at best val (%)" in page and "drifting since epoch 6" in page


def test_the_table_counts_drift_and_names_the_selection(tmp_path: Path) -> None:
    check(build(tmp_path, with_records=True))


def test_an_older_summary_without_the_records_gives_the_same_table(tmp_path: Path) -> None:
    check(build(tmp_path, with_records=False))


def test_without_validation_the_table_has_no_validation_columns(tmp_path: Path) -> None:
    b = ExperimentBuilder(tmp_path)
    cfg = small_config(epochs=3)
    b.add("C-VF-1h", {"seed": 0}, cfg, hist=[dict(epoch=e, train_error=10.0 / e, test_error=12.0 / e, train_loss=0.1,
                                                  test_loss=0.2, epoch_seconds=1.0, elapsed_seconds=e)
                                             for e in (1, 2, 3)])
    root = b.write()
    aggregate_experiment(root, plots=False)
    md = (root / "summary" / "table.md").read_text()
    assert "Test at best val (%) |" not in md and "| Drifting |" in md
    trial = read_csv(root / "summary" / "trials.csv")[0]
    assert trial["selected_on"] == "test" and trial["selected_epoch"] == "3"
