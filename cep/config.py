"""TrialConfig: the one object that describes a trial, from YAML/CLI to the trainer.

It is frozen, validates itself (every problem names the field and the fix), and
round-trips through a plain dict so that YAML files, Ray's param space,
checkpoints and results folders all carry the same thing.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import typing
from dataclasses import dataclass

from cep.cost import forward_synapses, minibatch_macs
from cep.paths import length_problem

ACTIVATIONS = ("sigm", "hardsigm", "tanh")
RULES = ("ep", "vf")
SETTINGS = ("discrete", "continuous")
DATASETS = ("mnist5k", "mnist")
DTYPES = ("float32", "float64")
ACTIONS = ("train", "gdu")
MAX_SYNAPSES = 200_000_000  # 0.8 GB of float32 weights (more for vf): beyond it a run would only fail to allocate


class ConfigError(ValueError):
    """Invalid configuration: one or more `(field, message)` problems, one line each."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = list(problems)
        super().__init__("\n".join(f"{f}: {m}" for f, m in self.problems))


@dataclass(frozen=True)
class TrialConfig:
    """Every parameter of one trial (spec section 7 plus where data and results live).

    Sizes and learning rates are output-first, as in the paper's command lines.
    """

    # what to run
    action: str = "train"  # train | gdu (the EP-versus-BPTT gradient analysis)
    # the model (spec sections 1-3)
    rule: str = "ep"  # ep (tied weights) | vf (untied feedback V)
    setting: str = "discrete"  # discrete | continuous
    continual: bool = False  # C-EP / C-VF: update the weights after every nudged step
    size_tab: tuple[int, ...] = (10, 512, 784)
    activation: str = "sigm"
    T: int = 30
    Kmax: int = 10
    beta: float = 0.1
    dt: float = 0.2
    no_clamp: bool = False
    # learning (spec sections 4-5)
    lr_tab: tuple[float, ...] = (0.04, 0.08)
    batch_size: int = 20
    epochs: int = 1
    randbeta: float = 0.0  # probability of a +beta nudge per minibatch; 0 = always +beta
    angle: float = 0.0  # initial angle (degrees) between V_i and W_i^T, vf only
    debug_cep: bool = False
    angle_grad: bool = False  # measure the EP/BPTT angle before training (spec section 6)
    seed: int | None = None  # None: draw one and record it
    # data
    dataset: str = "mnist5k"
    data_dir: str = "data"
    train_samples: int | None = None  # use only the first N (shuffled) training images
    test_samples: int | None = None
    val_samples: int = 0  # training images held out for validation (cep.data.split_validation); 0: none
    test_batch_size: int = 1000
    # where and how
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "float32"
    out_dir: str | None = None  # results folder; None: do not write one
    checkpoint: bool = False  # save the complete trainer state after every epoch
    gdu_units: int = 5  # units per layer drawn in the gradient-analysis figures
    # health
    stop_on_collapse: bool = False  # end a run at its collapse (cep.health.find_collapse; status "collapsed")
    stop_on_drift: bool = False  # end a run once it drifts (cep.health.find_drift; status "stopped")

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError(problems)

    # ------------------------------------------------------------------ shape
    @property
    def n_layers(self) -> int:
        """Number of state layers L (output included, input excluded)."""
        return len(self.size_tab) - 1

    @property
    def n_synapses(self) -> int:
        """Forward weights W_0..W_{L-1} (cep.cost counts; vf's feedback matrices not included)."""
        return forward_synapses(self.size_tab)

    @property
    def depth_name(self) -> str:
        return f"{self.n_layers - 1}h"

    @property
    def rule_label(self) -> str:
        return rule_label(self.rule, self.continual)

    @property
    def model_label(self) -> str:
        """E.g. C-VF-1h, as the paper names its rows."""
        return f"{self.rule_label}-{self.depth_name}"

    # ------------------------------------------------------------- validation
    def problems(self) -> list[tuple[str, str]]:
        """Every inconsistency, as (field, 'what is wrong; how to fix it')."""
        p: list[tuple[str, str]] = []
        # nan and inf pass every comparison below silently (nan <= 0 is false): refuse them first, once
        nonfinite = [name for name in FLOAT_FIELDS if not all(math.isfinite(v) for v in _floats(getattr(self, name)))]
        p += [(name, f"got {_show(getattr(self, name))}; give a finite number (not nan or inf)") for name in nonfinite]

        def choice(name: str, allowed: tuple[str, ...]) -> None:
            value = getattr(self, name)
            if value not in allowed:
                p.append((name, f"unknown value {value!r}; use one of {', '.join(allowed)}"))

        choice("action", ACTIONS)
        choice("rule", RULES)
        choice("setting", SETTINGS)
        choice("activation", ACTIVATIONS)
        choice("dataset", DATASETS)
        choice("dtype", DTYPES)

        if len(self.size_tab) < 2 or any(n <= 0 for n in self.size_tab):
            p.append(("size_tab", f"got {list(self.size_tab)}; give positive sizes output-first "
                      "with the input last, e.g. [10, 512, 784]"))
        elif self.dataset in DATASETS and (self.size_tab[0] != 10 or self.size_tab[-1] != 784):
            p.append(("size_tab", f"got {list(self.size_tab)}; MNIST needs 10 outputs first and "
                      "784 inputs last, e.g. [10, 512, 784]"))
        elif (synapses := self.n_synapses) > MAX_SYNAPSES:
            p.append(("size_tab", f"got {list(self.size_tab)}: {synapses:,} synapses, more than the "
                      f"{MAX_SYNAPSES:,} a trial may have (the paper's largest net has 0.7 million); use smaller "
                      "layers"))
        if len(self.size_tab) >= 2 and len(self.lr_tab) != self.n_layers:
            p.append(("lr_tab", f"{self.n_layers} values needed for size_tab {list(self.size_tab)} "
                      f"(one per weight matrix, output-first), got {len(self.lr_tab)}"))
        if any(lr < 0 for lr in self.lr_tab):
            p.append(("lr_tab", f"got {list(self.lr_tab)}; learning rates must be >= 0"))
        for name in ("T", "Kmax", "batch_size", "epochs", "test_batch_size", "gdu_units"):
            if getattr(self, name) <= 0:
                p.append((name, f"got {getattr(self, name)}; must be a positive integer"))
        if self.dt <= 0:
            p.append(("dt", f"got {self.dt}; the Euler step must be > 0"))
        if self.beta == 0:
            p.append(("beta", "got 0; the nudge strength must be non-zero (EP divides by beta)"))
        if not 0 <= self.randbeta <= 1:
            p.append(("randbeta", f"got {self.randbeta}; a probability in [0, 1] (0 = always +beta)"))
        if self.rule == "ep" and self.angle != 0:
            p.append(("angle", f"got {self.angle} with rule ep; weight angles need rule vf "
                      "(ep ties the feedback to the forward weights)"))
        if not 0 <= self.angle <= 180:
            p.append(("angle", f"got {self.angle}; an angle in degrees within [0, 180]"))
        if self.debug_cep and not (self.rule == "ep" and self.setting == "discrete" and self.continual):
            p.append(("debug_cep", "only for rule ep, setting discrete, continual true "
                      "(it checks the C-EP machinery against EP)"))
        for name in ("train_samples", "test_samples"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                p.append((name, f"got {value}; a positive number of images, or null for all"))
        if self.val_samples < 0:
            p.append(("val_samples", f"got {self.val_samples}; a number of training images to hold out, or 0 for none"))
        if not (self.device in ("auto", "cpu", "cuda") or _is_cuda_index(self.device)):
            p.append(("device", f"got {self.device!r}; use auto, cpu, cuda or cuda:N"))
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            p.append(("seed", f"got {self.seed}; an integer from 0 to 2**32-1 = {MAX_SEED} (torch's CPU "
                      "generator keeps 32 bits of a seed: larger seeds repeat smaller ones), or null to draw one"))
        p += [(f, m) for f, m in limit_problems(self) if not any(f == g for g, _ in p)]
        p += [(f, why) for f in ("out_dir", "data_dir") if isinstance(getattr(self, f), str)
              and (why := length_problem(getattr(self, f)))]
        return p[:len(nonfinite)] + [(f, m) for f, m in p[len(nonfinite):] if f not in nonfinite]

    # ------------------------------------------------------------ conversion
    def to_dict(self) -> dict[str, typing.Any]:
        """Plain, YAML/JSON-friendly dict (tuples become lists)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, data: typing.Mapping[str, typing.Any]) -> TrialConfig:
        """Build from a plain dict, checking names and types; raises ConfigError."""
        problems: list[tuple[str, str]] = []
        kwargs = {}
        for key, value in data.items():
            if key not in FIELD_TYPES:
                problems.append((str(key), f"unknown field{_did_you_mean(str(key))}"))
                continue
            try:
                kwargs[key] = coerce(key, value)
            except ConfigError as e:
                problems.extend(e.problems)
        if problems:
            raise ConfigError(problems)
        return cls(**kwargs)

    def with_run_fields(self, **changes: str | bool | None) -> TrialConfig:
        """A copy with where it reads and writes changed (out_dir, data_dir, checkpoint: no validation looks at
        them, so none is repeated): fast enough for the thousands of trials of a sweep."""
        types = {"out_dir": (str, type(None)), "data_dir": (str,), "checkpoint": (bool,)}
        if not all(k in types and isinstance(v, types[k]) for k, v in changes.items()):
            return self.replace(**changes)
        copy = object.__new__(TrialConfig)
        copy.__dict__.update({**self.__dict__, **changes})
        return copy

    def replace(self, **changes: typing.Any) -> TrialConfig:
        """A copy with some fields changed (typed like from_dict)."""
        return TrialConfig.from_dict({**self.to_dict(), **changes})

    # ---------------------------------------------------------- same result
    def result_dict(self) -> dict[str, typing.Any]:
        """The fields that decide what the trial computes (plain values): RUN_FIELDS left out, and fields
        added later (LATER_FIELDS) left out at their default, so that a sweep's identity stays what it was."""
        return {k: v for k, v in self.to_dict().items()
                if k not in RUN_FIELDS and not (k in LATER_FIELDS and v == LATER_FIELDS[k])}

    def result_differences(self, other: TrialConfig | typing.Mapping[str, typing.Any]) -> list[str]:
        """Result fields whose values differ from `other` (a config or its plain dict); see result_differences."""
        return result_differences(self.to_dict(), other.to_dict() if isinstance(other, TrialConfig) else other)


def result_differences(a: typing.Mapping[str, typing.Any], b: typing.Mapping[str, typing.Any]) -> list[str]:
    """The result fields (RESULT_FIELDS) whose plain values differ between two configs, in field order.

    A seed of None on either side ("draw one") matches any seed: a run records the seed it drew. A field
    added later (LATER_FIELDS) missing from a config written before it has its default: that default
    computes what the older code computed, so older sweeps and checkpoints stay the same trials.
    """
    def value(d: typing.Mapping[str, typing.Any], k: str) -> typing.Any:
        return d.get(k, LATER_FIELDS[k]) if k in LATER_FIELDS else d.get(k)

    return [k for k in RESULT_FIELDS if value(a, k) != value(b, k)
            and not (k == "seed" and (a.get(k) is None or b.get(k) is None))]


def pack_key(cfg: TrialConfig) -> str:
    """Trials with equal keys can share a pack (the training action only)."""
    return json.dumps({k: v for k, v in cfg.to_dict().items() if k not in PACK_FIELDS}, sort_keys=True)


def pack_problems(cfgs: typing.Sequence[TrialConfig]) -> list[str]:
    """Why these trials cannot train as one pack (empty: they can)."""
    if not cfgs:
        return ["no trials"]
    if any(c.action != "train" for c in cfgs):
        return ["only training trials are packed (action train)"]
    first = cfgs[0].to_dict()
    return sorted({f"{k} differs ({first[k]!r} and {c.to_dict()[k]!r})" for c in cfgs[1:]
                   for k in FIELD_NAMES if k not in PACK_FIELDS and c.to_dict()[k] != first[k]})


def rule_label(rule: object, continual: object) -> str:
    """EP, C-EP, VF or C-VF: the learning rule of spec section 4.5."""
    return ("C-" if continual else "") + str(rule).upper()


MAX_SEED = 2**32 - 1  # torch.Generator.manual_seed keeps the low 32 bits on the CPU: 2**32 would give seed 0 again
# Per-field maxima: far beyond the paper (T 800, Kmax 80, 150 epochs), below what would run for days before
# the first output line; the cost of one minibatch is bounded too, like the synapses (MAX_SYNAPSES).
FIELD_MAXIMA: dict[str, tuple[int, str]] = {
    "T": (10_000, "free-phase steps (the paper uses at most 800)"),
    "Kmax": (10_000, "nudged-phase steps (the paper uses at most 80)"),
    "epochs": (10_000, "epochs (the paper trains at most 150)"),
    "batch_size": (100_000, "images per minibatch (MNIST has 60,000)"),
    "test_batch_size": (100_000, "images per evaluation batch (MNIST has 60,000)"),
    "train_samples": (10_000_000, "images (MNIST has 60,000)"),
    "test_samples": (10_000_000, "images (MNIST has 10,000)"),
    "val_samples": (10_000_000, "images (MNIST has 60,000 training images)"),
    "gdu_units": (1_000, "units drawn per layer (each is a line in a figure)"),
}
MAX_EPOCHS = FIELD_MAXIMA["epochs"][0]
MAX_MINIBATCH_MACS = 10**12  # multiply-adds of one training minibatch (EP-2h: 1.6e9); minutes per minibatch on a CPU
FLOAT32_MAX, FLOAT32_TINY = 3.4028234663852886e38, 1.1754943508222875e-38  # numpy.finfo(float32): max, smallest normal


def limit_problems(cfg: TrialConfig) -> list[tuple[str, str]]:
    """Sizes and step counts whose cost is absurd, and numbers that float32 cannot hold (refused up front)."""
    p: list[tuple[str, str]] = []
    for name, (most, what) in FIELD_MAXIMA.items():
        value = getattr(cfg, name)
        if isinstance(value, int) and value > most:
            p.append((name, f"got {value:,}; at most {most:,} {what}"))
    sized = len(cfg.size_tab) >= 2 and all(n > 0 for n in cfg.size_tab)  # else size_tab's own problem says it
    if not p and sized and cfg.n_synapses <= MAX_SYNAPSES \
            and (macs := minibatch_macs(cfg)) > MAX_MINIBATCH_MACS:
        p.append(("batch_size", f"one minibatch costs {macs:.3g} multiply-adds (batch_size {cfg.batch_size} x "
                  f"(T {cfg.T} + Kmax {cfg.Kmax}) steps x synapses), more than the {MAX_MINIBATCH_MACS:.0e} a "
                  "trial may take; use smaller layers, fewer steps or smaller minibatches"))
    if cfg.dtype == "float32":
        for name in FLOAT_FIELDS:
            bad = [v for v in _floats(getattr(cfg, name)) if math.isfinite(v) and v != 0
                   and not FLOAT32_TINY <= abs(v) <= FLOAT32_MAX]
            if bad:
                p.append((name, f"got {bad[0]:g}, beyond float32's range (magnitudes {FLOAT32_TINY:.3g} to "
                          f"{FLOAT32_MAX:.3g}, or 0); use a value in that range, or dtype float64"))
    return p


def _floats(value: typing.Any) -> tuple[float, ...]:
    return tuple(value) if isinstance(value, tuple) else (value,)


def _show(value: typing.Any) -> str:
    return str(list(value)) if isinstance(value, tuple) else str(value)


def _is_cuda_index(device: str) -> bool:
    head, _, index = device.partition(":")
    return head == "cuda" and index.isdigit()


FIELD_TYPES: dict[str, typing.Any] = typing.get_type_hints(TrialConfig)
FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TrialConfig))
# Where a trial reads and writes and which device it uses: they may differ between the machine that
# started a trial and the one that continues it, without changing a single number it computes. Every
# other field changes the result; this one list decides checkpoint compatibility, a sweep's identity and
# "what changed" message, and which trial folders are stale.
RUN_FIELDS: frozenset[str] = frozenset({"out_dir", "data_dir", "checkpoint", "device"})
RESULT_FIELDS: tuple[str, ...] = tuple(f for f in FIELD_NAMES if f not in RUN_FIELDS)
# The fields that may differ between the trials of a pack (cep.train.train_pack: several trials as one
# program with a leading trial dimension): the per-trial numbers that the model takes as tensors, the
# seed (weights, data order, nudge signs) and where each trial writes. Every other field is shared.
PACK_FIELDS: frozenset[str] = frozenset({"seed", "angle", "lr_tab", "beta", "randbeta", "out_dir", "checkpoint",
                                         "stop_on_collapse", "stop_on_drift"})  # such a member stops alone
# (val_samples is not here: a pack shares one data set, so its members hold out the same images)
# Result fields added after results existed, with the default that computes what the code computed
# before them (see result_differences).
LATER_FIELDS: dict[str, typing.Any] = {"stop_on_collapse": False, "val_samples": 0, "stop_on_drift": False}
FLOAT_FIELDS: tuple[str, ...] = tuple(f for f, tp in FIELD_TYPES.items() if tp is float or tp == tuple[float, ...])


def _did_you_mean(name: str) -> str:
    close = difflib.get_close_matches(name, FIELD_NAMES, n=1)
    return f"; did you mean {close[0]}?" if close else f"; known fields: {', '.join(FIELD_NAMES)}"


def _type_name(tp: typing.Any) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _plural(tp: typing.Any) -> str:
    return {int: "integers", float: "numbers"}.get(tp, f"{tp}s")


def coerce(name: str, value: typing.Any) -> typing.Any:
    """Check and convert one field's value to its declared type; raises ConfigError.

    Accepts what YAML and command lines give: ints for floats, lists for
    tuples, and (for strings from `--set key=value`) the usual spellings.
    """
    tp = FIELD_TYPES[name]
    args = typing.get_args(tp)
    if type(None) in args:  # Optional[X]
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "")):
            return None
        tp = next(a for a in args if a is not type(None))
        args = typing.get_args(tp)
    if typing.get_origin(tp) is tuple:
        item = args[0]
        if isinstance(value, str):
            items = [v.strip() for v in value.split(",")] if "," in value else value.split()
            if "" in items:
                raise ConfigError([(name, f"got {value!r}: an empty item; separate {_plural(item)} by single "
                                    "commas, e.g. 10,512,784")])
            value = items
        if not isinstance(value, (list, tuple)) or not value:
            raise ConfigError([(name, f"got {value!r}; give a non-empty list of {_plural(item)}")])
        return tuple(_scalar(name, v, item) for v in value)
    return _scalar(name, value, tp)


def _scalar(name: str, value: typing.Any, tp: type) -> typing.Any:
    bad = ConfigError([(name, f"got {value!r}; expected {_type_name(tp)}")])
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise bad
    if isinstance(value, bool):
        raise bad
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if tp in (int, float):
        if isinstance(value, int if tp is int else (int, float)):
            return tp(value)
        if isinstance(value, str):
            try:
                return tp(value)  # int("1.5") fails: an integer field takes no fractions
            except ValueError:
                raise bad from None
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    raise bad  # pragma: no cover - every field type is handled above
