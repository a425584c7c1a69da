"""Reading a YAML file that a user gives us: the safe loader, a repeated key refused, one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


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
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                self.problems.append(f"line {line}: key {key!r} repeats the one on line {seen[key]}; keep one")
            else:
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path, what: str = "file") -> Any:
    """The file's content; an unreadable file and YAML syntax errors become a YAMLFileError."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise YAMLFileError([f"{path}: cannot read the {what} ({e.strerror or e})"]) from None
    loader = _Loader(text)
    loader.problems = []
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise YAMLFileError([f"{path}: {where}invalid YAML ({getattr(e, 'problem', None) or e}); "
                          "fix the syntax"]) from None
    finally:
        loader.dispose()
    if loader.problems:
        raise YAMLFileError([f"{path}: {p}" for p in loader.problems])
    return data


