"""What a sweep's trials are and what they cost, before running: selection, identity, changes, the dry-run table.

No Ray, no torch.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cep.config import FIELD_NAMES, RUN_FIELDS, TrialConfig, pack_key, result_differences
from cep.cost import sample_steps, step_synapses, trial_macs
from cep.layout import Trial
from cep.sweep.spec import SweepError, SweepSpec, format_value
from cep.text import text_table

AUTO_PACK = {"gpu": 45, "cpu": 9}  # pack: auto, with or without a GPU share per pack
# pack: auto on one CPU thread: nets whose dynamics touch more synapses per step than this train alone, where
# a pack is slower per trial than a trial alone (measured: README, Packs; C-VF-1h packs pay, 2h nets do not)
ONE_THREAD_STEP_SYNAPSES = 32_768


def select(trials: Sequence[Trial], patterns: Sequence[str]) -> list[Trial]:
    """Trials whose id matches any glob (a pattern without wildcards also selects everything below it)."""
    if not patterns:
        return list(trials)
    chosen = [t for t in trials if any(fnmatch.fnmatchcase(t.id, p) or fnmatch.fnmatchcase(t.id, p.rstrip("/") + "/*")
                                       for p in patterns)]
    if not chosen:
        sample = ", ".join(t.id for t in trials[:3]) + (", ..." if len(trials) > 3 else "")
        raise SweepError([f"--only {' '.join(patterns)}: matches no trial; ids look like {sample}"])
    return chosen


@dataclass(frozen=True)
class Pack:
    """Trials that run as one program (cep.train.train_pack) and one Ray Tune trial; a pack of one is a trial."""

    id: str
    members: tuple[Trial, ...]

    @property
    def ids(self) -> list[str]:
        return [t.id for t in self.members]


def pack_size(spec: SweepSpec) -> int:
    """The most trials per pack: the sweep's `pack`, or for auto 45 when packs get a GPU share, else 9
    (auto_pack may give fewer, by the net)."""
    return spec.pack or AUTO_PACK["gpu" if spec.resources.get("gpu", 0) > 0 else "cpu"]


def pack_sizes(spec: SweepSpec) -> Callable[[TrialConfig], int]:
    """The most trials per pack for trials like a config: the sweep's `pack`, or auto_pack's choice."""
    return lambda cfg: spec.pack or auto_pack(cfg, spec.resources)[0]


def torch_threads(resources: Mapping[str, float]) -> int:
    """Ray does not limit threads: give torch exactly the trial's CPUs (also for --local, for equal results),
    at most this machine's CPUs (a cluster's trial may ask more than the node that runs it has; torch crashes
    at absurd thread counts)."""
    return max(1, min(int(min(resources.get("cpu", 1), 2**31)), os.cpu_count() or 1))


def auto_pack(cfg: TrialConfig, resources: Mapping[str, float]) -> tuple[int, str]:
    """`pack: auto` for trials like `cfg`: the most per pack, and why. Packs pay on a GPU (launches) and on
    two or more CPU threads (one batched product per step splits better); on one thread only for small nets
    (a pack of 2h nets is slower per trial there: its members' matrices no longer stay in cache)."""
    if cfg.device.startswith("cuda") or (cfg.device == "auto" and resources.get("gpu", 0) > 0):
        return AUTO_PACK["gpu"], "packs get a GPU share"
    threads = torch_threads(resources)
    if threads > 1:
        return AUTO_PACK["cpu"], f"{threads} CPU threads per pack"
    synapses = step_synapses(cfg)
    if synapses <= ONE_THREAD_STEP_SYNAPSES:
        return AUTO_PACK["cpu"], (f"{_human(synapses)} synapses per step: a small net, packs pay even on 1 CPU "
                                  "thread")
    return 1, (f"{_human(synapses)} synapses per step on 1 CPU thread, above {_human(ONE_THREAD_STEP_SYNAPSES)}: a "
               "pack would be slower per trial there than the trials alone; with 2+ CPUs per trial they pack")


def make_packs(trials: Sequence[Trial], size: int | Callable[[TrialConfig], int]) -> list[Pack]:
    """Group trials of the same structure (cep.config.pack_key; training only) into packs of at most `size`
    (or `size(config)`, e.g. pack_sizes), in the order of their first member; the same trials and size always
    give the same packs."""
    groups: dict[str, list[list[Trial]]] = {}
    for t in trials:
        most = size(t.config) if callable(size) else size
        key = pack_key(t.config) if t.config.action == "train" and most > 1 else t.id
        chunks = groups.setdefault(key, [[]])
        if len(chunks[-1]) == most:
            chunks.append([])
        chunks[-1].append(t)
    packs = [c for chunks in groups.values() for c in chunks]
    order = {id(t): k for k, t in enumerate(trials)}
    packs.sort(key=lambda c: order[id(c[0])])
    return [Pack(c[0].id if len(c) == 1 else f"{c[0].id}+{len(c) - 1}", tuple(c)) for c in packs]


def fingerprint(trials: Sequence[Trial]) -> str:
    """A short hash of the resolved trial list: ids and result fields (TrialConfig.result_dict)."""
    blob = json.dumps([[t.id, t.config.result_dict()] for t in trials], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class Change:
    """How the current trial list differs from a stored one (sweep.json records), by the one "same result" rule.

    Growing is allowed (`added` trials, `extended`: only epochs raised); the rest is refused.
    """

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[tuple[str, str]] = field(default_factory=list)  # (id, "field old -> new, ...")
    extended: list[str] = field(default_factory=list)

    @property
    def refused(self) -> str:
        """What cannot continue the experiment, in a few words ("" when it only grows or is the same)."""
        changed = [f"{tid}: {what}" for tid, what in self.changed]
        return _some([(self.removed, "removed"), (changed, "changed")])

    @property
    def growth(self) -> str:
        """What the experiment gains, in a few words ("" when nothing)."""
        return _some([(self.added, "added"), (self.extended, "with more epochs")])


def compare(old: Sequence[Mapping[str, Any]], new: Sequence[Trial]) -> Change:
    """Compare a stored trial list with the current one (cep.config.result_differences decides "same")."""
    old_by_id = {r["id"]: r for r in old if isinstance(r, Mapping) and "id" in r}
    new_ids = {t.id for t in new}
    change = Change(added=[t.id for t in new if t.id not in old_by_id],
                    removed=[i for i in old_by_id if i not in new_ids])
    for t in new:
        if t.id not in old_by_id:
            continue
        before, after = old_by_id[t.id].get("config") or {}, t.config.to_dict()
        diffs = result_differences(before, after)
        grows = isinstance(before.get("epochs"), int) and after["epochs"] > before["epochs"]
        if diffs == ["epochs"] and grows and after["action"] == "train":
            change.extended.append(t.id)
        elif diffs:
            change.changed.append((t.id, ", ".join(f"{k} {before.get(k)!r} -> {after[k]!r}" for k in diffs[:3])))
    return change


def describe_change(old: Sequence[Mapping[str, Any]], new: Sequence[Trial]) -> str:
    """What prevents the current trial list from continuing a stored one ("" when it only adds trials or
    epochs, or is the same); see compare."""
    return compare(old, new).refused


def varying_fields(trials: Sequence[Trial]) -> list[str]:
    """Trial fields whose value differs between trials, in TrialConfig order."""
    if len(trials) < 2:
        return []
    first = trials[0].config
    return [k for k in FIELD_NAMES if k not in RUN_FIELDS
            and any(getattr(t.config, k) != getattr(first, k) for t in trials[1:])]


def _human(n: float) -> str:
    for unit, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.0f}"


def dry_run_table(spec: SweepSpec, trials: Sequence[Trial], packs: Sequence[Pack] = ()) -> str:
    """The trial table (id, varying fields, pack, cost), the count, the packs and the estimated total cost."""
    varying = varying_fields(trials)
    cols = [c for c in varying if c != "seed"] + (["seed"] if "seed" in varying else [])
    pack_of = {i: k for k, p in enumerate(packs, 1) for i in p.ids}
    header = ["trial"] + cols + ["epochs", "sample-steps"] + (["pack"] if packs else [])
    rows = [[t.id] + [format_value(getattr(t.config, c)) for c in cols]
            + [str(t.config.epochs), _human(sample_steps(t.config))] + ([str(pack_of[t.id])] if packs else [])
            for t in trials]
    lines = [text_table(header, rows)]
    total = sum(sample_steps(t.config) for t in trials)
    macs = sum(trial_macs(t.config) for t in trials)
    shared = {k: v for k, v in trials[0].config.to_dict().items()
              if k not in cols and k not in RUN_FIELDS} if trials else {}
    res = ", ".join(f"{k} {v:g}" for k, v in spec.resources.items())
    lines += ["",
              f"{len(trials)} trial(s) of sweep {spec.name}"
              + (f" (of {len(spec.trials)})" if len(trials) != len(spec.trials) else "")
              + f"; per trial: {res}; max_failures {spec.max_failures}",
              f"estimated cost: {_human(total)} sample-steps in total "
              f"(~{_human(macs)} multiply-adds; a sample-step is one image through one step of the dynamics)",
              "shared fields: " + ", ".join(f"{k}={format_value(v)}" for k, v in shared.items()
                                            if k in ("dataset", "setting", "activation", "batch_size", "action"))]
    if packs:
        lines.append(f"{len(packs)} pack(s) of up to {pack_size(spec)} trial(s) (pack: {spec.pack or 'auto'}); a "
                     "pack trains as one program and runs as one Ray Tune trial with the resources above")
        lines += auto_pack_lines(spec, trials) if spec.pack is None else []
    return "\n".join(lines)


def auto_pack_lines(spec: SweepSpec, trials: Sequence[Trial]) -> list[str]:
    """For the dry run: what `pack: auto` chose for each experiment's trials, and why."""
    chosen: dict[tuple[int, str], list[str]] = {}
    for t in trials:
        if t.config.action == "train":
            names = chosen.setdefault(auto_pack(t.config, spec.resources), [])
            if (t.experiment or spec.name) not in names:
                names.append(t.experiment or spec.name)
    return [f"pack: auto: {', '.join(names)}: " + (f"up to {most} per pack" if most > 1 else "each trial alone")
            + f" ({why})" for (most, why), names in chosen.items()]


def _some(groups: list[tuple[list[str], str]]) -> str:
    """"2 trial(s) added (e.g. X); 1 trial(s) changed (e.g. Y)": the non-empty groups, in a few words."""
    return "; ".join(f"{len(items)} trial(s) {what} (e.g. {items[0]})" for items, what in groups if items)
