"""The trainer's state: how a run starts (new_state), and its checkpoint, to continue bit for bit, read back safely."""

from __future__ import annotations

import re
import secrets
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch

from cep.config import MAX_SYNAPSES, TrialConfig
from cep.errors import UsageProblem
from cep.model import Params, init_params, weight_angles
from cep.reading import MB, ReadRefused, open_limited
from cep.safe_files import atomic_path

STATE_STATUSES = ("running", "finished", "diverged", "collapsed")  # where the trainer stands; all but running end it


@dataclass
class TrainState:
    """Everything a run needs to continue exactly where it stopped."""

    config: TrialConfig  # resolved: the seed is never None here
    params: Params
    generator: torch.Generator  # CPU; draws the data order and the randbeta signs
    epoch: int = 0  # epochs completed
    history: list[dict[str, Any]] = field(default_factory=list)
    status: str = "running"  # running | finished | diverged | collapsed (stop_on_collapse)
    info: dict[str, Any] = field(default_factory=dict)  # seed, measured angles, angle_grad, collapsed, ...
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
        if state.status not in STATE_STATUSES or state.epoch < 0:
            raise ValueError(f"inconsistent state (status {state.status!r}, epoch {state.epoch})")
        return state


# the largest trainer state: forward and feedback weights of the largest net in float64, plus a margin for
# biases, the generator's state and the history of metrics
CHECKPOINT_BYTES = 2 * MAX_SYNAPSES * 8 + 64 * MB


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
        f = open_limited(path, CHECKPOINT_BYTES, "checkpoint")  # a device or FIFO is refused unread
    except ReadRefused as e:
        raise CheckpointError(str(e)) from None
    with f:
        return _load_checkpoint(f, path, device)


def _load_checkpoint(f: BinaryIO, path: str | Path, device: torch.device | str) -> TrainState:
    """The state in an open checkpoint file (see load_state)."""
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols: the error below says more
            warnings.simplefilter("ignore")
            data = torch.load(f, map_location="cpu", weights_only=True)
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
