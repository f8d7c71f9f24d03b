"""YAML loading that remembers where every value came from, so errors can name the line."""

from __future__ import annotations

from typing import Any

import yaml

Path = tuple[str | int, ...]


class Located:
    """A loaded YAML document plus the line (1-based) of every key/item path."""

    def __init__(self, data: Any, lines: dict[Path, int]) -> None:
        self.data = data
        self.lines = lines

    def line_of(self, path: Path) -> int:
        """The line of ``path`` or of its closest ancestor."""
        p = tuple(path)
        while p and p not in self.lines:
            p = p[:-1]
        return self.lines.get(p, 1)


def load_located(text: str, source: str) -> Located:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        raise YamlError(source, line, f"invalid YAML: {e.problem or e.context}") from None
    lines: dict[Path, int] = {}
    if node is None:
        return Located(None, lines)
    data = _convert(node, (), lines, source)
    return Located(data, lines)


def _convert(node: yaml.Node, path: Path, lines: dict[Path, int], source: str) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict = {}
        for k, v in node.value:
            key = yaml.SafeLoader(" ").construct_object(k) if isinstance(k, yaml.ScalarNode) else None
            if not isinstance(key, str):
                raise YamlError(source, k.start_mark.line + 1, "keys must be plain strings")
            if key in out:
                raise YamlError(source, k.start_mark.line + 1, f"duplicate key {key!r}")
            lines[(*path, key)] = k.start_mark.line + 1
            out[key] = _convert(v, (*path, key), lines, source)
            lines[(*path, key)] = k.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(v, (*path, i), lines, source) for i, v in enumerate(node.value)]
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    except yaml.constructor.ConstructorError as e:
        raise YamlError(source, node.start_mark.line + 1, str(e.problem)) from None


class YamlError(Exception):
    def __init__(self, source: str, line: int, message: str) -> None:
        super().__init__(f"{source}:{line}: {message}")
        self.source, self.line, self.message = source, line, message
