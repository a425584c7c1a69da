"""pandas DataFrames of an experiment folder, for notebooks: `cep.load("results/NAME")`.

Reads only what `cep-sweep aggregate` reads, through the same readers (cep.aggregate.read), and
builds its rows with the same code as trials.csv and groups.csv, so the numbers are the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Frames:
    """`trials`: one row per trial (trials.csv's columns); `epochs`: one row per trial-epoch (id, experiment,
    then metrics.csv's columns); `groups`: the summary table's rows (groups.csv's columns)."""

    trials: Any
    epochs: Any
    groups: Any


def load(path: str | Path) -> Frames:
    """The DataFrames of the experiment folder `path` (NotAnExperiment, with a one-line reason, when it is not)."""
    import pandas as pd

    from cep.aggregate.files import group_table, trial_table
    from cep.aggregate.read import load_experiment
    from cep.aggregate.table import build_table

    exp = load_experiment(path)
    header, rows = trial_table(exp)
    trials = pd.DataFrame(rows, columns=header)
    epochs = pd.DataFrame([{"id": t.id, "experiment": t.experiment, **row} for t in exp.trials for row in t.metrics])
    if "epoch" in epochs:
        epochs["epoch"] = epochs["epoch"].astype(int)
    header, rows = group_table(build_table(exp))
    return Frames(trials, epochs, pd.DataFrame(rows, columns=header))
