"""Sweep files: parse, validate and expand a sweep YAML into a list of trials, without Ray.

A sweep file names shared trial fields (`base`), named rows (`experiments`),
a cartesian `grid` over any trial field, and the per-trial `resources` and
`max_failures` that Ray Tune uses. `resources` holds `cpu` and `gpu` (a
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

import difflib
import fnmatch
import hashlib
import itertools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cep.config import FIELD_NAMES, ConfigError, TrialConfig, coerce

TOP_KEYS = ("name", "description", "base", "experiments", "grid", "resources", "max_failures")
RESOURCE_KEYS = ("cpu", "gpu")
# Any other name in `resources` is a custom Ray resource (`ray start --resources '{"NAME": N}'`), except
# names close to cpu / gpu (gpus, CPU, tpu, ...): those are refused as the typos they most likely are.
_CUSTOM_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:/-]*$")
DEFAULT_RESOURCES = {"cpu": 1.0, "gpu": 0.0}
DEFAULT_MAX_FAILURES = 2
# Fields that say where a trial reads and writes, not what it computes: they may
# differ between the machine that started a sweep and the one that resumes it.
LOCATION_FIELDS = ("out_dir", "checkpoint", "data_dir")
# Images per split (spec: mnist5k is the embedded 4,000/1,000 split; mnist is torchvision's).
DATASET_SIZES = {"mnist5k": (4000, 1000), "mnist": (60000, 10000)}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+,-]")


class SweepError(ValueError):
    """An invalid sweep file or option: one line per problem, each `path: message`."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class Trial:
    """One trial of a sweep: its id, where it came from, and its complete configuration."""

    id: str
    experiment: str | None
    grid: dict[str, Any]  # the grid values that made this trial (JSON-friendly)
    config: TrialConfig

    def record(self) -> dict[str, Any]:
        """The trial's entry in sweep.json."""
        return {"id": self.id, "experiment": self.experiment, "grid": self.grid, "config": self.config.to_dict()}


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep: its trials in a fixed order, and how Ray should run each."""

    name: str
    description: str
    trials: tuple[Trial, ...]
    resources: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_RESOURCES))
    max_failures: int = DEFAULT_MAX_FAILURES
    source: str | None = None  # the sweep file

    def trial(self, trial_id: str) -> Trial:
        for t in self.trials:
            if t.id == trial_id:
                return t
        raise SweepError([f"--trial {trial_id}: no such trial in sweep {self.name}{_closest(trial_id, self.ids)}"])

    @property
    def ids(self) -> list[str]:
        return [t.id for t in self.trials]


# ------------------------------------------------------------------ reading
class _Loader(yaml.SafeLoader):
    """Safe YAML that refuses a key repeated in one mapping (PyYAML would keep the last silently)."""

    problems: list[str]

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                self.problems.append(f"line {line}: key {key!r} repeats the one on line {seen[key]}; keep one")
            else:
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> Any:
    """The sweep file's content; unreadable files and YAML syntax errors become a SweepError."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise SweepError([f"{path}: cannot read the sweep file ({e.strerror or e})"]) from None
    loader = _Loader(text)
    loader.problems = []
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise SweepError([f"{path}: {where}invalid YAML ({getattr(e, 'problem', None) or e}); "
                          "fix the syntax"]) from None
    finally:
        loader.dispose()
    if loader.problems:
        raise SweepError([f"{path}: {p}" for p in loader.problems])
    return data


def load_sweep(path: str | Path, overrides: Sequence[str] = ()) -> SweepSpec:
    """Read, validate and expand a sweep file, with `--set key=value` overrides."""
    return parse_sweep(read_yaml(path), overrides, source=str(path))


# ---------------------------------------------------------------- validation
def _closest(name: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f"; did you mean {close[0]}?" if close else ""


def _unknown_field(path: str, key: Any) -> str:
    hint = _closest(str(key), FIELD_NAMES) or f"; trial fields are {', '.join(FIELD_NAMES)}"
    return f"{path}: unknown trial field {key!r}{hint}"


def _typed_fields(section: Any, path: str, problems: list[str]) -> dict[str, Any]:
    """A mapping of trial fields typed by TrialConfig; problems are appended with their YAML path."""
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        problems.append(f"{path}: expected a mapping of trial fields (field: value), got {_kind(section)}")
        return {}
    out: dict[str, Any] = {}
    for key, value in section.items():
        if key not in FIELD_NAMES:
            problems.append(_unknown_field(f"{path}.{key}", key))
            continue
        try:
            out[key] = coerce(key, value)
        except ConfigError as e:
            problems.extend(f"{path}.{key}: {m}" for _, m in e.problems)
    return out


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return f"{value!r} (true/false)"
    if isinstance(value, (list, tuple)):
        return f"a list {list(value)!r}"
    if isinstance(value, Mapping):
        return "a mapping"
    return repr(value)


def _typed_grid(section: Any, path: str, problems: list[str]) -> dict[str, list[Any]]:
    """Grid keys with their typed value lists (each non-empty, without repeats)."""
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        problems.append(f"{path}: expected a mapping field: [values], e.g. {{seed: [0, 1, 2]}}, got {_kind(section)}")
        return {}
    out: dict[str, list[Any]] = {}
    for key, values in section.items():
        where = f"{path}.{key}"
        if key not in FIELD_NAMES:
            problems.append(_unknown_field(where, key))
            continue
        if not isinstance(values, list):
            problems.append(f"{where}: expected a list of values, e.g. [{values!r}], got {_kind(values)}; "
                            "a single value belongs in base")
            continue
        if not values:
            problems.append(f"{where}: empty list gives no trials; give at least one value or remove {key}")
            continue
        typed: list[Any] = []
        for i, v in enumerate(values):
            try:
                tv = coerce(key, v)
            except ConfigError as e:
                problems.extend(f"{where}[{i}]: {m}" for _, m in e.problems)
                continue
            if tv in typed:
                problems.append(f"{where}[{i}]: value {_plain(tv)!r} is listed twice; remove the repeat")
                continue
            typed.append(tv)
        out[key] = typed
    return out


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """`--set key=value` strings to typed trial fields (values read as YAML: 0.5, true, [10, 32, 784], null)."""
    problems: list[str] = []
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"--set {item}: expected key=value, e.g. --set epochs=1")
            continue
        if key not in FIELD_NAMES:
            problems.append(_unknown_field(f"--set {key}", key))
            continue
        try:
            value = yaml.safe_load(text) if text.strip() else text
        except yaml.YAMLError:
            value = text
        try:
            out[key] = coerce(key, value)
        except ConfigError as e:
            problems.extend(f"--set {key}: {m}" for _, m in e.problems)
    if problems:
        raise SweepError(problems)
    return out


def _apply_sweep_overrides(data: Mapping[str, Any], overrides: Sequence[str],
                           problems: list[str]) -> tuple[dict[str, Any], list[str]]:
    """`--set resources.gpu=0.25` and `--set max_failures=3` change the sweep itself; the rest are trial fields."""
    data = dict(data)
    rest = []
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if key != "max_failures" and not key.startswith("resources."):
            rest.append(item)
            continue
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        if not sep:
            problems.append(f"--set {item}: expected key=value, e.g. --set resources.gpu=0.25")
        elif key == "max_failures":
            data["max_failures"] = value
        else:
            resources = dict(data.get("resources") or {})
            resources[key.partition(".")[2]] = value
            data["resources"] = resources
    return data, rest


def _plain(value: Any) -> Any:
    """JSON-friendly form of a typed value (tuples become lists)."""
    return list(value) if isinstance(value, tuple) else value


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


def _check_resources(section: Any, problems: list[str]) -> dict[str, float]:
    res = dict(DEFAULT_RESOURCES)
    if section is None:
        return res
    if not isinstance(section, Mapping):
        problems.append(f"resources: expected a mapping like {{cpu: 1, gpu: 0.25}}, got {_kind(section)}")
        return res
    for key, value in section.items():
        if key not in RESOURCE_KEYS and (_closest(str(key).lower(), RESOURCE_KEYS)
                                         or not _CUSTOM_RE.match(str(key))):
            hint = _closest(str(key).lower(), RESOURCE_KEYS) or (
                "; use cpu (per trial), gpu (fraction per trial) or the name of a custom Ray resource "
                "(letters, digits and _ . : / -)")
            problems.append(f"resources.{key}: unknown resource{hint}")
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"resources.{key}: got {_kind(value)}; expected a number")
            continue
        if key not in RESOURCE_KEYS and value < 0:
            problems.append(f"resources.{key}: got {value}; a custom resource per trial is a number >= 0")
            continue
        if key == "cpu" and value <= 0:
            problems.append(f"resources.cpu: got {value}; each trial needs a positive number of CPUs, e.g. 1")
            continue
        if key == "gpu" and (value < 0 or (value > 1 and not float(value).is_integer())):
            problems.append(f"resources.gpu: got {value}; use 0 (CPU only), a fraction up to 1, or a whole number")
            continue
        res[key] = float(value)
    return res


def _origin_path(field_name: str, origins: Mapping[str, str], exp_path: str | None) -> str:
    """The YAML path to blame (or to edit) for a problem with `field_name` in one trial."""
    if field_name in origins:
        return origins[field_name]
    return f"{exp_path}.{field_name}" if exp_path else f"base.{field_name}"


def _identity(cfg: TrialConfig) -> str:
    """A trial's configuration without where it reads and writes, as canonical JSON."""
    d = {k: v for k, v in cfg.to_dict().items() if k not in LOCATION_FIELDS}
    return json.dumps(d, sort_keys=True)


def parse_sweep(data: Any, overrides: Sequence[str] = (), source: str | None = None) -> SweepSpec:
    """Validate a sweep file's content and expand it into trials; raises SweepError listing every problem."""
    problems: list[str] = []
    if not isinstance(data, Mapping):
        raise SweepError([f"{source or 'sweep'}: expected a mapping with name, base, experiments, grid "
                          f"(see sweeps/quickstart.yaml), got {_kind(data)}"])
    data, overrides = _apply_sweep_overrides(data, overrides, problems)
    for key in data:
        if key not in TOP_KEYS:
            hint = ("; trial fields go under base: (or an experiment)" if key in FIELD_NAMES
                    else _closest(str(key), TOP_KEYS) or f"; known keys: {', '.join(TOP_KEYS)}")
            problems.append(f"{key}: unknown key{hint}")

    name = data.get("name")
    if name is None:
        problems.append("name: missing; give the sweep a name (it names the results folder), e.g. name: fig4_angles")
    elif not isinstance(name, str) or not NAME_RE.match(name):
        problems.append(f"name: got {name!r}; use letters, digits and . _ + - (it names the results folder)")
    description = data.get("description", "")
    if description is None:
        description = ""
    if not isinstance(description, str):
        problems.append(f"description: got {_kind(description)}; expected a string")

    base = _typed_fields(data.get("base"), "base", problems)
    grid = _typed_grid(data.get("grid"), "grid", problems)
    resources = _check_resources(data.get("resources"), problems)
    max_failures = data.get("max_failures", DEFAULT_MAX_FAILURES)
    if isinstance(max_failures, bool) or not isinstance(max_failures, int) or max_failures < 0:
        problems.append(f"max_failures: got {max_failures!r}; a non-negative integer (retries per trial)")
        max_failures = DEFAULT_MAX_FAILURES
    try:
        sets = parse_overrides(overrides)
    except SweepError as e:
        problems.extend(e.problems)
        sets = {}

    # experiments: name -> (own fields, own grid)
    experiments: list[tuple[str | None, dict[str, Any], dict[str, list[Any]]]] = []
    raw_exps = data.get("experiments")
    if "experiments" in data and raw_exps is None or isinstance(raw_exps, Mapping) and not raw_exps:
        problems.append("experiments: empty; list at least one named experiment or remove the key")
    elif raw_exps is None:
        experiments.append((None, {}, {}))
    elif not isinstance(raw_exps, Mapping):
        problems.append(f"experiments: expected a mapping of named experiments "
                        f"(NAME: {{field: value, ...}}), got {_kind(raw_exps)}")
    else:
        for exp_name, body in raw_exps.items():
            path = f"experiments.{exp_name}"
            if not isinstance(exp_name, str) or not NAME_RE.match(exp_name):
                problems.append(f"{path}: the name {exp_name!r} must use letters, digits and . _ + - "
                                "(it starts every trial id)")
                continue
            if body is not None and not isinstance(body, Mapping):
                problems.append(f"{path}: expected a mapping of trial fields, got {_kind(body)}")
                continue
            body = dict(body or {})
            own_grid = _typed_grid(body.pop("grid", None), f"{path}.grid", problems)
            fields = _typed_fields(body, path, problems)
            for key in fields:
                if key in own_grid:
                    problems.append(f"{path}.{key}: also a key of {path}.grid; remove one of them")
                elif key in grid:
                    problems.append(f"{path}.{key}: also a grid key; remove it here, or give this experiment "
                                    f"its own grid: {{{key}: [{_plain(fields[key])!r}]}}")
            experiments.append((exp_name, fields, own_grid))
    for key in base:
        if key in grid:
            problems.append(f"base.{key}: also a grid key; remove one of them")
    for key in sets:
        grids = [grid] + [g for _, _, g in experiments]
        if any(key in g for g in grids):
            problems.append(f"--set {key}: {key} is a grid key of this sweep; choose its values with --only "
                            f"(e.g. --only '*/{key}=VALUE*') or edit the grid")
    if problems:
        raise SweepError(problems)

    trials = _expand(experiments, base, grid, sets, problems)
    if resources["gpu"] == 0 and any(t.config.device.startswith("cuda") for t in trials):
        problems.append("resources.gpu: 0, but trials ask for device cuda; give each trial a GPU share "
                        "(e.g. resources: {gpu: 0.25}) or use device auto")
    if problems:
        raise SweepError(problems)
    assert isinstance(name, str)
    return SweepSpec(name=name, description=description, trials=tuple(trials), resources=resources,
                     max_failures=max_failures, source=source)


def _expand(experiments: list[tuple[str | None, dict[str, Any], dict[str, list[Any]]]], base: dict[str, Any],
            grid: dict[str, list[Any]], sets: dict[str, Any], problems: list[str]) -> list[Trial]:
    """The cartesian product per experiment, each trial checked by TrialConfig; problems grouped per YAML path."""
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
        keys = list(merged_grid)
        for combo in itertools.product(*(merged_grid[k] for k in keys)):
            values = dict(zip(keys, combo, strict=True))
            segments = ([exp_name] if exp_name is not None else []) + [f"{k}={format_value(v)}"
                                                                     for k, v in values.items()]
            trial_id = "/".join(segments) or "trial"
            counts[exp_name] = counts.get(exp_name, 0) + 1
            try:
                cfg = TrialConfig.from_dict({**base, **fields, **values, **sets})
            except ConfigError as e:
                for fname, message in e.problems:
                    key = (_origin_path(fname, origins, exp_path), message)
                    grouped.setdefault(key, []).append((exp_name, trial_id))
                continue
            trials.append(Trial(trial_id, exp_name, {k: _plain(v) for k, v in values.items()}, cfg))
    for (path, message), hits in grouped.items():
        # name the trials only when the problem depends on grid values (not all trials of its experiments)
        exps = {e for e, _ in hits}
        ids = [i for _, i in hits]
        if len(ids) == sum(counts[e] for e in exps):
            suffix = ""
        elif len(ids) == 1:
            suffix = f" (trial {ids[0]})"
        else:
            suffix = f" (trials {', '.join(ids[:2])}" + (f" and {len(ids) - 2} more)" if len(ids) > 2 else ")")
        problems.append(f"{path}: {message}{suffix}")
    if problems:
        return trials

    seen_ids: dict[str, Trial] = {}
    seen_cfg: dict[str, Trial] = {}
    for t in trials:
        if t.id in seen_ids:
            problems.append(f"grid: trials {t.id!r} collide once written as folder names "
                            f"(values {seen_ids[t.id].grid} and {t.grid}); make the grid values differ visibly")
            continue
        seen_ids[t.id] = t
        key = _identity(t.config)
        if key in seen_cfg:
            first = seen_cfg[key]
            where = f"experiments.{t.experiment}" if t.experiment is not None else "grid"
            problems.append(f"{where}: trial {t.id} has exactly the configuration of trial {first.id} "
                            "(a duplicate); remove one or make them differ (e.g. another seed)")
            continue
        seen_cfg[key] = t
    return trials


# ------------------------------------------------------------------ helpers
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


def fingerprint(trials: Sequence[Trial]) -> str:
    """A short hash of the resolved trial list (ids and configurations, not locations)."""
    blob = json.dumps([[t.id, json.loads(_identity(t.config))] for t in trials], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def describe_change(old: Sequence[Mapping[str, Any]], new: Sequence[Trial]) -> str:
    """What differs between a stored trial list (sweep.json records) and the current one, in a few words."""
    old_by_id = {r["id"]: r for r in old}
    new_ids = [t.id for t in new]
    added = [i for i in new_ids if i not in old_by_id]
    removed = [i for i in old_by_id if i not in set(new_ids)]
    parts = []
    if added:
        parts.append(f"{len(added)} trial(s) added (e.g. {added[0]})")
    if removed:
        parts.append(f"{len(removed)} trial(s) removed (e.g. {removed[0]})")
    changed = []
    for t in new:
        if t.id in old_by_id:
            before = {k: v for k, v in old_by_id[t.id].get("config", {}).items() if k not in LOCATION_FIELDS}
            after = json.loads(_identity(t.config))
            diffs = [k for k in after if before.get(k) != after[k]]
            if diffs:
                changed.append((t.id, diffs, before, after))
    if changed:
        tid, diffs, before, after = changed[0]
        what = ", ".join(f"{k} {before.get(k)!r} -> {after[k]!r}" for k in diffs[:3])
        parts.append(f"{len(changed)} trial(s) changed (e.g. {tid}: {what})")
    return "; ".join(parts) or "the trial list differs"


def _analysis_steps(cfg: TrialConfig) -> int:
    """The gradient analysis of one minibatch: T free steps, one backward pass through the last Kmax of
    them, and Kmax nudged steps (cep.gdu)."""
    return cfg.batch_size * (cfg.T + 2 * cfg.Kmax)


def sample_steps(cfg: TrialConfig) -> int:
    """Estimated cost of a trial in sample-steps: one sample through one step of the dynamics.

    Training: every training sample runs T free and Kmax nudged steps per epoch,
    every test sample T steps, plus one gradient analysis when angle_grad is on.
    """
    if cfg.action == "gdu":
        return _analysis_steps(cfg)
    n_train, n_test = DATASET_SIZES[cfg.dataset]
    n_train = min(n_train, cfg.train_samples or n_train)
    n_test = min(n_test, cfg.test_samples or n_test)
    steps = cfg.epochs * (n_train * (cfg.T + cfg.Kmax) + n_test * cfg.T)
    return steps + (_analysis_steps(cfg) if cfg.angle_grad else 0)


def n_weights(cfg: TrialConfig) -> int:
    """Synapses of the network (feedback matrices of vf included)."""
    w = sum(a * b for a, b in zip(cfg.size_tab[:-1], cfg.size_tab[1:], strict=True))
    if cfg.rule == "vf":
        w += sum(a * b for a, b in zip(cfg.size_tab[:-2], cfg.size_tab[1:-1], strict=True))
    return w


def varying_fields(trials: Sequence[Trial]) -> list[str]:
    """Trial fields whose value differs between trials, in TrialConfig order."""
    if len(trials) < 2:
        return []
    dicts = [t.config.to_dict() for t in trials]
    return [k for k in FIELD_NAMES if k not in LOCATION_FIELDS and any(d[k] != dicts[0][k] for d in dicts[1:])]


def _human(n: float) -> str:
    for unit, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.0f}"


def dry_run_table(spec: SweepSpec, trials: Sequence[Trial]) -> str:
    """The trial table (id, varying fields, cost), the count and the estimated total cost."""
    varying = varying_fields(trials)
    cols = [c for c in varying if c != "seed"] + (["seed"] if "seed" in varying else [])
    header = ["trial"] + cols + ["epochs", "sample-steps"]
    rows = [[t.id] + [format_value(t.config.to_dict()[c]) for c in cols]
            + [str(t.config.epochs), _human(sample_steps(t.config))] for t in trials]
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header] + rows]
    total = sum(sample_steps(t.config) for t in trials)
    macs = sum(sample_steps(t.config) * 2 * n_weights(t.config) for t in trials)
    shared = {k: v for k, v in trials[0].config.to_dict().items()
              if k not in cols and k not in LOCATION_FIELDS} if trials else {}
    res = ", ".join(f"{k} {v:g}" for k, v in spec.resources.items())
    lines += ["",
              f"{len(trials)} trial(s) of sweep {spec.name}"
              + (f" (of {len(spec.trials)})" if len(trials) != len(spec.trials) else "")
              + f"; per trial: {res}; max_failures {spec.max_failures}",
              f"estimated cost: {_human(total)} sample-steps in total "
              f"(~{_human(macs)} multiply-adds; a sample-step is one image through one step of the dynamics)",
              "shared fields: " + ", ".join(f"{k}={format_value(v)}" for k, v in shared.items()
                                            if k in ("dataset", "setting", "activation", "batch_size", "action"))]
    return "\n".join(lines)
