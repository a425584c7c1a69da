"""Sweep files: parse, validate and expand a sweep YAML into a list of trials, without Ray.

A sweep file names shared trial fields (`base`), named rows (`experiments`),
a cartesian `grid` over any trial field, and the per-trial `resources` and
`max_failures` that Ray Tune uses, and `pack`: how many trials of the same
structure may train as one program (cep.sweep.plan.make_packs). `resources` holds `cpu` and `gpu` (a
fraction shares a GPU) and any custom Ray resource by name (e.g. `{gpu: 0.25,
a100: 1}` for nodes started with `ray start --resources '{"a100": 4}'`). Everything is checked here, before anything
starts: every problem becomes one line `YAML.path: what is wrong; the fix`.

Trial ids are readable and stable: `<experiment>/<field>=<value>/...` in the
grid's key order (e.g. `C-VF-1h/angle=45/seed=3`). They double as the relative
folder of the trial's results (`trials/<id>/`), so grid values are written
folder-safe: integral floats without `.0` (45.0 -> 45), lists joined with `,`,
null as `null`, and every character other than letters, digits and `. _ + , -`
replaced by `_` (a value that would then collide with another is an error).
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cep.config import FIELD_NAMES, ConfigError, TrialConfig
from cep.layout import Trial
from cep.sweep.search_space import SearchSpec, parse_search, point_segment, scheduler_problems, search_conflicts
from cep.sweep.sections import (
    DEFAULT_RESOURCES,
    check_pack,
    check_resources,
    closest,
    kind,
    parse_sets,
    plain,
    typed_fields,
    typed_grid,
)
from cep.tracking.settings import Tracking, library_problems, parse_tracking
from cep.yaml_file import YAMLFileError, read_yaml

TOP_KEYS = ("name", "description", "base", "experiments", "grid", "search", "resources", "max_failures", "pack",
            "tracking")
DEFAULT_MAX_FAILURES = 2
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
MAX_NAME = 100  # names become folder names (at most 255 bytes each on common filesystems)
MAX_TRIALS = 10_000  # trials of one sweep: the paper's largest sweep has a few hundred
MAX_SEGMENT = 200  # one `/`-separated part of a trial id, also a folder name
_UNSAFE = re.compile(r"[^A-Za-z0-9._+,-]")


class SweepError(ValueError):
    """An invalid sweep file or option: one line per problem, each `path: message`."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep: its trials in a fixed order, and how Ray should run each."""

    name: str
    description: str
    trials: tuple[Trial, ...]
    resources: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_RESOURCES))
    max_failures: int = DEFAULT_MAX_FAILURES
    source: str | None = None  # the sweep file
    pack: int | None = None  # most trials per pack (cep.sweep.plan.make_packs); None: auto
    search: SearchSpec | None = None  # the `search` section (cep.sweep.search_space); None: a grid only
    raw: Any = field(default=None, compare=False, repr=False)  # (file content, --set): to expand other points
    rounds: tuple[int, ...] = ()  # an adaptive search's points per recorded round: packs never span two rounds
    tracking: Tracking = field(default_factory=Tracking, compare=False)  # where trials are mirrored; not recorded

    def trial(self, trial_id: str) -> Trial:
        for t in self.trials:
            if t.id == trial_id:
                return t
        raise SweepError([f"--trial {trial_id}: no such trial in sweep {self.name}{closest(trial_id, self.ids)}"])

    @property
    def ids(self) -> list[str]:
        return [t.id for t in self.trials]


def load_sweep(path: str | Path, overrides: Sequence[str] = ()) -> SweepSpec:
    """Read, validate and expand a sweep file, with `--set key=value` overrides."""
    try:
        data = read_yaml(path, "sweep file")
    except YAMLFileError as e:
        raise SweepError(e.problems) from None
    return parse_sweep(data, overrides, source=str(path))


def name_problem(name: Any) -> str:
    """Why `name` cannot name a sweep or an experiment ("" when it can): the one rule for the sweep file's
    `name`, `--name` and experiment names (each becomes a folder name)."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        return (f"got {name!r}; use letters, digits and . _ + -, starting with a letter or digit (it becomes a "
                "folder name)")
    if len(name) > MAX_NAME:
        return f"{len(name)} characters; at most {MAX_NAME} (it becomes a folder name)"
    return ""


def format_value(value: Any) -> str:
    """A grid value as it appears in a trial id: short, stable and folder-safe."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = str(int(value)) if value.is_integer() else repr(value)
    elif isinstance(value, (list, tuple)):
        text = ",".join(format_value(v) for v in value)
    else:
        text = str(value)
    text = _UNSAFE.sub("_", text)
    return "_" + text if text in (".", "..", "") else text


def _origin_path(field_name: str, origins: Mapping[str, str], exp_path: str | None) -> str:
    """The YAML path to blame (or to edit) for a problem with `field_name` in one trial."""
    if field_name in origins:
        return origins[field_name]
    return f"{exp_path}.{field_name}" if exp_path else f"base.{field_name}"


def parse_sweep(data: Any, overrides: Sequence[str] = (), source: str | None = None,
                points: Sequence[Mapping[str, Any]] | None = None) -> SweepSpec:
    """Validate a sweep file's content and expand it into trials; raises SweepError listing every problem.

    With a `search` section every grid point trains each search point: `points` (an adaptive searcher's
    suggestions so far), or for random search the first num_samples points drawn from the search's seed."""
    problems: list[str] = []
    if not isinstance(data, Mapping):
        raise SweepError([f"{source or 'sweep'}: expected a mapping with name, base, experiments, grid "
                          f"(see sweeps/quickstart.yaml), got {kind(data)}"])
    set_problems: list[str] = []  # listed after the file's own problems
    sets, sweep_sets = parse_sets(overrides, set_problems)
    data = dict(data)
    data.update({k: v for k, v in sweep_sets.items() if k in ("max_failures", "pack")})
    if "resources" in sweep_sets:
        own = data.get("resources")
        data["resources"] = {**(own if isinstance(own, Mapping) else {}), **sweep_sets["resources"]}
    name, description = _check_top(data, problems)
    base = typed_fields(data.get("base"), "base", problems)
    grid = typed_grid(data.get("grid"), "grid", problems)
    resources = check_resources(data.get("resources"), problems)
    max_failures = data.get("max_failures", DEFAULT_MAX_FAILURES)
    if isinstance(max_failures, bool) or not isinstance(max_failures, int) or max_failures < 0:
        problems.append(f"max_failures: got {max_failures!r}; a non-negative integer (retries per trial)")
        max_failures = DEFAULT_MAX_FAILURES
    pack = check_pack(data.get("pack"), problems)
    search = parse_search(data.get("search"), problems)
    tracking = parse_tracking(data.get("tracking"), problems)
    problems += library_problems(tracking)
    problems += set_problems
    experiments = _experiments(data, grid, problems)
    problems += [f"base.{key}: also a grid key; remove one of them" for key in base if key in grid]
    grids = [grid] + [g for _, _, g in experiments]
    problems += [f"--set {key}: {key} is a grid key of this sweep; choose its values with --only "
                 f"(e.g. --only '*/{key}=VALUE*') or edit the grid" for key in sets if any(key in g for g in grids)]
    problems += search_conflicts(search, base, [f for _, f, _ in experiments], grids, sets)
    problems += scheduler_problems(search, pack)
    too_many = _count_problems(experiments, grid, search.num_samples if search is not None else 1)
    if too_many:  # expanding it would take minutes and gigabytes
        raise SweepError(problems + too_many)
    if search is not None and points is None:  # the sweep file itself (not a reread with recorded points)
        if not problems:
            problems += _edge_problems(experiments, base, grid, sets, search)
        points = [] if search.adaptive else search.points()
    # expand what could be read, so that one pass reports every problem (not one round after another)
    found: list[str] = []
    trials = _expand(experiments, base, grid, sets, found, points if search is not None else None,
                     collisions=not problems)
    problems += _unreported(found, problems)
    if resources["gpu"] == 0 and any(t.config.device.startswith("cuda") for t in trials):
        problems.append("resources.gpu: 0, but trials ask for device cuda; give each trial a GPU share "
                        "(e.g. resources: {gpu: 0.25}) or use device auto")
    if problems:
        raise SweepError(problems)
    return SweepSpec(name=str(name), description=description, trials=tuple(trials), resources=resources,
                     max_failures=max_failures, source=source, pack=pack, search=search, raw=(data, tuple(overrides)),
                     tracking=tracking)


def _check_top(data: Mapping[str, Any], problems: list[str]) -> tuple[Any, str]:
    """The top-level keys, `name` and `description`."""
    for key in data:
        if key not in TOP_KEYS:
            hint = ("; trial fields go under base: (or an experiment)" if key in FIELD_NAMES
                    else closest(str(key), TOP_KEYS) or f"; known keys: {', '.join(TOP_KEYS)}")
            problems.append(f"{key}: unknown key{hint}")
    name = data.get("name")
    if name is None:
        problems.append("name: missing; give the sweep a name (it names the results folder), e.g. name: fig4_angles")
    elif name_problem(name):
        problems.append(f"name: {name_problem(name)}")
    description = data.get("description", "")
    if description is None:
        description = ""
    if not isinstance(description, str):
        problems.append(f"description: got {kind(description)}; expected a string")
    return name, description if isinstance(description, str) else ""


Experiment = tuple["str | None", dict[str, Any], dict[str, list[Any]]]  # name, own fields, own grid


def _experiments(data: Mapping[str, Any], grid: dict[str, list[Any]], problems: list[str]) -> list[Experiment]:
    """The `experiments` section (one unnamed experiment when absent), each checked against the grid."""
    raw = data.get("experiments")
    if "experiments" in data and raw is None or isinstance(raw, Mapping) and not raw:
        problems.append("experiments: empty; list at least one named experiment or remove the key")
        return []
    if raw is None:
        return [(None, {}, {})]
    if not isinstance(raw, Mapping):
        problems.append(f"experiments: expected a mapping of named experiments "
                        f"(NAME: {{field: value, ...}}), got {kind(raw)}")
        return []
    experiments: list[Experiment] = []
    for exp_name, body in raw.items():
        path = f"experiments.{exp_name}"
        if name_problem(exp_name):
            problems.append(f"{path}: {name_problem(exp_name)}; it starts every trial id")
            continue
        if body is not None and not isinstance(body, Mapping):
            problems.append(f"{path}: expected a mapping of trial fields, got {kind(body)}")
            continue
        body = dict(body or {})
        own_grid = typed_grid(body.pop("grid", None), f"{path}.grid", problems)
        fields = typed_fields(body, path, problems)
        for key in fields:
            if key in own_grid:
                problems.append(f"{path}.{key}: also a key of {path}.grid; remove one of them")
            elif key in grid:
                problems.append(f"{path}.{key}: also a grid key; remove it here, or give this experiment "
                                f"its own grid: {{{key}: [{plain(fields[key])!r}]}}")
        experiments.append((exp_name, fields, own_grid))
    return experiments


def trial_count(experiments: list[Experiment], grid: dict[str, list[Any]], points: int = 1) -> int:
    """How many trials the experiments' grids give (each grid point for every search point), counted without
    expanding them."""
    return points * sum(math.prod(len(v) for v in {**grid, **own_grid}.values()) for _, _, own_grid in experiments)


def _count_problems(experiments: list[Experiment], grid: dict[str, list[Any]], points: int = 1) -> list[str]:
    """A sweep larger than MAX_TRIALS, refused before a single trial is made."""
    n = trial_count(experiments, grid, points)
    if n <= MAX_TRIALS:
        return []
    biggest = max(grid, key=lambda k: len(grid[k]), default=None)
    hint = f" (grid.{biggest} has {len(grid[biggest])} values)" if biggest else ""
    return [f"grid: {n:,} trials, more than the {MAX_TRIALS:,} a sweep may have{hint}; use fewer grid values, or "
            "split it into several sweeps (each with its own name)"]


def _edge_problems(experiments: list[Experiment], base: dict[str, Any], grid: dict[str, list[Any]],
                   sets: dict[str, Any], search: SearchSpec) -> list[str]:
    """Values at the edges of the search space that a trial refuses: found when the file is read (--dry-run),
    not once a searcher suggests one after a round has trained."""
    edges = search.edge_points()
    edges = edges[:max(1, MAX_TRIALS // max(1, trial_count(experiments, grid)))]  # as bounded as the sweep
    found: list[str] = []
    _expand(experiments, base, grid, sets, found, edges, collisions=False)
    first = {line.split(": ", 1)[0]: re.sub(r" \(trials? [^()]*\)$", "", line) for line in reversed(found)}
    return [line + (" (at an edge of search.space: a value the search may suggest)" if path.startswith("search.")
                    else "") for path, line in reversed(first.items())]


def _unreported(found: list[str], reported: list[str]) -> list[str]:
    """Problems of the expanded trials whose YAML path has no problem yet (a value already refused there
    was left out of the trials, so what they say of it would only repeat it, or mislead)."""
    paths = {p.split(": ", 1)[0].split("[", 1)[0] for p in reported}
    fields = {path.rsplit(".", 1)[-1] for path in paths} & set(FIELD_NAMES)
    return [p for p in found if p.split(": ", 1)[0] not in paths
            and not any(re.search(rf"\b{f}\b", p.split(": ", 1)[-1]) for f in fields)]


def _expand(experiments: list[Experiment], base: dict[str, Any], grid: dict[str, list[Any]], sets: dict[str, Any],
            problems: list[str], points: Sequence[Mapping[str, Any]] | None = None,
            collisions: bool = True) -> list[Trial]:
    """The cartesian product per experiment (inside each search point), each trial checked by TrialConfig;
    problems grouped per YAML path."""
    trials: list[Trial] = []
    # (path, message) -> [(experiment, trial id)]: one line per problem however many trials share it
    grouped: dict[tuple[str, str], list[tuple[str | None, str]]] = {}
    counts: dict[str | None, int] = {}
    for exp_name, fields, own_grid in experiments:
        exp_path = f"experiments.{exp_name}" if exp_name is not None else None
        merged_grid = {**own_grid, **{k: v for k, v in grid.items() if k not in own_grid}}  # own keys first
        origins = {k: f"base.{k}" for k in base}
        origins.update({k: f"{exp_path}.{k}" for k in fields})
        for k in merged_grid:
            origins[k] = f"{exp_path}.grid.{k}" if k in own_grid else f"grid.{k}"
        origins.update({k: f"--set {k}" for k in sets})
        origins.update({k: f"search.space.{k}" for p in points or () for k in p})
        keys = list(merged_grid)
        for k_point, combo in itertools.product(range(len(points)) if points is not None else [None],
                                                itertools.product(*(merged_grid[k] for k in keys))):
            drawn = {k: plain(v) for k, v in points[k_point].items()} if k_point is not None else {}
            values = dict(zip(keys, combo, strict=True))
            segments = ([exp_name] if exp_name is not None else []) + (
                [point_segment(k_point)] if k_point is not None else []) + [f"{k}={format_value(v)}"
                                                                           for k, v in values.items()]
            trial_id = "/".join(segments) or "trial"
            counts[exp_name] = counts.get(exp_name, 0) + 1
            try:  # grid values are typed already (typed_fields, typed_grid, parse_sets): no second coercion;
                # a search point's drawn values are not
                merged = {**base, **fields, **drawn, **values, **sets}
                cfg = TrialConfig.from_dict(merged) if drawn else TrialConfig(**merged)
            except ConfigError as e:
                for fname, message in e.problems:
                    key = (_origin_path(fname, origins, exp_path), message)
                    grouped.setdefault(key, []).append((exp_name, trial_id))
                continue
            point = {"search": k_point, **drawn} if k_point is not None else {}
            trials.append(Trial(trial_id, exp_name, {**point, **{k: plain(v) for k, v in values.items()}}, cfg))
    problems += _grouped_problems(grouped, counts)
    if not problems and collisions:
        problems += _collisions(trials)
    return trials


def _grouped_problems(grouped: dict[tuple[str, str], list[tuple[str | None, str]]],
                      counts: dict[str | None, int]) -> list[str]:
    """One line per (YAML path, problem), naming the trials only when not all of their experiments share it."""
    out = []
    for (path, message), hits in grouped.items():
        exps = {e for e, _ in hits}
        ids = [i for _, i in hits]
        if len(ids) == sum(counts[e] for e in exps):
            suffix = ""
        elif len(ids) == 1:
            suffix = f" (trial {ids[0]})"
        else:
            suffix = f" (trials {', '.join(ids[:2])}" + (f" and {len(ids) - 2} more)" if len(ids) > 2 else ")")
        out.append(f"{path}: {message}{suffix}")
    return out


def _collisions(trials: list[Trial]) -> list[str]:
    """Trial ids that collide as folder names, and trials that would compute exactly the same thing."""
    out = []
    seen_ids: dict[str, Trial] = {}
    seen_cfg: dict[str, Trial] = {}
    for t in trials:
        if t.id in seen_ids:
            out.append(f"grid: trials {t.id!r} collide once written as folder names "
                       f"(values {seen_ids[t.id].grid} and {t.grid}); make the grid values differ visibly")
            continue
        seen_ids[t.id] = t
        long = [seg for seg in t.id.split("/") if len(seg) > MAX_SEGMENT]
        if long:
            out.append(f"grid: trial id part {long[0][:40]!r}... is {len(long[0])} characters, too long for a "
                       f"folder name (at most {MAX_SEGMENT}); use shorter grid values")
            continue
        key = json.dumps(t.config.result_dict(), sort_keys=True)
        if key in seen_cfg and "search" not in t.grid:  # two search points may coincide (a choice space)
            first = seen_cfg[key]
            where = f"experiments.{t.experiment}" if t.experiment is not None else "grid"
            out.append(f"{where}: trial {t.id} has exactly the configuration of trial {first.id} "
                       "(a duplicate); remove one or make them differ (e.g. another seed)")
            continue
        seen_cfg[key] = t
    return out

