"""The typed sections of a sweep file (trial fields, grids, resources) and the `--set` options.

Each problem becomes one line `YAML.path: what is wrong; the fix`, appended to a list
so that every problem of a file is reported at once.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml

from cep.config import FIELD_NAMES, ConfigError, coerce

RESOURCE_KEYS = ("cpu", "gpu")
# Any other name in `resources` is a custom Ray resource (`ray start --resources '{"NAME": N}'`), except
# names close to cpu / gpu (gpus, CPU, tpu, ...): those are refused as the typos they most likely are.
_CUSTOM_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:/-]*$")
DEFAULT_RESOURCES = {"cpu": 1.0, "gpu": 0.0}


def plain(value: Any) -> Any:
    """JSON-friendly form of a typed value (tuples become lists)."""
    return list(value) if isinstance(value, tuple) else value


def closest(name: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f"; did you mean {close[0]}?" if close else ""


def unknown_field(path: str, key: Any) -> str:
    hint = closest(str(key), FIELD_NAMES) or f"; trial fields are {', '.join(FIELD_NAMES)}"
    return f"{path}: unknown trial field {key!r}{hint}"


def typed_fields(section: Any, path: str, problems: list[str]) -> dict[str, Any]:
    """A mapping of trial fields typed by TrialConfig; problems are appended with their YAML path."""
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        problems.append(f"{path}: expected a mapping of trial fields (field: value), got {kind(section)}")
        return {}
    out: dict[str, Any] = {}
    for key, value in section.items():
        if key not in FIELD_NAMES:
            problems.append(unknown_field(f"{path}.{key}", key))
            continue
        try:
            out[key] = coerce(key, value)
        except ConfigError as e:
            problems.extend(f"{path}.{key}: {m}" for _, m in e.problems)
    return out


def kind(value: Any) -> str:
    if isinstance(value, bool):
        return f"{value!r} (true/false)"
    if isinstance(value, (list, tuple)):
        return f"a list {list(value)!r}"
    if isinstance(value, Mapping):
        return "a mapping"
    return repr(value)


def typed_grid(section: Any, path: str, problems: list[str]) -> dict[str, list[Any]]:
    """Grid keys with their typed value lists (each non-empty, without repeats)."""
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        problems.append(f"{path}: expected a mapping field: [values], e.g. {{seed: [0, 1, 2]}}, got {kind(section)}")
        return {}
    out: dict[str, list[Any]] = {}
    for key, values in section.items():
        where = f"{path}.{key}"
        if key not in FIELD_NAMES:
            problems.append(unknown_field(where, key))
            continue
        if not isinstance(values, list):
            problems.append(f"{where}: expected a list of values, e.g. [{values!r}], got {kind(values)}; "
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
                problems.append(f"{where}[{i}]: value {plain(tv)!r} is listed twice; remove the repeat")
                continue
            typed.append(tv)
        out[key] = typed
    return out


def parse_sets(items: Sequence[str], problems: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`--set key=value` options: (typed trial fields, changes to the sweep's own keys).

    Values are read as YAML (0.5, true, [10, 32, 784], null). `resources.NAME=N`, `max_failures=N` and
    `pack=N|auto` change the sweep itself; every other key must be a trial field.
    """
    fields: dict[str, Any] = {}
    sweep: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"--set {item}: expected key=value, e.g. --set epochs=1")
            continue
        try:
            value = yaml.safe_load(text) if text.strip() else text
        except yaml.YAMLError:
            value = text
        if key in ("max_failures", "pack"):
            sweep[key] = value
        elif key.startswith("resources."):
            sweep.setdefault("resources", {})[key.partition(".")[2]] = value
        elif key not in FIELD_NAMES:
            problems.append(unknown_field(f"--set {key}", key))
        else:
            try:
                fields[key] = coerce(key, value)
            except ConfigError as e:
                problems.extend(f"--set {key}: {m}" for _, m in e.problems)
    return fields, sweep


def check_pack(value: Any, problems: list[str]) -> int | None:
    """`pack`: auto (None: sized from the resources when the sweep runs) or trials per pack (1: no packing)."""
    if value is None or value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        problems.append(f"pack: got {value!r}; auto, or the most trials per pack (1: every trial alone)")
        return None
    return value


def check_resources(section: Any, problems: list[str]) -> dict[str, float]:
    res = dict(DEFAULT_RESOURCES)
    if section is None:
        return res
    if not isinstance(section, Mapping):
        problems.append(f"resources: expected a mapping like {{cpu: 1, gpu: 0.25}}, got {kind(section)}")
        return res
    for key, value in section.items():
        if key not in RESOURCE_KEYS and (closest(str(key).lower(), RESOURCE_KEYS)
                                         or not _CUSTOM_RE.match(str(key))):
            hint = closest(str(key).lower(), RESOURCE_KEYS) or (
                "; use cpu (per trial), gpu (fraction per trial) or the name of a custom Ray resource "
                "(letters, digits and _ . : / -)")
            problems.append(f"resources.{key}: unknown resource{hint}")
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"resources.{key}: got {kind(value)}; expected a number")
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


def option_problems(*, dry_run: bool, restart: bool, local: bool, progress_interval: float) -> list[str]:
    """Options that would do nothing in this combination (or nothing sensible): one line each, before anything runs."""
    out = []
    if local and dry_run:
        out.append("--dry-run: --trial ID --local trains that one trial here and has no dry run; remove --dry-run "
                   "(cep-sweep SWEEP --dry-run shows every trial and its pack)")
    if local and restart:
        out.append("--restart: --trial ID --local resumes the trial's own folder; to start it afresh, remove that "
                   "folder (or give another --out), or restart it in the sweep with --restart --only ID")
    if not math.isfinite(progress_interval) or progress_interval < 0:
        out.append(f"--progress-interval: got {progress_interval}; seconds between tables of running trials, e.g. 30 "
                   "(0: at every change)")
    return out
