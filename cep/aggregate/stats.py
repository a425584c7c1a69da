"""Numbers of the aggregator: finite-or-NaN reading, mean ± std over seeds, short value labels."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


# ----------------------------------------------------------------- numbers
def finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def as_float(x: Any) -> float:
    """A number from JSON/CSV, NaN for anything missing or not numeric."""
    return float(x) if finite(x) else math.nan


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (n - 1) of the finite values; std is NaN below two values."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Stat:
        vals = [float(v) for v in values if finite(v)]
        if not vals:
            return cls(math.nan, math.nan, 0)
        return cls(math.fsum(vals) / len(vals), statistics.stdev(vals) if len(vals) > 1 else math.nan, len(vals))

    def fmt(self, digits: int = 2) -> str:
        """'2.31 ± 0.05'; one value alone has no ± part; none gives '—'."""
        if self.n == 0:
            return "—"
        if self.n == 1:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


def seeds_text(ns: Iterable[int]) -> str:
    """'3 seeds per point', '1–3 seeds per point' (partial sweeps): what a figure averages, for its title."""
    ns = [n for n in ns if n]
    if not ns:
        return "no finished seeds"
    lo, hi = min(ns), max(ns)
    return f"{lo if lo == hi else f'{lo}–{hi}'} seed{'s' if hi > 1 else ''} per point"


def fmt_value(v: Any) -> str:
    """Short label text of a trial field value (45.0 -> '45', [10, 512, 784] -> '10-512-784')."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "-".join(fmt_value(x) for x in v)
    return str(v)


def hidden_layers(config: dict[str, Any]) -> int | None:
    sizes = config.get("size_tab")
    return len(sizes) - 2 if isinstance(sizes, list) and len(sizes) >= 2 else None


