"""The paper's numbers (cep/published.json) and which table rows they belong to."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cep.aggregate.stats import finite, fmt_value, hidden_layers
from cep.config import LATER_FIELDS, RESULT_FIELDS, rule_label

PUBLISHED_FILE = Path(__file__).parents[1] / "published.json"


# ---------------------------------------------------------- published rows
@dataclass(frozen=True)
class Match:
    """The paper's number for a row, or why there is none."""

    value: Any  # a float (test error) or a [low, high] pair (angle-grad); None when no match
    name: str | None  # the published row compared with
    why: str  # empty when matched


@functools.cache
def load_published() -> dict[str, Any]:
    """The paper's numbers with their source (cep/published.json); read once."""
    return json.loads(PUBLISHED_FILE.read_text())


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if finite(a) and finite(b) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def match_published(config: dict[str, Any], key: str, published: dict[str, Any] | None = None,
                    shown: Iterable[str] = ()) -> Match:
    """The published `key` (test_error or angle_grad) for a configuration, matched on every result field
    (cep.config.RESULT_FIELDS, the dataset included) that the paper states, not on the name. `shown`:
    fields whose value the row's label already shows; `why` names them without it, so that rows differing
    only there share a note."""
    pub = published or load_published()
    ignore = set(pub.get("angle_grad_ignores", {})) if key == "angle_grad" else set()

    def wanted(row: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in {**pub["common"], **row["config"]}.items()
                if k in RESULT_FIELDS and k not in ignore}

    def differ(row: dict[str, Any]) -> list[str]:
        # a field added later (LATER_FIELDS) missing from an older sweep.json has its default
        return [k for k, v in wanted(row).items() if not _same(config.get(k, LATER_FIELDS.get(k)), v)]

    family = [r for r in pub["rows"] if (r["config"]["rule"], r["config"]["continual"], len(r["config"]["size_tab"]))
              == (config.get("rule"), bool(config.get("continual")), len(config.get("size_tab") or []))]
    for row in family:
        if not differ(row):
            return Match(row[key], row["name"], "")
    if not family:
        depth = hidden_layers(config)
        rule = rule_label(config.get("rule", "?"), config.get("continual"))
        return Match(None, None, f"the paper has no {rule} row with {depth} hidden layer{'s' if depth != 1 else ''}")
    row, shown = family[0], set(shown)

    def value(v: Any) -> str:  # null in the sample-count fields means every image
        return "all" if v is None else fmt_value(v)

    why = ", ".join(f"{k}{'' if k in shown else ' ' + (value(config[k]) if k in config else 'unset')}"
                    f" (paper {value(wanted(row)[k])})" for k in differ(row))
    return Match(None, row["name"], f"differs from the paper's {row['name']} in {why}")


def fmt_published_angle(value: Any) -> str:
    if not value:
        return "—"
    lo, hi = value
    return f"≈{lo:g}" if lo == hi else f"{lo:g}–{hi:g}"


