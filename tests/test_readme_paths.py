"""Every path and link the READMEs name resolves inside the repository (the README is a contract).

A reader who clones the repository must find each file the documentation sends them to: a Markdown link
`[text](target)` (not a URL) and every repository path in backticks or in a code block (a word with a `/`
that names a source or document file, or begins with one of the repository's own top-level folders).
Paths the commands create (results/, runs/, trials/<id>/, ...) are not files of the repository.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ["README.md", "cluster/README.md"]
FILE_SUFFIXES = (".py", ".md", ".yaml", ".yml", ".json", ".toml", ".sh", ".txt", ".cfg")
# folders the commands write (or the user supplies): named in the text, never part of the repository
CREATED = ("results/", "runs/", "trials/", "summary/", "gdu/", "tune/", "data/", "DATA_DIR/", "pack/",
           "DIR/", "/")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
PATHLIKE = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.*-]+)*/?$")


def _words(text: str) -> list[str]:
    """The words of backticked spans and code blocks (where the READMEs name files)."""
    blocks = re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S)
    spans = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return [w.strip("'\",;:()[]") for chunk in blocks + spans for w in chunk.split()]


def named_paths(text: str) -> set[str]:
    """Repository paths a document names: its relative links, and the path-like words of its code."""
    top = {p.name for p in ROOT.iterdir() if not p.name.startswith(".")}
    found = {t.split("#")[0] for t in LINK.findall(text) if not re.match(r"^[a-z]+:", t) and not t.startswith("#")}
    for w in _words(text):
        if "/" not in w or "<" in w or "://" in w or not PATHLIKE.match(w) or w.startswith(CREATED):
            continue
        if w.split("/")[0] in top or w.rstrip("/").endswith(FILE_SUFFIXES):
            found.add(w)
    return {p for p in found if p}


def resolves(document: Path, path: str) -> bool:
    """The path exists inside the repository, read from the document's folder or (for code) the root."""
    for base in (document.parent, ROOT):
        for hit in (base.glob(path) if "*" in path else [base / path]):
            target = hit.resolve()
            if target.exists() and (target == ROOT or ROOT in target.parents):
                return True
    return False


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_named_path_resolves_inside_the_repository(document: str) -> None:
    doc = ROOT / document
    paths = named_paths(doc.read_text(encoding="utf-8"))
    assert len(paths) >= 5, f"{document}: found only {sorted(paths)}; is the path finder broken?"
    missing = sorted(p for p in paths if not resolves(doc, p))
    assert not missing, f"{document} names paths that are not in the repository: {missing}"


def test_the_finder_sees_a_missing_path_and_a_broken_link() -> None:
    """The check itself: a spec outside the repository and a dead link are both reported."""
    text = "The contract is `shared/spec/algorithm.md`; see [the recipes](cluster/NOPE.md) and `cep/cli.py`."
    paths = named_paths(text)
    assert paths == {"shared/spec/algorithm.md", "cluster/NOPE.md", "cep/cli.py"}
    assert [p for p in sorted(paths) if not resolves(ROOT / "README.md", p)] == ["cluster/NOPE.md",
                                                                                  "shared/spec/algorithm.md"]


def test_the_algorithm_contract_is_in_the_repository() -> None:
    """README sends readers to the algorithm the code follows, and that file is versioned with the code."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/algorithm.md" in named_paths(readme)
    spec = (ROOT / "docs/algorithm.md").read_text(encoding="utf-8")
    for section in ("## 2. The free phase", "## 4. Weight updates", "## 6. Gradient-descending updates",
                    "## 7. The published experiments"):
        assert section in spec
