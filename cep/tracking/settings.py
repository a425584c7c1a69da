"""The `tracking` section of a sweep file and the tracking options of `cep train` / `cep-sweep`: one
validated, plain-dict-friendly Tracking value, with every problem as one line naming its YAML path.

    tracking: {tensorboard: true, mlflow: {uri: sqlite:///mlflow.db, experiment: fig4},
               wandb: {project: cep, mode: offline}}
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cep.safe_files import find_link

KEYS = {"tensorboard": "true or false", "mlflow": "{uri: URI, experiment: NAME}",
        "wandb": "{project: NAME, mode: offline|online, entity: NAME, dir: PATH}", "timeout": "seconds"}
MLFLOW_KEYS = ("uri", "experiment")
WANDB_KEYS = ("project", "mode", "entity", "dir")
WANDB_MODES = ("offline", "online")
DEFAULT_TIMEOUT_S = 10.0  # the longest a tracker may hold up a round (one warning, the next round catches up)
EXTRAS = {"mlflow": "mlflow", "wandb": "wandb", "tensorboard": "tensorboardX"}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


@dataclass(frozen=True)
class Tracking:
    """Which trackers mirror the trials; None/False: off. The MLflow experiment defaults to the sweep's name."""

    tensorboard: bool = True
    mlflow_uri: str | None = None
    mlflow_experiment: str | None = None
    wandb_project: str | None = None
    wandb_mode: str = "offline"
    wandb_entity: str | None = None
    wandb_dir: str | None = None
    timeout: float = DEFAULT_TIMEOUT_S

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Tracking:
        return cls(**dict(d)) if d else cls()

    @property
    def names(self) -> list[str]:
        """The trackers on, in the order they are fed."""
        return [n for n, on in (("tensorboard", self.tensorboard), ("mlflow", self.mlflow_uri),
                                ("wandb", self.wandb_project)) if on]


_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")


def redact(text: str, uri: str | None = None) -> str:
    """`text` (a URI, or a message that may quote one) with every user:password@ (or token@) part shown as
    ***@, and the credentials of `uri` wherever else they appear: what messages and files may show."""
    text = _USERINFO.sub(r"\1***@", text)
    try:
        netloc = urlsplit(uri).netloc if uri else ""
    except ValueError:
        netloc = ""
    for secret in netloc.rpartition("@")[0].split(":") if "@" in netloc else ():
        if len(secret) >= 3:
            text = text.replace(secret, "***")
    return text


def parse_tracking(section: Any, problems: list[str], path: str = "tracking") -> Tracking:
    """The `tracking` section (None: the default, TensorBoard only); problems appended as `path.key: ...`."""
    if section is None:
        return Tracking()
    if not isinstance(section, Mapping):
        problems.append(f"{path}: expected a mapping like {{tensorboard: true, mlflow: {{uri: sqlite:///mlflow.db}}}}, "
                        f"got {section!r}")
        return Tracking()
    out: dict[str, Any] = {}
    for key, value in section.items():
        where = f"{path}.{key}"
        if key not in KEYS:
            problems.append(f"{where}: unknown tracker; known keys: {', '.join(KEYS)}")
        elif key == "tensorboard":
            if not isinstance(value, bool):
                problems.append(f"{where}: got {value!r}; true or false")
            else:
                out["tensorboard"] = value
        elif key == "timeout":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 600:
                problems.append(f"{where}: got {value!r}; seconds a tracker may take per round, e.g. 10 (at most 600)")
            else:
                out["timeout"] = float(value)
        elif value is not None and value is not False:
            out.update(_tracker(key, value, where, problems))
    return Tracking(**out)


def _tracker(key: str, value: Any, where: str, problems: list[str]) -> dict[str, Any]:
    """The mlflow or wandb subsection as Tracking fields (a bare string: the URI or the project)."""
    allowed = MLFLOW_KEYS if key == "mlflow" else WANDB_KEYS
    if isinstance(value, str):
        value = {allowed[0]: value}
    if not isinstance(value, Mapping):
        problems.append(f"{where}: expected {KEYS[key]}, got {value!r}")
        return {}
    out: dict[str, Any] = {}
    for k, v in value.items():
        if k not in allowed:
            problems.append(f"{where}.{k}: unknown key; known: {', '.join(allowed)}")
        elif k == "mode" and v not in WANDB_MODES:
            problems.append(f"{where}.mode: got {v!r}; offline (files only, `wandb sync` later) or online")
        elif k in ("experiment", "project", "entity") and not (isinstance(v, str) and _NAME_RE.match(v)):
            problems.append(f"{where}.{k}: got {v!r}; letters, digits and . _ + -, at most 128 characters")
        elif not isinstance(v, str) or not v.strip():
            problems.append(f"{where}.{k}: got {v!r}; a non-empty string")
        else:
            out[f"{key}_{k}"] = v
    if f"{key}_{allowed[0]}" not in out and not any(p.startswith(f"{where}.{allowed[0]}") for p in problems):
        problems.append(f"{where}.{allowed[0]}: missing; e.g. {where}: {{{allowed[0]}: "
                        f"{'sqlite:///mlflow.db' if key == 'mlflow' else 'cep'}}}")
    return out


def library_problems(tracking: Tracking, path: str = "tracking") -> list[str]:
    """One line per tracker on whose library is not installed, naming the extra that brings it."""
    return [f"{path}.{name}: the {EXTRAS[name]} library is not installed; pip install -e \".[{name}]\""
            for name in tracking.names if importlib.util.find_spec(EXTRAS[name]) is None]


def local_path(uri: str) -> Path | None:
    """The local file a tracker URI names (sqlite:///db, file:///dir, a plain path), else None (a server)."""
    parts = urlsplit(uri)
    if parts.scheme == "sqlite":
        return Path(uri.split(":///", 1)[1]) if ":///" in uri else None
    if parts.scheme == "file":
        return Path(parts.path)
    return Path(uri) if parts.scheme == "" else None


def uri_problems(tracking: Tracking, exp_dir: str | Path, path: str = "tracking") -> list[str]:
    """A tracker file that lies inside the experiment folder through a symbolic link is refused, as every link is."""
    exp = Path(exp_dir).expanduser().absolute()
    problems = []
    for key, uri in (("mlflow.uri", tracking.mlflow_uri), ("wandb.dir", tracking.wandb_dir)):
        target = local_path(uri) if uri else None
        if target is None:
            continue
        target = target.expanduser().absolute()
        try:
            inside = target.resolve().is_relative_to(exp.resolve()) or target.is_relative_to(exp)
        except OSError:
            inside = False
        link = find_link(exp, target) if target.is_relative_to(exp) else (target if inside else None)
        if inside and link is not None:
            problems.append(f"{path}.{key}: {redact(uri)} reaches into the experiment folder {exp} through the "
                            f"symbolic link {link}; cep writes nothing through links: give a real path")
    return problems
