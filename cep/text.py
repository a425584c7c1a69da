"""Aligned plain-text and Markdown tables and durations: the one table printer and duration format of the reports."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence

# What makes Markdown render text as something else (table.md shows text from sweep.json and trial folders):
# raw HTML and entities (< &), code, emphasis and strike-through (` * ~; _ at a word's edge), table cells (|),
# links and link definitions (a ] followed by ( [ or :), headings and quotes at a line's start (# >).
_MD_SIGNIFICANT = re.compile(r"[\\`*~|]|(?<!\w)_|_(?!\w)|\](?=[(\[:])|^[ \t]*[#>]", re.MULTILINE)


def printable(text: object, keep: str = "\n") -> str:
    """`text` with control and bidirectional-override characters shown as escapes (\\x1b, \\u202e): an
    escape sequence from a sweep or trial file cannot move the cursor, recolour or rewrite the terminal, and
    no text can hide in a Markdown file. Characters in `keep` (a newline) stay."""
    return "".join(ch if ch in keep or not _hidden(ch) else ascii(ch)[1:-1] for ch in str(text))


def _hidden(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") or ch in "\x85"


def md_escape(text: object) -> str:
    """Text for Markdown that renders as itself: control characters shown as escapes, < and & as HTML
    entities, Markdown's significant characters backslash-escaped (readable characters such as [1], a_b or
    -> are left as they are: they render as themselves)."""
    text = printable(text, keep="\n\t").replace("&", "&amp;").replace("<", "&lt;")
    return _MD_SIGNIFICANT.sub(lambda m: m.group()[:-1] + "\\" + m.group()[-1], text)


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "",
               right: Sequence[int] = ()) -> str:
    """A plain aligned table for the terminal: columns two spaces apart, a rule under the header.

    `right`: indices of right-aligned columns (numbers); `indent` starts every line.
    """
    header, rows = [printable(x, "") for x in header], [[printable(x, "") for x in r] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return indent + "  ".join(str(x).rjust(w) if i in right else str(x).ljust(w)
                                  for i, (x, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return "\n".join([line(header), indent + "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    esc = [[md_escape(c).replace("\n", " ") for c in r] for r in [header, *rows]]
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in esc[1:]])




def duration(seconds: float, style: str = "short") -> str:
    """A human duration, the one formatter of the reports: "short" 45s, 3m05s, 1h02m; "minutes" 63m05s;
    "clock" 1:03:05 (both truncated to the second); "words" 45.0 s, 3 min 05 s, 1 h 02 min (— if unknown)."""
    if style == "clock":
        s = int(seconds)
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    if style == "minutes":
        m, s = divmod(int(seconds), 60)
        return f"{m}m{s:02d}s"
    if style == "words":
        return _words(seconds)
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _words(s: object) -> str:
    if not isinstance(s, (int, float)) or isinstance(s, bool) or not math.isfinite(s):
        return "—"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"
