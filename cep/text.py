"""Aligned plain-text and Markdown tables: the one table printer of the terminal reports and summaries."""

from __future__ import annotations

from collections.abc import Sequence


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "",
               right: Sequence[int] = ()) -> str:
    """A plain aligned table for the terminal: columns two spaces apart, a rule under the header.

    `right`: indices of right-aligned columns (numbers); `indent` starts every line.
    """
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return indent + "  ".join(str(x).rjust(w) if i in right else str(x).ljust(w)
                                  for i, (x, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return "\n".join([line(header), indent + "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    esc = [[str(c).replace("|", "\\|") for c in r] for r in [header, *rows]]
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in esc[1:]])




def duration(seconds: float) -> str:
    """A short human duration: 45s, 3m05s, 1h02m."""
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
