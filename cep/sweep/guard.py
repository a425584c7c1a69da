"""Before a sweep runs on an existing experiment folder: links refused, hand-edited trial configs noticed.

A copied, unpacked or shared experiment may hold symbolic links (a trial folder, trials/<experiment>/,
a metrics.csv): a run would write or delete through them, outside the experiment, so it is refused
before anything starts. A trial's configuration is sweep.json's record; a config.yaml that differs
from it was edited by hand: said in one line per trial, and rewritten from the record.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml

from cep.layout import RAY_LOG, SWEEP_FILE, Trial, trial_dir
from cep.results import CONFIG_FILE, config_edit_line, config_edits, result_link
from cep.safe_files import LinkRefused, find_link, remove_stale_temps, write_atomic


def link_problems(exp_dir: str | Path, trials: Sequence[Trial]) -> list[str]:
    """One line per symbolic link at the experiment's own files, on the way to a trial folder or at its files
    (the first of each trial)."""
    exp_dir = Path(exp_dir)
    links = [find_link(exp_dir, exp_dir / name) for name in (SWEEP_FILE, RAY_LOG)]
    links += [result_link(exp_dir, trial_dir(exp_dir, t.id)) for t in trials]
    return [str(LinkRefused(link, "write")) for link in dict.fromkeys(link for link in links if link is not None)]


def remove_temporaries(exp_dir: str | Path, trials: Sequence[Trial]) -> None:
    """Remove what killed runs left half-written in the experiment folder and its trial folders (also of
    trials that will not run again)."""
    for folder in [Path(exp_dir), *(trial_dir(exp_dir, t.id) for t in trials)]:
        remove_stale_temps(folder)


def restore_edited_configs(exp_dir: str | Path, trials: Sequence[Trial]) -> list[str]:
    """Rewrite each config.yaml that differs from the trial's recorded configuration; one warning line each."""
    lines = []
    for t in trials:
        folder = trial_dir(exp_dir, t.id)
        edits = config_edits(folder, t.config.to_dict())
        if edits:
            write_atomic(folder / CONFIG_FILE, yaml.safe_dump(t.config.to_dict(), sort_keys=False))
            lines.append(config_edit_line(t.id, edits))
    return lines
