"""A sweep file's `search` section: its sample spaces, checked, and its points, drawn reproducibly.

    search:
      num_samples: 16          # points; every grid point (e.g. each seed) trains each of them
      seed: 0                  # of the search: point k is drawn from its own stream (seed, k)
      searcher: random         # random | optuna | hyperopt (Ray Tune's searchers)
      metric: final_test_error # final_test_error | best_test_error | final_train_error
      mode: min
      scheduler: none          # none | asha | median (grace_period, reduction_factor, min_samples_required)
      space:
        beta: {uniform: [0.1, 0.5]}
        lr_tab: [{loguniform: [0.001, 0.1]}, {loguniform: [0.5, 4], ratio_to: 0}]  # per entry

A list field's entries are each a sample space or a fixed value; `ratio_to: I` makes an entry that entry I
times the sampled factor. Point k depends only on (seed, k), so growing num_samples keeps the first points.
Drawing uses Ray Tune's own domains (tune.uniform, ...), imported only when points are drawn.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cep.config import FIELD_NAMES, ConfigError, coerce
from cep.sweep.sections import closest, kind, unknown_field

SEARCH_KEYS = ("space", "num_samples", "seed", "searcher", "metric", "mode", "scheduler", "grace_period",
               "reduction_factor", "min_samples_required")
DISTRIBUTIONS = ("uniform", "loguniform", "quniform", "randint", "choice")
SEARCHERS = ("random", "optuna", "hyperopt")
EXTRAS = {"optuna": "optuna", "hyperopt": "hyperopt"}  # searcher -> the pyproject extra that installs it
METRICS = ("final_test_error", "best_test_error", "final_train_error")
MODES = ("min", "max")
SCHEDULERS = ("none", "asha", "median")
NOT_SEARCHED = ("seed", "out_dir", "checkpoint", "data_dir", "device")  # run fields; seeds go in the grid
SEGMENT = "search"  # the trial id's segment of a point: search=0007
MAX_SAMPLES = 100_000
MAX_SEED = 2**32 - 1  # Optuna's and HyperOpt's seeds are 32-bit
INT64 = 2**63  # randint's bounds: numpy draws 64-bit integers


@dataclass(frozen=True)
class Dist:
    """One sample space: Tune's domain `kind(*args)`; `ratio_to`: this list entry is entry I times the draw."""

    kind: str
    args: tuple[Any, ...]
    ratio_to: int | None = None

    @property
    def log(self) -> bool:
        return self.kind == "loguniform"

    def domain(self) -> Any:
        from ray import tune

        return tune.choice(list(self.args)) if self.kind == "choice" else getattr(tune, self.kind)(*self.args)

    def record(self) -> dict[str, Any]:
        return {self.kind: list(self.args), **({"ratio_to": self.ratio_to} if self.ratio_to is not None else {})}

    def edges(self) -> list[Any]:
        """The values at the edges of the space (every value of a choice): what a searcher may suggest that
        is most likely to be refused as a trial field, checked before anything runs."""
        if self.kind == "choice":
            return list(self.args)
        if self.kind == "randint":
            return [self.args[0], self.args[1] - 1]
        return [float(self.args[0]), float(self.args[1])]

    def admits(self, value: Any) -> bool:
        """Whether `value` (read back from search.json) is one this space can suggest."""
        if self.kind == "choice":
            return any(type(value) is type(a) and value == a for a in self.args)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        low, high = self.args[0], self.args[1]
        if self.kind == "randint":
            return isinstance(value, int) and low <= value < high
        slack = 1e-9 * max(abs(low), abs(high), 1.0)  # a float suggestion rounded at an end of the range
        return low - slack <= value <= high + slack


Entry = Any  # a Dist, or a fixed value (an entry of a list field)


@dataclass(frozen=True)
class SearchSpec:
    """A validated `search` section."""

    space: dict[str, Dist | tuple[Entry, ...]]
    num_samples: int
    seed: int = 0
    searcher: str = "random"
    metric: str = "final_test_error"
    mode: str = "min"
    scheduler: str = "none"
    grace_period: int = 1
    reduction_factor: int = 2
    min_samples_required: int = 3

    @property
    def adaptive(self) -> bool:
        return self.searcher != "random"

    def point(self, k: int) -> dict[str, Any]:
        """Point k: its trial fields, drawn from the stream (seed, k) in the space's order."""
        import numpy as np

        rng = np.random.default_rng([self.seed, k])
        return self.compose(lambda _, dist: _draw(dist, rng))

    def compose(self, pick: Callable[[str, Dist], Any]) -> dict[str, Any]:
        """A point's trial fields, each sampled dimension (`beta`, `lr_tab[0]`) valued by pick(name, dist) in the
        space's order, ratios applied."""
        out: dict[str, Any] = {}
        for name, space in self.space.items():
            if isinstance(space, Dist):
                out[name] = pick(name, space)
                continue
            drawn = [pick(f"{name}[{i}]", e) if isinstance(e, Dist) else e for i, e in enumerate(space)]
            for i, e in enumerate(space):
                if isinstance(e, Dist) and e.ratio_to is not None:
                    drawn[i] = drawn[e.ratio_to] * drawn[i]
            out[name] = drawn
        return out

    def dimensions(self) -> dict[str, Dist]:
        """The sampled dimensions by name: `beta`, `lr_tab[0]` (a ratio entry is its factor)."""
        out: dict[str, Dist] = {}
        for name, space in self.space.items():
            if isinstance(space, Dist):
                out[name] = space
            else:
                out.update({f"{name}[{i}]": e for i, e in enumerate(space) if isinstance(e, Dist)})
        return out

    def edge_points(self) -> list[dict[str, Any]]:
        """Points at the corners that matter: every dimension at its first edge, at its last, and each edge value
        of each dimension with the others at their first (a ratio's product takes its extremes at these)."""
        edges = {name: dist.edges() for name, dist in self.dimensions().items()}
        picks = [{n: 0 for n in edges}, {n: len(v) - 1 for n, v in edges.items()}]
        picks += [{**picks[0], n: i} for n, v in edges.items() for i in range(1, len(v))]
        unique = list({tuple(p.items()): p for p in picks}.values())
        return [self.compose(lambda name, _, p=p: edges[name][p[name]]) for p in unique]

    def points(self, n: int | None = None) -> list[dict[str, Any]]:
        return [self.point(k) for k in range(self.num_samples if n is None else n)]

    def log_fields(self) -> list[str]:
        """Searched fields (list entries as `field[i]`) sampled log-uniformly: their plots get a log axis."""
        out = []
        for name, space in self.space.items():
            entries = [(name, space)] if isinstance(space, Dist) else [(f"{name}[{i}]", e) for i, e in enumerate(space)]
            out += [n for n, e in entries if isinstance(e, Dist) and e.log and e.ratio_to is None]
        return out

    def record(self) -> dict[str, Any]:
        """sweep.json's `search`: the settings and the space (the drawn points are the trials' grid values)."""
        space = {k: v.record() if isinstance(v, Dist) else [e.record() if isinstance(e, Dist) else e for e in v]
                 for k, v in self.space.items()}
        return {"num_samples": self.num_samples, "seed": self.seed, "searcher": self.searcher, "metric": self.metric,
                "mode": self.mode, "scheduler": self.scheduler, "grace_period": self.grace_period,
                "reduction_factor": self.reduction_factor, "min_samples_required": self.min_samples_required,
                "space": space}


def point_segment(k: int) -> str:
    """The trial id's segment of point k (readable, sorted by k up to 9,999 points)."""
    return f"{SEGMENT}={k:04d}"


def _draw(dist: Dist, rng: Any) -> Any:
    value = dist.domain().sample(random_state=rng)
    if hasattr(value, "item"):  # numpy scalars -> plain Python (JSON, TrialConfig)
        value = value.item()
    return value


# ------------------------------------------------------------------ parsing
def parse_search(section: Any, problems: list[str]) -> SearchSpec | None:
    """The `search` section (None when absent); every problem is appended as one `search.PATH: ...` line."""
    if section is None:
        return None
    if not isinstance(section, Mapping):
        problems.append(f"search: expected a mapping with space and num_samples, got {kind(section)}")
        return None
    for key in section:
        if key not in SEARCH_KEYS:
            hint = ("; trial fields to sample go under search.space" if key in FIELD_NAMES
                    else closest(str(key), SEARCH_KEYS) or f"; known keys: {', '.join(SEARCH_KEYS)}")
            problems.append(f"search.{key}: unknown key{hint}")
    space = _space(section.get("space"), problems)
    opts: dict[str, Any] = {
        "num_samples": _int(section, "num_samples", None, 1, MAX_SAMPLES, problems),
        "seed": _int(section, "seed", 0, 0, MAX_SEED, problems),
        "grace_period": _int(section, "grace_period", 1, 1, 10**6, problems),
        "reduction_factor": _int(section, "reduction_factor", 2, 2, 100, problems),
        "min_samples_required": _int(section, "min_samples_required", 3, 1, 10**6, problems)}
    for key, options, default in (("searcher", SEARCHERS, "random"), ("metric", METRICS, "final_test_error"),
                                  ("mode", MODES, "min"), ("scheduler", SCHEDULERS, "none")):
        value = section.get(key, default)
        if value not in options:
            problems.append(f"search.{key}: got {kind(value)}; one of {', '.join(options)}"
                            + closest(str(value), options))
        opts[key] = value if value in options else default
    return SearchSpec(space=space, **opts)  # with problems: what is valid of it, for the checks that follow


def _int(section: Mapping[str, Any], key: str, default: int | None, low: int, high: int,
         problems: list[str]) -> int:
    value = section.get(key, default)
    if value is None:
        problems.append(f"search.{key}: missing; how many points to draw, e.g. {key}: 16")
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        problems.append(f"search.{key}: got {kind(value)}; an integer from {low} to {high}")
        return 0
    return value


def _space(raw: Any, problems: list[str]) -> dict[str, Dist | tuple[Entry, ...]]:
    if not isinstance(raw, Mapping) or not raw:
        problems.append(f"search.space: expected a mapping of trial fields to sample spaces, e.g. "
                        f"{{beta: {{uniform: [0.1, 0.5]}}}}, got {kind(raw)}")
        return {}
    out: dict[str, Dist | tuple[Entry, ...]] = {}
    for name, spec in raw.items():
        path = f"search.space.{name}"
        if name not in FIELD_NAMES:
            problems.append(unknown_field(path, name))
        elif name in NOT_SEARCHED:
            problems.append(f"{path}: {name} cannot be sampled" + ("; give the seeds as a grid (grid: {seed: [0, 1]}):"
                                                                   " every point trains with each" if name == "seed"
                                                                   else "; it does not change a result"))
        elif isinstance(spec, list):
            entries = _entries(name, spec, path, problems)
            if entries is not None:
                out[name] = entries
        else:
            dist = _dist(name, spec, path, problems, element=False)
            if dist is not None:
                out[name] = dist
    return out


def _entries(name: str, spec: list[Any], path: str, problems: list[str]) -> tuple[Entry, ...] | None:
    """A list field, entry by entry: sample spaces (maybe ratios to another entry) and fixed values."""
    before = len(problems)
    entries: list[Entry] = []
    for i, e in enumerate(spec):
        if isinstance(e, Mapping):
            entries.append(_dist(name, e, f"{path}[{i}]", problems, element=True, n=len(spec)))
        else:
            _check_value(name, [e], f"{path}[{i}]", problems)
            entries.append(e)
    for i, e in enumerate(entries):
        if isinstance(e, Dist) and e.ratio_to is not None:
            if e.ratio_to == i or isinstance(entries[e.ratio_to], Dist) and entries[e.ratio_to].ratio_to is not None:
                problems.append(f"{path}[{i}].ratio_to: {e.ratio_to} is itself a ratio (or this entry); "
                                "name an entry that is sampled or fixed")
    if not any(isinstance(e, Dist) for e in entries) and len(problems) == before:
        problems.append(f"{path}: no entry is sampled; give at least one entry a sample space, or move the field "
                        "to base")
    return tuple(entries) if len(problems) == before else None


def _dist(name: str, spec: Any, path: str, problems: list[str], element: bool, n: int = 0) -> Dist | None:
    """One sample space `{KIND: ARGS}` (with `ratio_to: I` inside a list field)."""
    example = "{loguniform: [0.001, 0.1]}"
    if not isinstance(spec, Mapping):
        problems.append(f"{path}: expected a sample space like {example}, got {kind(spec)}"
                        + ("; a fixed value belongs in base" if not element else ""))
        return None
    keys = [k for k in spec if k != "ratio_to"]
    unknown = [k for k in keys if k not in DISTRIBUTIONS]
    if unknown or len(keys) != 1:
        what = (f"unknown sample space {unknown[0]!r}{closest(str(unknown[0]), DISTRIBUTIONS)}" if unknown
                else f"expected exactly one of {', '.join(DISTRIBUTIONS)}")
        problems.append(f"{path}: {what}; e.g. {example}")
        return None
    ratio = spec.get("ratio_to")
    if "ratio_to" in spec and (not element or isinstance(ratio, bool) or not isinstance(ratio, int)
                               or not 0 <= ratio < n):
        problems.append(f"{path}.ratio_to: got {kind(ratio)}; " + (f"the index of another entry of {name} (0 to "
                        f"{n - 1})" if element else "only entries of a list field are ratios to another entry"))
        return None
    dist_kind = keys[0]
    args = spec[dist_kind]
    where = f"{path}.{dist_kind}"
    if not _args_ok(dist_kind, args, where, problems):
        return None
    if ratio is None:  # the values themselves must be valid for the field (ratios are checked as drawn)
        _check_value(name, list(args) if dist_kind == "choice" else list(args[:2]), where, problems, element)
    return Dist(dist_kind, tuple(args), ratio)


def _args_ok(dist_kind: str, args: Any, where: str, problems: list[str]) -> bool:
    number = (int, float)
    if dist_kind == "choice":
        if not isinstance(args, list) or not args:
            problems.append(f"{where}: expected a non-empty list of values, got {kind(args)}")
            return False
        if any(args.count(a) > 1 for a in args):
            problems.append(f"{where}: a value is listed twice; remove the repeat")
            return False
        return True
    n = 3 if dist_kind == "quniform" else 2
    shape = "[low, high, q]" if n == 3 else "[low, high]"
    if (not isinstance(args, list) or len(args) != n
            or any(isinstance(a, bool) or not isinstance(a, number) for a in args)):
        problems.append(f"{where}: expected {shape} (numbers), got {kind(args)}")
        return False
    if dist_kind == "randint" and any(not isinstance(a, int) for a in args):
        problems.append(f"{where}: expected integers [low, high) (high excluded), got {args}")
        return False
    if dist_kind == "randint" and not all(-INT64 <= a < INT64 for a in args):
        problems.append(f"{where}: got {args}; the bounds of a randint are 64-bit integers (within ±2**63)")
        return False
    if not all(_finite(a) for a in args):
        problems.append(f"{where}: got {args}; the bounds must be finite numbers")
        return False
    if not args[0] < args[1]:
        problems.append(f"{where}: low {args[0]} is not below high {args[1]}; give [low, high]")
        return False
    if dist_kind == "loguniform" and args[0] <= 0:
        problems.append(f"{where}: low {args[0]} must be > 0 for a log-uniform space")
        return False
    if dist_kind == "quniform" and args[2] <= 0:
        problems.append(f"{where}: q {args[2]} must be > 0 (the step of the values)")
        return False
    if dist_kind == "quniform" and not all(_multiple(a, args[2]) for a in args[:2]):
        problems.append(f"{where}: low {args[0]} and high {args[1]} must be multiples of q {args[2]} (the values "
                        "are low, low + q, ..., high); adjust the bounds or q")
        return False
    return True


def _finite(x: float) -> bool:
    try:
        return math.isfinite(x)
    except OverflowError:  # an int beyond a float's range
        return False


def _multiple(x: float, q: float) -> bool:
    return math.isclose(x / q, round(x / q), rel_tol=1e-9, abs_tol=1e-9)


def _check_value(name: str, values: list[Any], where: str, problems: list[str], element: bool = True) -> None:
    """Each value (an endpoint, a choice, a fixed entry) typed as the field, or as one entry of a list field."""
    for v in values:
        try:
            coerce(name, [v] if element and isinstance(_default(name), tuple) else v)
        except ConfigError as e:
            problems.extend(f"{where}: {m}" for _, m in e.problems)
            return


def _default(name: str) -> Any:
    from cep.config import TrialConfig

    return getattr(TrialConfig(), name)


def search_conflicts(search: SearchSpec | None, base: Mapping[str, Any], experiment_fields: list[Mapping[str, Any]],
                     grids: list[Mapping[str, Any]], sets: Mapping[str, Any]) -> list[str]:
    """A sampled field also fixed in base, an experiment, a grid or by --set: one line each."""
    if search is None:
        return []
    out = []
    for name in search.space:
        path = f"search.space.{name}"
        if name in base:
            out.append(f"{path}: also set in base.{name}; remove one of them")
        if any(name in f for f in experiment_fields):
            out.append(f"{path}: also set in an experiment; remove it there (the search samples it)")
        if any(name in g for g in grids):
            out.append(f"{path}: also a grid key; remove one of them")
        if name in sets:
            out.append(f"--set {name}: {name} is sampled by this sweep's search; edit search.space.{name} instead")
    return out


def scheduler_problems(search: SearchSpec | None, pack: int | None, why: str = "") -> list[str]:
    """A scheduler decides among the members of a pack (cep.sweep.scheduling): with packs of one it compares
    nothing. `pack`: the sweep's pack (None: auto, judged where it is sized: cep.sweep.plan.auto_scheduler_problems),
    or the size auto chose, `why` it did."""
    if search is None or search.scheduler == "none" or pack != 1:
        return []
    given = f"pack: auto trains every trial alone here ({why})" if why else "pack: 1 trains every trial alone"
    return [f"search.scheduler: {search.scheduler} compares the members of a pack, and {given}, so nothing would be "
            "stopped; use pack: 2 or more" + ("" if why else " (or auto)") + ", or scheduler: none"]
