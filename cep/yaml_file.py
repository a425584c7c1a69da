"""Reading a YAML file that a user gives us: the safe loader, a repeated key refused, one-line errors.

Also bounded: a file is at most MAX_BYTES, UTF-8 text, and its aliases may not expand it past
MAX_NODES values ("billion laughs": a few KB of nested aliases otherwise take gigabytes once
something walks the data) nor refer to themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cep.reading import YAML_BYTES, ReadRefused, read_bytes_limited

MAX_BYTES = YAML_BYTES
MAX_NODES = 100_000  # scalars, lists and mappings once every alias is expanded
MERGE_TAG, BOOL_TAG, STR_TAG = "tag:yaml.org,2002:merge", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:str"
MAX_DEPTH = 64  # nested lists and mappings (a sweep file needs 4); deeper would overflow Python's stack later


class YAMLFileError(ValueError):
    """The file cannot be read as YAML: one line per problem, each naming the file."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class _Loader(yaml.SafeLoader):
    """Safe YAML that refuses a key repeated in one mapping (PyYAML would keep the last silently)."""

    problems: list[str]

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG:  # `<<: *defaults`: merged by PyYAML, its keys overridable
                continue
            if key_node.tag == BOOL_TAG and isinstance(key_node, yaml.ScalarNode) and key_node.style is None:
                key_node.tag = STR_TAG  # a key `on:` or `yes:` is the word written, not True
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                self.problems.append(f"line {line}: key {key!r} repeats the one on line {seen[key]}; keep one")
            else:
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path, what: str = "file") -> Any:
    """The file's content; an unreadable file and YAML syntax errors become a YAMLFileError."""
    try:
        text = read_bytes_limited(path, MAX_BYTES, what).decode("utf-8")
    except ReadRefused as e:
        raise YAMLFileError([str(e)]) from None
    except UnicodeDecodeError as e:
        raise YAMLFileError([f"{path}: not a text file (byte {e.start} is not UTF-8); give the YAML {what}"]
                            ) from None
    loader: _Loader | None = None
    try:
        loader = _Loader(text)  # its reader already refuses control characters
        loader.problems = []
        node = loader.get_single_node()
        problem = _expansion_problem(node)
        if problem:
            raise YAMLFileError([f"{path}: {problem}"])
        data = loader.construct_document(node) if node is not None else None
    except RecursionError:  # the composer recurses once per level, before any check of ours can run
        raise YAMLFileError([f"{path}: nested too deeply (more than {MAX_DEPTH} levels); a {what} is a few "
                             "levels deep: fix the brackets or indentation"]) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        why = " ".join(str(getattr(e, "problem", None) or getattr(e, "reason", None) or e).split())  # one line
        if getattr(e, "character", None) is not None:  # a reader error: the character is the news
            why = f"character {e.character:#x} at position {e.position} ({why})"
        raise YAMLFileError([f"{path}: {where}invalid YAML ({why}); fix the syntax"]) from None
    finally:
        if loader is not None:
            loader.dispose()
    if loader.problems:
        raise YAMLFileError([f"{path}: {p}" for p in loader.problems])
    return data




def _expansion_problem(root: yaml.Node | None) -> str:
    """Why the document's aliases make it too big or circular ("" when fine), without expanding it."""
    if root is None:
        return ""
    sizes: dict[int, int] = {}  # id(node) -> values below it, aliases expanded
    open_nodes: set[int] = set()

    def size(node: yaml.Node, depth: int = 0) -> int:
        if depth > MAX_DEPTH:
            raise _TooDeep
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise _Circular
        open_nodes.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(n, depth + 1) for n in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k, depth + 1) + size(v, depth + 1) for k, v in node.value)
        open_nodes.discard(key)
        sizes[key] = min(total, MAX_NODES + 1)  # saturate: a huge count needs no exact value
        return sizes[key]

    try:
        n = size(root)
    except _Circular:
        return "an alias refers to the value that contains it (a circular structure); write the values out instead"
    except (RecursionError, _TooDeep):
        return f"nested too deeply (more than {MAX_DEPTH} levels); fix the brackets or indentation"
    if len(sizes) > MAX_NODES:  # as written, aliases aside
        return f"more than {MAX_NODES:,} values; a sweep file or config holds a few hundred: is it the right file?"
    if n > MAX_NODES:
        return f"its aliases (*name) expand it to more than {MAX_NODES:,} values; write the values out instead"
    return ""


class _Circular(Exception):
    """An alias inside the value it names."""


class _TooDeep(Exception):
    """More than MAX_DEPTH nested lists and mappings."""
