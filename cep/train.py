"""train(config, report, state): the epoch loop shared by the CLI, the tests and the Ray Tune trainable.

No Ray and no files here: after every epoch `report(metrics, state)` is called,
and `state` holds everything needed to continue bit for bit (weights, epoch,
metrics so far, the random generator that draws data order and nudge signs).
"""

from __future__ import annotations

import math
import re
import secrets
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from cep.config import TrialConfig
from cep.data import Data, load_data
from cep.errors import UsageProblem
from cep.model import Params, init_params, relax, weight_angles
from cep.results import atomic_path
from cep.rules import learn

Report = Callable[[dict[str, Any], "TrainState"], None]
# progress(epoch, samples done, samples in the epoch, train error so far in %)
Progress = Callable[[int, int, int, float], None]


@dataclass
class TrainState:
    """Everything a run needs to continue exactly where it stopped."""

    config: TrialConfig  # resolved: the seed is never None here
    params: Params
    generator: torch.Generator  # CPU; draws the data order and the randbeta signs
    epoch: int = 0  # epochs completed
    history: list[dict[str, Any]] = field(default_factory=list)
    status: str = "running"  # running | finished | diverged
    info: dict[str, Any] = field(default_factory=dict)  # seed, measured angles, angle_grad, ...
    elapsed: float = 0.0  # training seconds so far, across restores

    def to_dict(self) -> dict[str, Any]:
        """Tensors and plain values only, so that a checkpoint loads with torch.load(weights_only=True)."""
        return {"config": self.config.to_dict(), "params": self.params.to_dict(),
                "generator": self.generator.get_state(), "epoch": self.epoch, "history": _plain(self.history),
                "status": self.status, "info": _plain(self.info), "elapsed": float(self.elapsed)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], device: torch.device | str = "cpu") -> TrainState:
        g = torch.Generator()
        g.set_state(d["generator"])
        state = cls(TrialConfig.from_dict(d["config"]), Params.from_dict(d["params"], device), g,
                    int(d["epoch"]), list(d["history"]), str(d["status"]), dict(d["info"]), float(d["elapsed"]))
        if state.status not in ("running", "finished", "diverged") or state.epoch < 0:
            raise ValueError(f"inconsistent state (status {state.status!r}, epoch {state.epoch})")
        return state


class CheckpointError(UsageProblem):
    """A file that is not a readable checkpoint of this program (one line naming it)."""


def _plain(value: Any) -> Any:
    """Python scalars, lists and dicts (numpy scalars and tuples would need pickle's arbitrary objects)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, torch.Tensor):  # numpy scalars
        return value.item()
    return value


def save_state(state: TrainState, path: str | Path) -> None:
    """Write the state atomically (a crash leaves the previous checkpoint intact)."""
    with atomic_path(path) as tmp:
        torch.save(state.to_dict(), tmp)


def load_state(path: str | Path, device: torch.device | str = "cpu") -> TrainState:
    """Read a checkpoint with weights_only=True: a crafted file cannot run code; any damage is a CheckpointError.

    (A pickle with arbitrary objects would execute them on load: checkpoints live on shared storage.)
    """
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols: the error below says more
            warnings.simplefilter("ignore")
            data = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(data, dict):
            raise ValueError(f"holds {type(data).__name__}, not a trainer state")
        return TrainState.from_dict(data, device)
    except Exception as e:  # truncated, empty, garbage, foreign objects, missing keys, a bad config
        why = " ".join(str(e).split())
        if why.startswith("Weights only load failed"):  # torch opens with advice to load it unsafely: skip it
            detail = why.split("Check the documentation")[0]
            detail = (detail.rsplit("WeightsUnpickler error:", 1)[-1] if "WeightsUnpickler error:" in detail
                      else detail.split("trusted source.", 1)[-1]).strip()
            foreign = re.search(r"GLOBAL (\S+)", detail)
            what = f"a Python object {foreign.group(1)}" if foreign else detail
            why = f"refused by the safe loader: {what}; a checkpoint holds only tensors and plain values"
        why = why if len(why) <= 160 else why[:157] + "..."
        raise CheckpointError(f"{path}: not a valid checkpoint ({type(e).__name__}: {why})") from None


def resolve_device(name: str) -> torch.device:
    """The torch device of a config's `device`; one that this machine lacks is a UsageProblem (one line)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageProblem(f"device {name}: CUDA is not available here (no GPU, or a CPU-only torch); "
                           "use device cpu or auto")
    device = torch.device(name)
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageProblem(f"device {name}: this machine has {torch.cuda.device_count()} GPU(s) "
                           f"(cuda:0 to cuda:{torch.cuda.device_count() - 1}); use one of them, or auto")
    return device


def resolve_seed(cfg: TrialConfig) -> TrialConfig:
    """Draw and record a seed when none is given, so that every run can be repeated."""
    return cfg if cfg.seed is not None else cfg.replace(seed=secrets.randbelow(2**31))


def new_state(cfg: TrialConfig, device: torch.device) -> TrainState:
    cfg = resolve_seed(cfg)
    g = torch.Generator().manual_seed(cfg.seed)
    params = init_params(cfg, g, device, getattr(torch, cfg.dtype))
    info: dict[str, Any] = {"seed": cfg.seed}
    if cfg.rule == "vf":
        info["measured_angle"] = weight_angles(params)
    return TrainState(cfg, params, g, info=info)


def nudge_signs(cfg: TrialConfig, n_batches: int, g: torch.Generator) -> list[float]:
    """Per-minibatch sign of beta (randbeta, spec section 5): +1 with probability p; p = 0 means always +1."""
    if cfg.randbeta == 0:
        return [1.0] * n_batches
    return [1.0 if u < cfg.randbeta else -1.0 for u in torch.rand(n_batches, generator=g, dtype=torch.float64)]


def evaluate(cfg: TrialConfig, params: Params, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Test error (%) and loss (½‖s_0 − y‖² per sample) from the free phase only."""
    errors, loss = 0, 0.0
    for start in range(0, len(y), cfg.test_batch_size):
        xb, yb = x[start:start + cfg.test_batch_size], y[start:start + cfg.test_batch_size]
        s0 = relax(cfg, params, xb, cfg.T)[0]
        errors += int((s0.argmax(-1) != yb).sum())
        loss += float(0.5 * ((s0 - F.one_hot(yb, s0.shape[-1]).to(s0.dtype)) ** 2).sum())
    return 100.0 * errors / len(y), loss / len(y)


def _train_epoch(cfg: TrialConfig, state: TrainState, data: Data, progress: Progress | None,
                 first_batch_hook: Callable[[torch.Tensor, torch.Tensor], None] | None) -> tuple[float, float]:
    """One pass over the training set; returns (train error %, train loss) from the free phases."""
    n = len(data.y_train)
    order = torch.randperm(n, generator=state.generator).to(data.x_train.device)
    n_batches = math.ceil(n / cfg.batch_size)
    signs = nudge_signs(cfg, n_batches, state.generator)
    errors = torch.zeros((), dtype=torch.long, device=data.x_train.device)
    loss = torch.zeros((), dtype=data.x_train.dtype, device=data.x_train.device)
    last_shown = 0.0
    for k in range(n_batches):
        idx = order[k * cfg.batch_size:(k + 1) * cfg.batch_size]
        x, labels = data.x_train[idx], data.y_train[idx]
        y = F.one_hot(labels, cfg.size_tab[0]).to(x.dtype)
        if k == 0 and first_batch_hook is not None:
            first_batch_hook(x, y)
        s_free = relax(cfg, state.params, x, cfg.T)
        errors += (s_free[0].argmax(-1) != labels).sum()
        loss += 0.5 * ((s_free[0] - y) ** 2).sum()
        learn(cfg, state.params, s_free, x, y, signs[k] * cfg.beta, cfg.lr_tab)
        if progress is not None and (time.monotonic() - last_shown > 0.25 or k == n_batches - 1):
            last_shown = time.monotonic()
            done = min(n, (k + 1) * cfg.batch_size)
            progress(state.epoch + 1, done, n, 100.0 * int(errors) / done)
    return 100.0 * int(errors) / n, float(loss) / n


def train(cfg: TrialConfig, report: Report | None = None, state: TrainState | None = None,
          progress: Progress | None = None) -> TrainState:
    """Train (or continue training) one trial; returns the final state.

    With `state` from a checkpoint, continues from its epoch and finishes bit for
    bit as the uninterrupted run would (same device and library versions).
    A run whose states or weights stop being finite ends with status "diverged",
    keeps the metrics of its last finite epoch, and reports them once more with
    that status (so that every report but the last says "running").
    """
    device = resolve_device(cfg.device)
    if state is None:
        state = new_state(cfg, device)
    cfg = state.config
    torch_dtype = getattr(torch, cfg.dtype)
    data = load_data(cfg).to(device, torch_dtype)

    def measure_angle_grad(x: torch.Tensor, y: torch.Tensor) -> None:
        if cfg.angle_grad and "angle_grad" not in state.info:
            from cep.gdu.analysis import angle_grad  # the analysis module (autograd) is only loaded when asked for
            state.info["angle_grad"] = angle_grad(cfg, state.params, x, y)

    with torch.no_grad():
        while state.epoch < cfg.epochs and state.status == "running":
            start = time.monotonic()
            train_error, train_loss = _train_epoch(cfg, state, data, progress, measure_angle_grad)
            if not (math.isfinite(train_loss) and state.params.all_finite()):
                state.status = "diverged"
                state.info["diverged_at_epoch"] = state.epoch + 1
                if report is not None:
                    last = dict(state.history[-1]) if state.history else {"epoch": state.epoch}
                    report({**last, "status": "diverged"}, state)
                break
            test_error, test_loss = evaluate(cfg, state.params, data.x_test, data.y_test)
            seconds = time.monotonic() - start
            state.elapsed += seconds
            state.epoch += 1
            if state.epoch == cfg.epochs:
                state.status = "finished"
            metrics = dict(epoch=state.epoch, train_error=train_error, test_error=test_error,
                           train_loss=train_loss, test_loss=test_loss, epoch_seconds=seconds,
                           elapsed_seconds=state.elapsed, status=state.status)
            state.history.append(metrics)
            if report is not None:
                report(metrics, state)
    return state
